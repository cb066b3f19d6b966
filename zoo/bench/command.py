"""``zoo bench`` (also ``python tools/bench.py``): the twins' speed side by side, in one run.

    zoo bench triplet_resnet18 van_b0 --batch 8 --threads 2 --repeats 10
    zoo bench --family halonet --modes infer --csv bench.csv --plot bench.png
    zoo bench --all --modes infer,train --repeats 3 --csv bench.csv --plot bench.png --markdown docs/benchmarks.md
    zoo bench triplet_resnet18_cifar --compile-cache
    zoo bench --layer halo_attn --repeats 20

See ``zoo.bench.speed`` for the method and docs/benchmarks.md for the results.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile

from zoo.errors import ZooError

DESCRIPTION = (
    "Measure the MindSpore twins against the PyTorch twins on this machine, in one run: both get the same weights "
    "(the PyTorch initialisation through the zoo's converter) and the same input; the frameworks' calls alternate "
    "(PyTorch, MindSpore, PyTorch, ...) so that machine load hits both; times are medians over --repeats rounds after "
    "a warm-up round, and MS/PT is the median of the per-round throughput ratios (above 1: MindSpore faster). "
    "infer: eval mode, no autograd; train: one optimizer step as the trainers run it (MindSpore: the trainer's "
    "compiled GRAPH step), cross-entropy, SGD momentum. Reported per model and framework: img/s (batch / median "
    "step time), step time, GRAPH compile time (first call), GMACs, parameters, achieved GFLOP/s and its share of "
    "this machine's float32 matmul rate measured in the same run, and with --memory the peak RSS of a child process "
    "per framework. Both frameworks use --threads CPU threads. A progress line per model goes to stderr.")


def _csv_list(allowed):
    def parse(s):
        items = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{s!r}: use a comma-separated list of {', '.join(allowed)}")
        return list(dict.fromkeys(items))
    return parse


def add_parser(sub) -> None:
    from zoo.bench.layers import LAYERS
    from zoo.bench.speed import FRAMEWORKS, MODES
    from zoo.cli_common import parse_size as _parse_size, positive_int as _positive_int

    s = sub.add_parser("bench", help="measure the speed of both twins side by side (img/s, MS/PT ratio, compile)",
                       description=DESCRIPTION, epilog="Exit status: 0 done, 1 a model failed to run (the others are "
                       "reported), 2 a usage error. See docs/benchmarks.md.")
    s.add_argument("models", nargs="*", help="registered model names (see `zoo list`)")
    s.add_argument("--all", action="store_true", help="every registered model")
    s.add_argument("--family", help="every model of one family (e.g. triplet)")
    s.add_argument("--layer", choices=LAYERS, help="a layer-level benchmark instead of models: halo_attn (the halo "
                   "layers of halonet50ts/halonet26t, forward and forward+backward, MindSpore GRAPH and PYNATIVE)")
    s.add_argument("--batch", type=_positive_int, default=8, help="batch size (default 8)")
    s.add_argument("--input-size", type=_parse_size, help="e.g. 224 or 3x224x224 (default: each model's own)")
    s.add_argument("--modes", type=_csv_list(MODES), default=list(MODES), help="infer, train or both (default)")
    s.add_argument("--frameworks", type=_csv_list(FRAMEWORKS), default=["pt", "ms-graph"],
                   help="pt, ms-graph, ms-pynative (default pt,ms-graph); the ratio needs pt")
    s.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for each framework (default 2)")
    s.add_argument("--repeats", type=_positive_int, default=10, help="timed rounds (default 10)")
    s.add_argument("--warmup", type=int, default=1, help="untimed rounds after the first call (default 1)")
    s.add_argument("--amp", choices=("O0", "O2"), default="O0", help="O0 float32 (default); O2: MindSpore's "
                   "mixed precision (the trainer's amp_level; PyTorch autocasts on CUDA only, so stays float32 on CPU)")
    s.add_argument("--memory", action="store_true", help="also the peak RSS of one child process per framework")
    s.add_argument("--csv", metavar="FILE", help="write the results as CSV (timm's column names)")
    s.add_argument("--plot", metavar="FILE", help="write a bar plot of the MS/PT ratio per model (.png/.svg/.pdf)")
    s.add_argument("--markdown", metavar="FILE", help="write (or update) the generated sections of a markdown "
                   "report such as docs/benchmarks.md")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep: keep the models already "
                   "measured in the --csv file (same settings) and measure the others")
    s.add_argument("--in-process", action="store_true", help="measure every model in this process (default: a fresh "
                   "child process per model when there are several, so that one model's memory and compiled graphs "
                   "never weigh on the next)")
    s.add_argument("--compile-cache", action="store_true", help="time to the first GRAPH training step instead: "
                   "fresh processes without MindSpore's compile cache, with an empty cache (cold) and with the "
                   "same cache again (warm)")
    s.set_defaults(func=cmd_bench)


def _command_line(argv) -> str:
    return "zoo bench " + " ".join(shlex.quote(a) for a in argv)


def _check_args(args):
    from zoo import registry
    from zoo.bench.speed import BenchError
    from zoo.cli_common import check_output_file

    if args.warmup < 0:
        raise BenchError(f"--warmup must be 0 or more, got {args.warmup}")
    for path in (args.csv, args.plot, args.markdown):
        if path:
            check_output_file(path)
    if args.layer:
        if args.models or args.all or args.family:
            raise BenchError("--layer measures layers, not models: leave out the model names, --all and --family")
        return []
    if sum(bool(x) for x in (args.models, args.all, args.family)) != 1:
        raise BenchError("give model names, --family F or --all (one of them), or --layer halo_attn")
    if args.all or args.family:
        names = registry.list_models(args.family)
    else:
        names = list(dict.fromkeys(args.models))
        for n in names:
            registry.get(n)  # unknown names fail before any work
    return names


def cmd_bench(args) -> int:
    from zoo.bench import report, speed
    from zoo.bench.speed import BenchError

    argv = getattr(args, "argv", None) or []
    names = _check_args(args)
    command = _command_line(argv)
    info = speed.machine()
    if args.layer:
        from zoo.bench import layers

        rows, threads = layers.run(args.batch, args.repeats, args.threads)
        text = layers.format_rows(rows, threads)
        print(text)
        if args.markdown:
            report.write_markdown(args.markdown, {"layer": report.layer_markdown(text, command, info, threads)})
        return 0
    print(f"zoo bench: {len(names)} model(s), batch {args.batch}, {args.threads} CPU threads per framework "
          f"(torch and MindSpore), {args.repeats} rounds; MindSpore {info['mindspore']}, torch {info['torch']}; "
          f"{info['cpu']}, {info['cores']} cores", file=sys.stderr, flush=True)
    if info["load"] > (info["cores"] or 1) and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print(f"zoo bench: warning: the load average ({info['load']:.1f}) exceeds the {info['cores']} cores: "
              "PyTorch's OpenMP threads spin while they wait, which can slow it several times on an oversubscribed "
              "machine; measure on a quiet machine, or set OMP_WAIT_POLICY=PASSIVE", file=sys.stderr, flush=True)
    if args.compile_cache:
        results = []
        for i, n in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {n}: time to the first GRAPH step, no cache / cold / warm ...",
                  file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="zoo-bench-cache-") as root:
                results.append(speed.time_to_first_step(n, root, "train", args.batch, args.input_size, args.amp,
                                                        args.threads))
        print(report.cache_table(results))
        if args.markdown:
            report.write_markdown(args.markdown, {"compile-cache": report.cache_markdown(results, command, info,
                                                                                         args.threads)})
        return 0
    rows, failed = [], []
    if args.resume:
        if not (args.csv and os.path.isfile(args.csv)):
            raise BenchError(f"--resume continues the CSV given by --csv: {args.csv or '(no --csv)'} does not exist")
        rows = [r for r in report.read_csv(args.csv) if r["model"] in names and not r.get("error")]
        done = {r["model"] for r in rows}
        print(f"zoo bench: --resume: {len(done)} model(s) already in {args.csv} are kept", file=sys.stderr)
    else:
        done = set()
    isolate = len(names) - len(done) > 1 and not args.in_process

    def publish():
        if args.csv:
            report.write_csv(args.csv, rows)
        if args.plot:
            report.plot(args.plot, rows, args.modes)
        if args.markdown:
            missing = report.missing_models(names, rows)
            body = report.speed_markdown(rows, command, info, args.threads, args.batch, args.repeats, args.modes,
                                         args.frameworks, missing, "not measured when this file was written (it is "
                                         "rewritten after every model, so a run stopped early leaves the rest here):")
            report.write_markdown(args.markdown, {"speed": body})

    for i, n in enumerate(names, 1):
        from zoo import registry

        size = args.input_size or registry.get(n).input_size
        if n in done:
            continue
        print(f"[{i}/{len(names)}] {n} at {'x'.join(map(str, size[1:]))}, batch {args.batch}: "
              f"{', '.join(args.frameworks)}, {', '.join(args.modes)} ...", file=sys.stderr, flush=True)
        try:
            run = speed.bench_model_in_child if isolate else speed.bench_model
            got = run(n, args.batch, args.input_size, args.modes, args.frameworks, args.repeats, args.warmup, args.amp,
                      args.threads)
        except ZooError:
            raise
        except Exception as err:  # noqa: BLE001 - one model's failure must not lose the sweep; reported below
            msg = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
            print(f"zoo bench: {n} failed: {msg}", file=sys.stderr, flush=True)
            failed.append(n)
            got = [dict(model=n, framework=fw, img_size=size[1], error=msg) for fw in args.frameworks]
        if args.memory and n not in failed:
            for r in got:
                r["peak_rss_mib"] = speed.peak_rss(n, r["framework"], size, args.batch, args.modes, args.amp,
                                                   args.threads)
        rows.extend(got)
        summary = "; ".join(f"{m} " + ", ".join(f"{r['framework']} {r[f'{m}_samples_per_sec']:.2f} img/s"
                                                + (f" (x{r[f'{m}_ratio_ms_pt']:.2f})"
                                                   if r.get(f"{m}_ratio_ms_pt") is not None else "")
                                                for r in got) for m in args.modes) if n not in failed else "failed"
        print(f"[{i}/{len(names)}] {n}: {summary}", file=sys.stderr, flush=True)
        publish()
    print(report.console_table(rows, args.modes))
    print(f"\nimg/s = batch / median step time; MS/PT = median over rounds of PyTorch time / MindSpore time (above 1: "
          f"MindSpore faster); {args.threads} CPU threads per framework; % peak = achieved GFLOP/s / float32 matmul "
          "GFLOP/s timed in the same rounds.")
    if failed:
        print(f"zoo bench: {len(failed)} model(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
