"""`zoo bench`, in-process (through zoo.cli.main): the CSV's columns and derived figures, the report files, and
the error paths. No timing assertions: the figures depend on the machine."""
import csv
import os
import sys

import pytest

from zoo import cli
from zoo.bench import report

MODEL = "triplet_resnet18_cifar"


def test_bench_one_small_model_writes_csv_plot_and_markdown(tmp_path, capsys):
    out_csv, out_png, out_md = tmp_path / "b.csv", tmp_path / "b.png", tmp_path / "bench.md"
    code = cli.main(["bench", MODEL, "--input-size", "32", "--batch", "2", "--repeats", "2", "--warmup", "0",
                     "--modes", "infer,train", "--frameworks", "pt,ms-graph", "--csv", str(out_csv),
                     "--plot", str(out_png), "--markdown", str(out_md)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"[1/1] {MODEL} at 32x32, batch 2" in captured.err and "2 CPU threads per framework" in captured.err
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [r["framework"] for r in rows] == ["pt", "ms-graph"]
    for col in ("infer_samples_per_sec", "infer_step_time", "infer_batch_size", "param_count", "infer_gmacs",
                "train_samples_per_sec", "train_step_time", "train_batch_size", "ratio_ms_pt", "compile_s"):
        assert any(col in c for c in rows[0]), col
    assert set(report.COLUMNS) == set(rows[0])
    for r in rows:
        assert r["model"] == MODEL and r["img_size"] == "32" and r["threads"] == "2" and not r["error"]
        for m in ("infer", "train"):
            batch, step_ms = int(r[f"{m}_batch_size"]), float(r[f"{m}_step_time"])
            ips = float(r[f"{m}_samples_per_sec"])
            assert batch == 2 and step_ms > 0
            assert ips == pytest.approx(batch / (step_ms / 1e3), rel=1e-4)  # derived, never typed
            gflops = float(r[f"{m}_gflops"])
            assert float(r[f"{m}_pct_peak"]) == pytest.approx(100 * gflops / float(r[f"{m}_peak_gflops"]), rel=1e-3)
    pt, ms = rows
    assert float(pt["param_count"]) == pytest.approx(11.18, abs=0.01)  # 11,176,... parameters, in millions
    assert pt["infer_ratio_ms_pt"] == "" and float(ms["infer_ratio_ms_pt"]) > 0 and float(ms["train_ratio_ms_pt"]) > 0
    assert float(ms["infer_compile_s"]) > 0 and float(ms["train_compile_s"]) > 0 and pt["train_compile_s"] == ""
    assert open(out_png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(out_md).read()
    assert f"zoo bench {MODEL} --input-size 32" in md and "MindSpore 2.8" in md and f"`{MODEL}`" in md
    assert "<!-- zoo bench: speed -->" in md and "Not measured" not in md
    # console table on stdout
    assert "infer MS/PT" in captured.out and MODEL in captured.out


def test_markdown_sections_are_replaced_and_kept(tmp_path):
    path = str(tmp_path / "b.md")
    report.write_markdown(path, {"speed": "speed one"})
    report.write_markdown(path, {"compile-cache": "cache one"})
    report.write_markdown(path, {"speed": "speed two"})
    text = open(path).read()
    assert "speed two" in text and "cache one" in text and "speed one" not in text
    assert text.index("speed two") < text.index("cache one") and text.startswith("# Benchmarks")


def test_missing_models_are_named_in_the_markdown():
    info = dict(cpu="x", cores=2, mem_gib=None, gpu=None, python="3.11", mindspore="2.8.0", torch="2", numpy="1")
    row = dict(model="a", framework="pt", img_size=32, param_count=1.0, infer_gmacs=0.1, infer_samples_per_sec=2.0,
               infer_pct_peak=1.0, infer_peak_gflops=10.0, load_avg=3.0)
    text = report.speed_markdown([row], "zoo bench a b", info, 2, 8, 3, ["infer"], ["pt", "ms-graph"],
                                 report.missing_models(["a", "b"], [row]), "not reached:")
    assert "**Not measured (1 models)**: not reached: `b`." in text and "| `a` | 32 |" in text


@pytest.mark.parametrize("argv, words", [
    (["bench", "triplet_resnet18_cifarr"], "unknown model 'triplet_resnet18_cifarr'. Did you mean: "),
    (["bench", "--family", "nosuch"], "unknown family 'nosuch'"),
    (["bench"], "give model names, --family F or --all"),
    (["bench", MODEL, "--all"], "give model names, --family F or --all"),
    (["bench", MODEL, "--layer", "halo_attn"], "--layer measures layers, not models"),
    (["bench", MODEL, "--csv", "/no/such/folder/b.csv"], "the folder /no/such/folder does not exist"),
])
def test_errors_are_messages_not_tracebacks(argv, words, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo bench: error: ") and words in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["bench", MODEL, "--batch", "0"], "--batch: must be at least 1, got 0"),
    (["bench", MODEL, "--repeats", "x"], "--repeats: expected a whole number"),
    (["bench", MODEL, "--modes", "infer,fly"], "--modes: 'infer,fly': use a comma-separated list of infer, train"),
    (["bench", MODEL, "--frameworks", "tf"], "use a comma-separated list of pt, ms-graph, ms-pynative"),
    (["bench", MODEL, "--amp", "O1"], "invalid choice: 'O1'"),
])
def test_bad_options_are_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2 and words in capsys.readouterr().err


def test_help_explains(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "-h"])
    out = capsys.readouterr().out
    assert "alternate" in out and "--compile-cache" in out and "--layer" in out and "img/s" in out


def test_tools_bench_is_zoo_bench():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench.py")
    spec = importlib.util.spec_from_file_location("bench_tool", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["triplet_resnet18_cifarr"]) == 2


def test_compile_cache_key_changes_with_what_changes_the_graph():
    from zoo.compile_cache import cache_key

    base = cache_key(MODEL, "train", (8, 3, 32, 32), "O0", 0, kwargs={"lr": 0.1})
    assert base == cache_key(MODEL, "train", (8, 3, 32, 32), "O0", 0, kwargs={"lr": 0.1})
    others = [cache_key(MODEL, "train", (4, 3, 32, 32), "O0", 0, kwargs={"lr": 0.1}),
              cache_key(MODEL, "train", (8, 3, 32, 32), "O2", 0, kwargs={"lr": 0.1}),
              cache_key(MODEL, "infer", (8, 3, 32, 32), "O0", 0, kwargs={"lr": 0.1}),
              cache_key(MODEL, "train", (8, 3, 32, 32), "O0", 0, kwargs={"lr": 0.2}),
              cache_key("triplet_resnet18", "train", (8, 3, 32, 32), "O0", 0, kwargs={"lr": 0.1})]
    assert len({base, *others}) == 6 and base.startswith(MODEL + "-train-")


def test_trainer_keeps_its_compile_cache_in_the_run_folder(tmp_path, monkeypatch):
    from zoo import compile_cache
    from zoo.train.config import load_config
    from zoo.train.ms import MindSporeBackend

    for var in (compile_cache.ENABLE, compile_cache.PATH, compile_cache.ENV):
        monkeypatch.delenv(var, raising=False)
    # MindSpore's cache hashes the main script: where the process has none (xdist's workers run `python -c`) the
    # trainer keeps the cache off, so every later GRAPH compile of the process still works
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert not compile_cache.usable() and compile_cache.enable(str(tmp_path / "x"), "k") is None
    assert compile_cache.ENABLE not in os.environ
    monkeypatch.setattr(sys, "argv", [os.path.abspath(__file__)])  # as under `python tools/train.py`

    def backend(**kw):
        cfg = load_config(None, dict(model=MODEL, num_classes=10, device_target="CPU", image_resize=32, batch_size=4,
                                     ckpt_save_dir=str(tmp_path / "run"), **kw))
        return MindSporeBackend(cfg)

    b = backend()
    b.enable_compile_cache([0.1] * 5)
    assert os.path.dirname(b.compile_cache) == str(tmp_path / "run" / "compile_cache")
    assert os.environ[compile_cache.ENABLE] == "1" and os.environ[compile_cache.PATH] == b.compile_cache
    first = b.compile_cache
    assert f"compile cache compile_cache/{os.path.basename(first)} (empty: compiling)" in b.describe()
    os.makedirs(os.path.join(first, "rank_0", "graph_cache"))
    open(os.path.join(first, "rank_0", "graph_cache", "compile_cache_0.mindir"), "wb").close()
    b.enable_compile_cache([0.1] * 5)
    assert b.compile_cache == first and "(a compiled graph is there)" in b.describe()
    b.enable_compile_cache([0.1] * 4 + [0.05])  # another schedule: another graph folder
    assert b.compile_cache != first
    b = backend(label_smoothing=0.1)  # a recipe key that changes the graph
    b.enable_compile_cache([0.1] * 5)
    assert b.compile_cache != first
    b = backend(log_interval=3, data_dir="/elsewhere")  # keys that do not: the same graph
    b.enable_compile_cache([0.1] * 5)
    assert b.compile_cache == first
    b.finish()
    assert compile_cache.ENABLE not in os.environ
    monkeypatch.setenv(compile_cache.ENV, "off")
    b.enable_compile_cache([0.1] * 5)
    assert b.compile_cache is None and compile_cache.ENABLE not in os.environ
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "shared"))
    b.enable_compile_cache([0.1] * 5)
    assert os.path.dirname(b.compile_cache) == str(tmp_path / "shared")
    b.finish()
    monkeypatch.delenv(compile_cache.ENV)
    monkeypatch.setenv(compile_cache.PATH, "/users/own")  # the user's own setting wins
    b.enable_compile_cache([0.1] * 5)
    assert b.compile_cache is None and os.environ[compile_cache.PATH] == "/users/own"
    b = backend(mode=1)  # PYNATIVE: no graph
    monkeypatch.delenv(compile_cache.PATH)
    b.enable_compile_cache([0.1] * 5)
    assert b.compile_cache is None
    compile_cache.disable()
    assert compile_cache.ENABLE not in os.environ and compile_cache.PATH not in os.environ


def test_compile_cache_report_separates_compilation_from_the_step():
    r = dict(model=MODEL, what="train", batch=8, img_size=32, no_cache_to_first_step=30.0, cold_to_first_step=32.0,
             warm_to_first_step=12.0, no_cache_first_call=21.0, cold_first_call=22.0, warm_first_call=5.0,
             no_cache_step=1.0, cold_step=2.0, warm_step=1.0, warm_cache_was_filled=True)
    info = dict(cpu="x", cores=2, python="3.11", mindspore="2.8.0", torch="2", numpy="1")
    md = report.cache_markdown([r], "zoo bench x --compile-cache", info, 2)
    assert f"| `{MODEL}` | 32 | 8 | train | 30.0 / 32.0 / 12.0 | 0.38 | 20.0 / 20.0 / 4.0 | 0.20 | 1.00 | yes |" in md
    assert "NO" in report.cache_table([dict(r, warm_cache_was_filled=False)])


def test_resume_keeps_the_rows_already_measured(tmp_path, capsys):
    path = tmp_path / "b.csv"
    rows = [dict(model=MODEL, framework=fw, img_size=32, threads=2, infer_batch_size=2, infer_step_time=100.0,
                 infer_samples_per_sec=20.0) for fw in ("pt", "ms-graph")]
    report.write_csv(str(path), rows)
    assert cli.main(["bench", MODEL, "--modes", "infer", "--resume", "--csv", str(path)]) == 0  # nothing left to do
    err = capsys.readouterr().err
    assert f"--resume: 1 model(s) already in {path} are kept" in err and "[1/1]" not in err
    assert [(r["model"], r["framework"], r["infer_samples_per_sec"]) for r in report.read_csv(str(path))] == \
        [(MODEL, "pt", 20.0), (MODEL, "ms-graph", 20.0)]
    assert cli.main(["bench", MODEL, "--resume", "--csv", str(tmp_path / "none.csv")]) == 2
    assert "--resume continues the CSV given by --csv" in capsys.readouterr().err
