"""Speed of the twins side by side, in one run (``zoo bench``).

For each model, both twins get the same weights (the PyTorch twin's random initialisation, converted by the
zoo's converter) and the same input. The frameworks' calls alternate (pt, ms-graph, ms-pynative, pt, ...)
so that a change in machine load hits all of them; times are medians over ``repeats`` rounds after
``warmup`` rounds, and the MindSpore/PyTorch ratio is the median of the per-round ratios of throughput
(PyTorch time / MindSpore time: above 1, MindSpore is faster). Only ratios measured in one run mean much on
a shared machine.

- ``infer``: eval mode, no autograd (PyTorch ``torch.no_grad``; MindSpore ``set_train(False)``), the output
  copied to numpy (MindSpore runs asynchronously).
- ``train``: one optimizer step exactly as the trainers run it (``zoo.train.pt.PyTorchBackend.train_step`` and
  ``zoo.train.ms.MindSporeBackend.train_step``: mindcv's optimizer, MindSpore's ``amp.build_train_network``
  step, compiled in GRAPH mode), cross-entropy, SGD with momentum 0.9, weight decay 1e-4.

The first call of each MindSpore GRAPH callable compiles it; its time is reported as ``compile_s`` (it
includes that one step). img/s is always batch / median step time. GMACs are counted on the PyTorch twin
(``zoo.bench.flops``); achieved GFLOP/s = 2 x GMACs x batch / step time for inference and 3 times that for a
training step (backward ~ 2 x forward), compared with the float32 matmul peak of this machine measured with
the same threads in the same rounds (``matmul_call``: the rate under the same load).
"""
from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from zoo.errors import ZooError

FRAMEWORKS = ("pt", "ms-graph", "ms-pynative")
MODES = ("infer", "train")
_MS_MODE = {"ms-graph": 0, "ms-pynative": 1}
_threads = {"ms": None}


class BenchError(ZooError):
    """A benchmark that cannot run as asked (the message says why)."""


# --- threads and the machine -------------------------------------------------------------------------

def set_threads(n: int) -> int:
    """The same number of CPU threads for both frameworks. MindSpore's can be set once per process
    (its kernels default to 25 threads whatever the machine has)."""
    import mindspore as ms
    import torch

    torch.set_num_threads(n)
    if _threads["ms"] is None:
        try:
            ms.device_context.cpu.op_tuning.threads_num(n)
            _threads["ms"] = n
        except RuntimeError:  # set before in this process, by someone else: unknown
            _threads["ms"] = -1
    if _threads["ms"] != n:
        raise BenchError(f"--threads {n}: MindSpore's CPU threads were already set in this process "
                         f"({_threads['ms'] if _threads['ms'] > 0 else 'by another caller'}); they can be set once "
                         "per process: run zoo bench in a fresh process")
    return n


PEAK_N = 1024  # the matmul that measures this machine's float32 rate: PEAK_N x PEAK_N sgemm


def matmul_call():
    """A float32 matmul (torch sgemm) timed with the models' calls, in the same rounds: the machine's rate
    under the same load; its GFLOP/s is ``2 * PEAK_N ** 3 / time / 1e9``."""
    import torch

    a, b = torch.randn(PEAK_N, PEAK_N), torch.randn(PEAK_N, PEAK_N)
    return lambda: torch.mm(a, b)


def machine() -> dict:
    """CPU model, cores, memory and the versions that matter."""
    import platform

    import mindspore as ms
    import torch

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 2 ** 20
    except (OSError, StopIteration, ValueError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    env = {k: os.environ[k] for k in THREAD_ENV if k in os.environ}
    return dict(cpu=cpu, cores=os.cpu_count(), mem_gib=mem, gpu=gpu, python=platform.python_version(),
                mindspore=ms.__version__, torch=torch.__version__, numpy=np.__version__, env=env,
                load=os.getloadavg()[0])


# environment variables that change how the frameworks' threads behave (recorded with the results)
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")


# --- paired timing ---------------------------------------------------------------------------------

def paired_times(calls: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Dict[str, List[float]]:
    """Time the callables alternately (a, b, c, a, b, c, ...) so that a change in machine load hits them all;
    ``warmup`` untimed rounds first. Returns each callable's ``repeats`` times in seconds, round by round."""
    for _ in range(warmup):
        for f in calls.values():
            f()
    times: Dict[str, List[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return times


def pair_ratio(base: Sequence[float], other: Sequence[float]) -> float:
    """Median over rounds of base time / other time: ``other``'s throughput relative to ``base``'s."""
    return statistics.median(b / o for b, o in zip(base, other))


# --- one model -------------------------------------------------------------------------------------

def _train_config(name: str, entry, size, batch: int, amp: str, framework: str):
    from zoo.train.config import load_config

    return load_config(None, dict(model=name, framework="pt" if framework == "pt" else "ms", device_target="CPU",
                                  mode=_MS_MODE.get(framework, 0), num_classes=entry.num_classes,
                                  in_channels=size[0], image_resize=size[1], batch_size=batch, opt="momentum",
                                  momentum=0.9, weight_decay=1e-4, lr=0.01, amp_level=amp, loss="CE",
                                  val_while_train=False))


def _ms_context(framework: str):
    import mindspore as ms

    ms.set_context(mode=_MS_MODE[framework])


def _builders(name: str, entry, size, batch: int, amp: str, state, ms_state, x, y):
    """{(mode, framework): () -> callable} building each measured callable on demand."""
    import mindspore as ms
    import torch

    from zoo import create_model
    from zoo.convert import core

    xt = torch.from_numpy(x)

    def pt_infer():
        model = create_model(name, "pt")
        core.load_into_pt(model, state)
        model.eval()

        def call():
            with torch.no_grad():
                return model(xt)
        return call

    def ms_infer(fw):
        def build():
            _ms_context(fw)
            net = create_model(name, "ms")
            core.load_into_ms(net, ms_state)
            net.set_train(False)
            if amp != "O0":
                net = ms.amp.auto_mixed_precision(net, amp)
            xm = ms.Tensor(x)

            def call():
                _ms_context(fw)
                return net(xm).asnumpy()
            return call
        return build

    def train(fw):
        def build():
            from zoo.train.loop import make_backend

            cfg = _train_config(name, entry, size, batch, amp, fw)
            backend = make_backend(cfg)
            backend.cache_graphs = False  # compile_s is the compilation itself, never a cache load
            backend.build([cfg.lr] * 1000)
            if fw == "pt":
                core.load_into_pt(backend.model, state)
                backend.set_train(True)
                return lambda: backend.train_step(x, y, cfg.lr)
            core.load_into_ms(backend.net, ms_state)
            backend.set_train(True)

            def call():
                _ms_context(fw)
                return backend.train_step(x, y)
            return call
        return build

    out = {("infer", "pt"): pt_infer, ("train", "pt"): train("pt")}
    for fw in _MS_MODE:
        out[("infer", fw)] = ms_infer(fw)
        out[("train", fw)] = train(fw)
    return out


def bench_model(name: str, batch: int = 8, input_size: Optional[Sequence[int]] = None,
                modes: Sequence[str] = MODES, frameworks: Sequence[str] = ("pt", "ms-graph"), repeats: int = 10,
                warmup: int = 1, amp: str = "O0", threads: int = 2, seed: int = 0) -> List[dict]:
    """One row per framework: the model's figures and, per mode, step time, img/s, compile time, GFLOP/s."""
    import torch

    from zoo import create_model, registry
    from zoo.bench.flops import count_gmacs, count_params
    from zoo.convert import core

    entry = registry.get(name)
    size = tuple(input_size or entry.input_size)
    set_threads(threads)
    torch.manual_seed(seed)
    pt = create_model(name, "pt")
    state = core.pt_state(pt)
    ms_state = core.to_ms(state, core.spec_of(pt))
    gmacs, params = count_gmacs(pt, size), count_params(pt)
    del pt
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *size)).astype(np.float32)
    y = rng.integers(0, entry.num_classes, batch).astype(np.int32)
    builders = _builders(name, entry, size, batch, amp, state, ms_state, x, y)
    rows = {fw: dict(model=name, framework=fw, family=entry.family, img_size=size[1], threads=threads, amp=amp,
                     param_count=round(params / 1e6, 4), infer_gmacs=round(gmacs, 4)) for fw in frameworks}
    flops_per_sample = {"infer": 2 * gmacs * 1e9, "train": 6 * gmacs * 1e9}
    matmul = matmul_call()
    for mode in modes:
        calls, compile_s = {}, {}
        for fw in frameworks:
            call = builders[(mode, fw)]()
            t0 = time.perf_counter()
            call()  # GRAPH: compiles; the others: a first untimed call
            compile_s[fw] = time.perf_counter() - t0
            calls[fw] = call
        times = paired_times({**calls, "matmul": matmul}, repeats, warmup)
        peak = 2 * PEAK_N ** 3 / statistics.median(times.pop("matmul")) / 1e9
        for fw in frameworks:
            step = statistics.median(times[fw])
            r = rows[fw]
            r[f"{mode}_batch_size"] = batch
            r[f"{mode}_step_time"] = step * 1e3  # ms, as timm's CSVs
            r[f"{mode}_samples_per_sec"] = batch / step
            r[f"{mode}_compile_s"] = compile_s[fw] if fw == "ms-graph" else None
            achieved = flops_per_sample[mode] * batch / step / 1e9
            r[f"{mode}_gflops"] = achieved
            r[f"{mode}_pct_peak"] = 100 * achieved / peak
            r[f"{mode}_peak_gflops"] = peak
            r[f"{mode}_ratio_ms_pt"] = pair_ratio(times["pt"], times[fw]) if "pt" in times and fw != "pt" else None
        del calls, call
        gc.collect()
    for r in rows.values():
        r["load_avg"] = os.getloadavg()[0]
    return [rows[fw] for fw in frameworks]


def bench_model_in_child(name: str, batch: int = 8, input_size=None, modes=MODES, frameworks=("pt", "ms-graph"),
                         repeats: int = 10, warmup: int = 1, amp: str = "O0", threads: int = 2) -> List[dict]:
    """``bench_model`` in a fresh process (MindSpore keeps compiled graphs and its memory pool for the life of a
    process: a sweep in one process grows until the machine runs out of memory)."""
    spec = json.dumps(dict(name=name, batch=batch, input_size=list(input_size) if input_size else None,
                           modes=list(modes), frameworks=list(frameworks), repeats=repeats, warmup=warmup, amp=amp,
                           threads=threads))
    r = subprocess.run([sys.executable, "-m", "zoo.bench.speed", "--model", spec], capture_output=True, text=True,
                       env=_child_env())
    for line in r.stdout.splitlines():
        if line.startswith("ZOO_BENCH_ROWS "):
            return json.loads(line.split(" ", 1)[1])
    lines = [x for x in r.stderr.strip().splitlines() if "WARNING" not in x and x.strip()]
    why = lines[-1] if lines else f"the child process ended with status {r.returncode}"
    if r.returncode < 0:
        why = f"the child process was killed by signal {-r.returncode} (out of memory?)"
    raise RuntimeError(why)


def _model_main(spec: str) -> None:
    a = json.loads(spec)
    import zoo  # noqa: F401

    rows = bench_model(a["name"], a["batch"], a["input_size"], a["modes"], a["frameworks"], a["repeats"],
                       a["warmup"], a["amp"], a["threads"])
    print("ZOO_BENCH_ROWS " + json.dumps(rows), flush=True)


def _child_env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


# --- peak memory, one child process per framework ------------------------------------------------------

def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would keep the parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_main(spec: str) -> None:
    """In a child process: run one framework's modes (a compile or first call and two steps each) and print
    the process's peak RSS in MiB."""
    a = json.loads(spec)
    import zoo  # noqa: F401  (quiets MindSpore's log)
    from zoo import registry

    entry = registry.get(a["model"])
    size = tuple(a["size"])
    set_threads(a["threads"])
    import torch

    from zoo import create_model
    from zoo.convert import core

    torch.manual_seed(0)
    pt = create_model(a["model"], "pt")
    state = core.pt_state(pt)
    ms_state = core.to_ms(state, core.spec_of(pt))
    del pt
    gc.collect()
    base = _peak_rss_mib()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a["batch"], *size)).astype(np.float32)
    y = rng.integers(0, entry.num_classes, a["batch"]).astype(np.int32)
    builders = _builders(a["model"], entry, size, a["batch"], a["amp"], state, ms_state, x, y)
    for mode in a["modes"]:
        call = builders[(mode, a["framework"])]()
        for _ in range(3):
            call()
    peak = _peak_rss_mib()
    print("ZOO_BENCH_RSS " + json.dumps(dict(peak_mib=peak, before_mib=base)), flush=True)


def peak_rss(name: str, framework: str, size, batch: int, modes, amp: str, threads: int) -> Optional[float]:
    """Peak resident memory (MiB) of a fresh process that runs ``framework``'s modes on the model (it builds
    the PyTorch twin once for the weights, as the benchmark does); None if the child failed."""
    spec = json.dumps(dict(model=name, framework=framework, size=list(size), batch=batch, modes=list(modes),
                           amp=amp, threads=threads))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "zoo.bench.speed", "--peak-rss", spec],
                       capture_output=True, text=True, env=env)
    for line in r.stdout.splitlines():
        if line.startswith("ZOO_BENCH_RSS "):
            return json.loads(line.split(" ", 1)[1])["peak_mib"]
    return None


# --- time to the first step: compile cache cold and warm -------------------------------------------------

def _first_step_main(spec: str) -> None:
    """In a child process: time from its launch to the end of the first MindSpore GRAPH step (``what`` =
    train: the trainer's step; infer: a forward), with the compile cache in ``cache`` ('' = off)."""
    a = json.loads(spec)
    import zoo  # noqa: F401
    from zoo import compile_cache, registry

    entry = registry.get(a["model"])
    size = tuple(a["size"])
    # the train step takes the trainer's own cache (ZOO_COMPILE_CACHE: the root, or off); a forward, zoo's keying
    os.environ[compile_cache.ENV] = a["cache"] or "off"
    if a["cache"] and a["what"] != "train":
        compile_cache.enable(a["cache"], compile_cache.cache_key(a["model"], a["what"], (a["batch"], *size),
                                                                 a["amp"], 0))
    set_threads(a["threads"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a["batch"], *size)).astype(np.float32)
    y = rng.integers(0, entry.num_classes, a["batch"]).astype(np.int32)
    import mindspore as ms

    from zoo import create_model

    ms.set_context(mode=0)
    t_build = time.perf_counter()
    if a["what"] == "train":
        from zoo.train.loop import make_backend

        cfg = _train_config(a["model"], entry, size, a["batch"], a["amp"], "ms-graph")
        cfg.ckpt_save_dir = a["cache"] or cfg.ckpt_save_dir  # (the cache root comes from ZOO_COMPILE_CACHE)
        backend = make_backend(cfg)
        backend.build([cfg.lr] * 10)
        backend.set_train(True)

        def call():
            return backend.train_step(x, y)
    else:
        net = create_model(a["model"], "ms")
        net.set_train(False)
        xm = ms.Tensor(x)

        def call():
            return net(xm).asnumpy()
    filled = bool(a["cache"]) and compile_cache.is_warm(os.environ.get(compile_cache.PATH, ""))
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    launched = time.time() - a["launched"]  # from the parent's launch of this process: imports included
    call()
    t2 = time.perf_counter()
    print("ZOO_BENCH_FIRST " + json.dumps(dict(to_first_step=launched, first_call=t1 - t0, step=t2 - t1,
                                                build=t0 - t_build, cache_was_filled=filled)), flush=True)


def time_to_first_step(name: str, cache_root: str, what: str = "train", batch: int = 8, input_size=None,
                       amp: str = "O0", threads: int = 2) -> dict:
    """Cold and warm time to the first GRAPH step, each in a fresh process: without the cache, with an empty
    cache folder (cold: compiles and saves) and again with the same folder (warm: loads)."""
    from zoo import registry

    size = tuple(input_size or registry.get(name).input_size)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = dict(model=name, what=what, batch=batch, img_size=size[1])
    for label, cache in (("no_cache", ""), ("cold", cache_root), ("warm", cache_root)):
        spec = json.dumps(dict(model=name, what=what, size=list(size), batch=batch, amp=amp, threads=threads,
                               cache=cache, launched=time.time()))
        # a module, not `python -c`: MindSpore's cache hashes the main script (sys.argv[0]) with the graph's sources
        r = subprocess.run([sys.executable, "-m", "zoo.bench.speed", "--first-step", spec],
                           capture_output=True, text=True, env=env)
        got = [json.loads(line.split(" ", 1)[1]) for line in r.stdout.splitlines()
               if line.startswith("ZOO_BENCH_FIRST ")]
        if not got:
            tail = (r.stderr.strip().splitlines() or ["?"])[-1]
            raise BenchError(f"{name}: the {label} time-to-first-step child failed: {tail[:300]}")
        out.update({f"{label}_{k}": v for k, v in got[0].items()})
    return out


if __name__ == "__main__":  # the child processes of peak_rss and time_to_first_step
    {"--peak-rss": _child_main, "--first-step": _first_step_main, "--model": _model_main}[sys.argv[1]](sys.argv[2])
    sys.stdout.flush()
    os._exit(0)
