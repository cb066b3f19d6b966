"""The `zoo` command line: help, list, convert (success and failure), parity; exit codes and messages."""
import json

import numpy as np
import pytest

import torch

import zoo

MODEL = "triplet_resnet18_cifar"


def test_help_and_no_command(cli):
    r = cli("--help")
    assert r.returncode == 0 and "convert" in r.stdout and "parity" in r.stdout
    r = cli()
    assert r.returncode == 2 and "usage" in r.stdout
    r = cli("convert", "--help")
    assert r.returncode == 0 and "atomically" in r.stdout


def test_list(cli):
    r = cli("list")
    assert r.returncode == 0
    for name in zoo.list_models("triplet"):
        assert name in r.stdout
    assert "11,691,912" in r.stdout  # published parameter count of triplet_resnet18
    r = cli("list", "--family", "triplet", "--json")
    rows = json.loads(r.stdout)
    r18 = next(x for x in rows if x["name"] == "triplet_resnet18")
    assert r18["params"] == 11_691_912 and r18["interpolation"] == "bilinear" and r18["crop_pct"] == 0.875
    r = cli("list", "--family", "nope")
    assert r.returncode == 2 and "unknown family" in r.stderr


def test_convert_success_and_refusals(zoo_main, tmp_path):
    cli = zoo_main
    model = zoo.create_model(MODEL, "pt")
    src = tmp_path / "ta.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 1}, src)
    dst = tmp_path / "ta.ckpt"
    r = cli("convert", MODEL, str(src), str(dst))
    assert r.returncode == 0, r.stderr
    assert "removed the 'module.' prefix" in r.stdout and "MindSpore names" in r.stdout and dst.exists()
    before = dst.read_bytes()
    r = cli("convert", MODEL, str(src), str(dst))
    assert r.returncode == 2 and "already exists" in r.stderr and "nothing was written" in r.stderr
    assert dst.read_bytes() == before
    r = cli("convert", MODEL, str(src), str(dst), "--force")
    assert r.returncode == 0
    r = cli("convert", MODEL, str(dst), str(tmp_path / "back.safetensors"), "--to", "pt")
    assert r.returncode == 0 and "PyTorch names" in r.stdout
    r = cli("convert", "triplet_resnet18_cifr", str(src), str(tmp_path / "x.ckpt"))
    assert r.returncode == 2 and "Did you mean: triplet_resnet18_cifar" in r.stderr
    r = cli("convert", "triplet_resnet50_cifar", str(src), str(tmp_path / "y.ckpt"))
    assert r.returncode == 2 and "does not fit triplet_resnet50_cifar" in r.stderr
    assert not (tmp_path / "y.ckpt").exists()


def test_parity_command(zoo_main, tmp_path):
    cli = zoo_main
    out = tmp_path / "r.json"
    r = cli("parity", MODEL, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1/1 models within the parity bounds" in r.stdout and "identical" in r.stdout
    res = json.loads(out.read_text())[0]
    assert res["model"] == MODEL and res["passed"] and res["fwd"]["graph"] <= 1e-4 and res["grad_ratio"] <= 1
    r = cli("parity", "no_such_model")
    assert r.returncode == 2 and "unknown model" in r.stderr
    r = cli("parity")
    assert r.returncode == 2


# --- issue 10 (1): `zoo train` / `zoo validate` argument parsing ----------------------------------------------

def test_train_and_validate_subcommands_take_their_own_options(cli, capsys):
    """`zoo train -c ...`, `zoo train --help-keys` and `zoo validate -h` used to fail ('unrecognized arguments'):
    the sub-parsers had add_help=False and one REMAINDER positional."""
    from zoo.cli import main

    assert main(["train", "--help-keys"]) == 0
    out = capsys.readouterr().out
    assert "weight_decay_filter" in out and "lr " in out and "[> 0]" in out  # every key, with its range
    for argv, says in ((["train", "-h"], "--help-keys"), (["validate", "-h"], "--checkpoint")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 0 and says in capsys.readouterr().out
    r = cli("train", "-c", "configs/triplet/triplet_resnet18_cifar_smoke.yaml", "--lr", "-1")  # parsed, then checked
    assert r.returncode == 2 and "lr: -1.0 is out of range: expected > 0" in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr


def test_bad_option_values_are_usage_errors(capsys, tmp_path):
    from zoo.cli import main

    for argv, says in ((["parity", MODEL, "--input-size", "abc"], "bad --input-size 'abc'"),
                       (["validate", MODEL, "--checkpoint", "x", "--data", "y", "--batch-size", "0"], "at least 1"),
                       (["validate", MODEL, "--checkpoint", "x", "--data", "y", "--limit", "0"], "at least 1")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and says in capsys.readouterr().err, argv
    # an unwritable --json is refused before the measurement, not with a traceback after it
    assert main(["parity", MODEL, "--json", "/proc/no/such/r.json"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["parity", MODEL, "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


# --- issue 10 (3): validation maps classes by name, excludes unreadable images, refuses a wrong head --------

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A checkpoint that scores 100% on a 3-class folder dataset: a random backbone with a least-squares head fitted
    on the validation preprocessing's own features. Saved with its class list (as the trainer does) and without."""
    from zoo.convert.io import write_checkpoint
    from zoo.convert.core import pt_state
    from zoo.data.sources import open_dataset
    from zoo.data.synthetic import make_image_folder
    from zoo.validate import EvalTransform, eval_batches

    tmp = tmp_path_factory.mktemp("fitted")
    root = make_image_folder(str(tmp / "d"), classes=3, per_class=4, size=32, splits=(("val", 1.0),))
    torch.manual_seed(0)
    m = zoo.create_model(MODEL, "pt", num_classes=3).eval()
    src = open_dataset("imagenet", root, "val")
    xs, ys = zip(*eval_batches(src, EvalTransform(zoo.get_entry(MODEL)), batch_size=64))
    with torch.no_grad():
        feats = m.forward_head(m.forward_features(torch.from_numpy(np.concatenate(xs))), pre_logits=True).double()
    target = torch.nn.functional.one_hot(torch.from_numpy(np.concatenate(ys)), 3).double() * 10
    a = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(a, target).solution
    with torch.no_grad():
        m.fc.weight.copy_(sol[:-1].T.float())
        m.fc.bias.copy_(sol[-1].float())
    with_names, without = str(tmp / "named.pth"), str(tmp / "plain.pth")
    write_checkpoint(pt_state(m), with_names, "pt", classes=src.classes)
    torch.save(m.state_dict(), without)
    return root, with_names, without


def _val(root, ckpt, **kw):
    from zoo.validate import validate
    return validate(MODEL, ckpt, root, "pt", split="val", **kw)


def test_validation_matches_classes_by_name(fitted, tmp_path):
    import shutil

    root, named, plain = fitted
    assert _val(root, named)["top1"] == 100.0
    part = tmp_path / "part"
    shutil.copytree(root, part)
    shutil.rmtree(part / "val" / "class_1")  # val lacks one of the checkpoint's classes
    r = _val(str(part), named)
    assert r["top1"] == 100.0 and r["count"] == 8  # main re-indexed the folders: 33.3%
    from zoo.errors import DatasetError
    with pytest.raises(DatasetError, match="carries no class list.*--classes FILE"):
        _val(str(part), plain)  # no names to match by: an error, not a guess
    assert _val(str(part), plain, class_list=["class_0", "class_1", "class_2"])["top1"] == 100.0
    extra = tmp_path / "extra"
    shutil.copytree(root, extra)
    shutil.copytree(extra / "val" / "class_0", extra / "val" / "class_3")
    with pytest.raises(DatasetError, match="unknown to the checkpoint .3 classes.: class_3"):
        _val(str(extra), named)  # main: IndexError traceback
    with pytest.raises(DatasetError, match="holds classes the model cannot predict"):
        _val(str(extra), plain)


def test_validation_refuses_another_head_and_excludes_unreadable_images(fitted, tmp_path, cli):
    import shutil

    from zoo.errors import ConfigError

    root, named, _ = fitted
    with pytest.raises(ConfigError, match="classifier has 3 classes.*randomly initialised classifier"):
        _val(root, named, num_classes=5)  # main silently validated a random 5-class head
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    broken = bad / "val" / "class_2" / "0001.png"
    broken.write_bytes(b"not a png")
    r = _val(str(bad), named)
    assert r["count"] == 11 and r["top1"] == 100.0 and r["skipped"] == [str(broken)]  # main: 75%, scored as another
    r = cli("validate", "--checkpoint", named, "--data", str(bad), "--framework", "pt", MODEL)  # options first
    assert r.returncode == 0, r.stderr
    assert "11 images: top-1 100.000%" in r.stdout and "1 unreadable image(s) excluded" in r.stdout
    assert f"excluded from the count: {broken}" in r.stderr


# --- every documented command line: collected from README, docs/, --help texts and messages, then parsed by the
# real parsers (the cheap ones also run exactly as written, below) ----------------------------------------------

import argparse  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_REL = "configs/triplet/triplet_resnet18_cifar_smoke.yaml"
_LINE = re.compile(r"^(?:\$ )?((?:zoo|python|msrun|torchrun|make) .*|zoo|make \w+)$")
# placeholders of synopsis lines, and what a parse check puts in their place
PLACEHOLDERS = {"configs/<family>/<recipe>.yaml": SMOKE_REL, "RECIPE": SMOKE_REL, "MODEL": MODEL, "NAME": MODEL,
                "SRC": "a.pth", "DST": "b.ckpt", "FILE": "a.ckpt", "DIR": "./data", "N": "2", "F": "triplet",
                "LAYOUT": "auto"}


def documented_commands():
    """(where, command) for every command line in README.md and docs/*.md code blocks, in the module docstrings and
    help texts of zoo/ and tools/, and in backticks inside the zoo's messages."""
    import ast

    found = []
    for f in ["README.md"] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        lines = open(os.path.join(ROOT, f)).read().splitlines()
        fence, i = False, 0
        while i < len(lines):
            if lines[i].startswith("```"):
                fence = not fence
            elif fence and _LINE.match(lines[i].strip()):
                cmd = _LINE.match(lines[i].strip()).group(1)
                while cmd.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
                found.append((os.path.relpath(os.path.join(ROOT, f), ROOT), cmd))
            i += 1
    for f in sorted(glob.glob(os.path.join(ROOT, "zoo", "**", "*.py"), recursive=True) +
                    glob.glob(os.path.join(ROOT, "tools", "*.py"))):
        for node in ast.walk(ast.parse(open(f).read())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                cmds = [m.group(1) for m in re.finditer(r"`{1,2}((?:zoo|python|msrun|torchrun) [^`]+)`{1,2}", text)]
                cmds += [m.group(1) for m in re.finditer(r"^\s{4,}((?:zoo|python|msrun|torchrun) .*)$", text, re.M)]
                found += [(os.path.relpath(f, ROOT), c) for c in cmds]
    return found


def _clean(cmd):
    """Drop the comment and trailing remarks, expand a synopsis into the command lines it stands for."""
    cmd = re.sub(r"\s+#.*$", "", cmd)
    cmd = re.sub(r"\s+\((?:or|DDP)[^)]*\)$", "", cmd).strip()
    variants = [cmd]
    while any("[" in v for v in variants):  # [--opt X] optional parts: with and without
        out = []
        for v in variants:
            m = re.search(r"\s*\[([^\[\]]*)\]", v)
            if not m:
                out.append(v)
                continue
            inner = m.group(1)
            out.append(v[:m.start()] + v[m.end():])
            if inner not in ("--key value ...",):
                out.append(v[:m.start()] + " " + inner + v[m.end():])
        variants = out
    expanded = []
    for v in variants:  # a|b alternatives, each
        m = re.search(r"(\S+)\|(\S+)", v)
        if m and not v.startswith("zoo list|"):
            for alt in m.group(0).split("|"):
                if alt != "...":
                    expanded.append(v[:m.start()] + alt + v[m.end():])
        else:
            expanded.append(v)
    return [_fill(v) for v in expanded]


def _fill(cmd):
    for k, v in PLACEHOLDERS.items():
        cmd = re.sub(rf"(?<![\w/<.-]){re.escape(k)}(?![\w>/.-])", v, cmd)
    cmd = cmd.replace("-c ...", f"-c {SMOKE_REL}")
    if cmd.endswith(" ..."):
        cmd = cmd[:-4]
    if cmd.endswith("tools/train.py"):
        cmd += f" -c {SMOKE_REL}"
    return cmd


# command lines whose tools other test files run as documented (their parsers are other programs': mindcv's own
# scripts, timm's): the named file must exist and run the tool
ELSEWHERE = {"python -m zoo.mindcv": "tests/test_mindcv.py", "python tools/run_mindcv.py": "tests/test_mindcv.py"}


class _Parsed(Exception):
    pass


def _parse_only(monkeypatch):
    """Make argparse stop right after a successful parse (a bad command line still exits with status 2)."""
    real = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)


def _launched(argv, monkeypatch):
    """An msrun or torchrun line parsed by the launcher's own parser: the script's command line it would start."""
    import sys

    if argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        ns = get_args_parser().parse_args(argv[1:])
        return ["python", ns.training_script, *ns.training_script_args]
    from mindspore.parallel.cluster import run as msrun

    monkeypatch.setattr(sys, "argv", argv)
    _parse_only(monkeypatch)
    with pytest.raises(_Parsed) as parsed:
        msrun.get_args()
    monkeypatch.undo()
    ns = parsed.value.args[0]
    return ["python", ns.task_script, *ns.task_script_args]


def _launcher_options():
    from mindspore.parallel.cluster import run as msrun  # noqa: F401
    from torch.distributed.run import get_args_parser

    opts = {o for a in get_args_parser()._actions for o in a.option_strings}
    src = open(msrun.__file__).read()
    return opts | set(re.findall(r'"(--[a-z_]+)"', src))


def check_command(cmd, monkeypatch):
    """Parse one filled-in command line with the parser that would receive it; raises if any part is wrong."""
    import importlib.util

    from zoo import cli
    from zoo.train import loop
    from zoo.train.config import load_config, parse_overrides

    for prefix, test_file in ELSEWHERE.items():
        if cmd.startswith(prefix):
            assert "zoo.mindcv" in open(os.path.join(ROOT, test_file)).read(), (cmd, test_file)
            return
    argv = shlex.split(cmd)
    if argv[0] == "make":
        targets = re.findall(r"^([\w-]+):", open(os.path.join(ROOT, "Makefile")).read(), re.M)
        assert argv[1] in targets, cmd
        return
    if argv[0] in ("msrun", "torchrun"):
        argv = _launched(argv, monkeypatch)
    if argv[:2] == ["python", "-c"]:
        compile(argv[2], "<doc>", "exec")
        return
    if argv[:3] == ["python", "-m", "zoo"] or argv[0] == "zoo":
        argv = argv[3:] if argv[0] == "python" else argv[1:]
        tool = None
    elif argv[:2] == ["python", "-m"]:
        if not argv[2].startswith("zoo."):  # another program (pip, ...): never run here; it must exist
            assert importlib.util.find_spec(argv[2]) is not None, cmd
            return
        tool = importlib.import_module(argv[2]).main
        argv = argv[3:]
    else:
        assert argv[0] == "python" and argv[1].startswith("tools/"), cmd
        path = os.path.join(ROOT, argv[1])
        monkeypatch.syspath_prepend(os.path.dirname(path))  # as `python tools/x.py` puts tools/ on the path
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        tool = mod.main
        if argv[1] == "tools/train.py":
            argv = ["train"] + argv[2:]
            tool = None
        elif argv[1] == "tools/validate.py":
            argv = ["validate"] + argv[2:]
            tool = None
        elif argv[1] == "tools/convert.py":
            argv = ["convert"] + argv[2:]
            tool = None
        else:
            argv = argv[2:]
    if tool is None and argv and argv[0] == "train":  # the trainer's own parser, then every key through load_config
        try:
            args, rest = loop.build_parser().parse_known_args(argv[1:])
        except SystemExit as stop:  # -h
            assert stop.code == 0, cmd
            return
        if not args.help_keys:
            load_config(os.path.join(ROOT, args.config) if args.config else None,
                        {"model": MODEL, **parse_overrides(rest)} if not args.config else parse_overrides(rest))
        return
    if tool is None and ("..." in argv or len(argv) == 1):  # a mention of a command (arguments elided): it exists
        assert argv[0] in cli.build_parser()._subparsers._group_actions[0].choices, cmd
        return
    _parse_only(monkeypatch)
    try:
        (tool or cli.main)(argv)
    except (_Parsed, SystemExit) as err:
        stop = pytest.ExceptionInfo.from_exception(err)
    else:
        raise AssertionError(f"{cmd}: its tool ran without an argparse parse to stop at (not checkable here)")
    finally:
        monkeypatch.undo()
    assert stop.type is _Parsed or stop.value.code == 0, f"{cmd}: exit {getattr(stop.value, 'code', None)}"


def test_every_documented_command_line_parses(monkeypatch, capsys):
    """A doc change cannot silently break a command: every line found is parsed as its tool would parse it."""
    cmds = documented_commands()
    assert len(cmds) > 40 and any("zoo train -c" in c for _, c in cmds)
    failures = []
    for where, cmd in cmds:
        for filled in _clean(cmd):
            try:
                check_command(filled, monkeypatch)
            except (AssertionError, Exception, SystemExit) as err:  # noqa: B014 - report every bad line at once
                failures.append(f"{where}: {cmd!r} -> {filled!r}: {type(err).__name__}: {err}")
            finally:
                monkeypatch.undo()
    capsys.readouterr()
    assert not failures, "\n".join(failures)


def test_every_option_named_in_a_message_exists():
    """An error message that recommends `--something` must name an option or config key that exists."""
    import ast

    from zoo import cli
    from zoo.train import loop
    from zoo.train.config import KEYS
    from zoo.validate import build_parser as validate_parser

    known = set()
    parsers = [loop.build_parser(), validate_parser(), cli.build_parser()]
    parsers += list(parsers[-1]._subparsers._group_actions[0].choices.values())
    for p in parsers:
        for a in p._actions:
            known.update(a.option_strings)
    known.update(f"--{k}" for k in KEYS)
    known.add("--key")  # "--key value": the form of an override
    known.update({"--dist-bn", "--device-modules"})  # timm's options, named as such
    known.update(re.findall(r'"(--[a-z-]+)"', open(os.path.join(ROOT, "zoo", "mindcv.py")).read()))  # its runner
    known.update(f"--{k.replace('_', '-')}" for k in KEYS)
    known.update(_launcher_options())
    bad = []
    for f in glob.glob(os.path.join(ROOT, "zoo", "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(open(f).read())):
            # what users read as advice: error messages and --help texts (docstrings may cite other programs)
            if isinstance(node, ast.Raise) and node.exc is not None:
                parts = [node.exc]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("add_argument", "ArgumentParser",
                                                                                    "add_parser"):
                parts = [k.value for k in node.keywords if k.arg in ("help", "description", "epilog")]
            else:
                continue
            for part in parts:
                for c in ast.walk(part):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", c.value):
                            if opt not in known:
                                bad.append(f"{os.path.relpath(f, ROOT)}: {opt}")
    assert not bad, "\n".join(bad)


def test_cheap_documented_commands_run_exactly_as_written(cli, tmp_path):
    """The documented lines that need no dataset or checkpoint, run as written (one process each); and the
    README's convert/validate pair as written on a machine without ImageNet: it fails on the missing files only."""
    import subprocess
    import sys

    r = cli("list", "--family", "triplet")  # README
    assert r.returncode == 0 and "triplet_resnet50" in r.stdout
    r = cli("train", "--help-keys")  # recommended by every unknown-key error
    assert r.returncode == 0 and "image_resize" in r.stdout
    r = subprocess.run([sys.executable, "tools/train.py", "--help-keys"], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))  # docs/training.md
    assert r.returncode == 0 and "weight_decay_filter" in r.stdout
    r = cli("validate", "-h")  # the `zoo -h` listing points here
    assert r.returncode == 0 and "--classes" in r.stdout
    r = cli("convert", "triplet_resnet50", "TA_resnet50_model_best.pth.tar", "ta_r50.ckpt")  # README, no such file
    assert r.returncode == 2 and "TA_resnet50_model_best.pth.tar: no such file" in r.stderr, r.stderr
    r = cli("validate", "triplet_resnet50", "--checkpoint", "ta_r50.ckpt", "--data", "/data/imagenet",
            "--framework", "pt")
    assert r.returncode == 2 and "/data/imagenet: the dataset directory does not exist" in r.stderr, r.stderr
