r"""Run mindcv's own scripts (``train.py``, ``validate.py``, ...) on the zoo's models.

    python -m zoo.mindcv [--mindcv-dir DIR] SCRIPT [ARGS ...]
    python -m zoo.mindcv --mindcv-dir ~/mindcv train.py -c configs/triplet/triplet_resnet18_cifar_smoke.yaml \
        --data_dir DATA --ckpt_save_dir runs/r18_mindcv --epoch_size 1
    python -m zoo.mindcv --mindcv-dir ~/mindcv validate.py --model triplet_resnet18_cifar --num_classes 4 \
        --data_dir DATA --ckpt_path runs/r18_mindcv/triplet_resnet18_cifar_best.ckpt --num_parallel_workers 2
    python tools/run_mindcv.py ...        (the same runner as a script file, for launchers that take one)

mindcv's scripts live in its source tree, not in the mindcv wheel: ``SCRIPT`` is a path to one, or a name
found in ``--mindcv-dir DIR``, ``$ZOO_MINDCV_DIR``, or next to the imported ``mindcv`` package (a checkout
installed with ``pip install -e``). Use the checkout of the installed mindcv's version
(``git clone -b v0.3.0 https://github.com/mindspore-lab/mindcv``): each release's scripts go with its library.

Before the script runs, this registers the zoo's MindSpore twins into mindcv's registry (names mindcv owns, such
as ``halonet_50t``, as ``zoo_<name>``), and then, inside mindcv's own ``config.parse_args``:

- **recipe keys mindcv does not know** (the zoo-only keys listed in docs/training.md) are left out of the recipe
  mindcv reads, with a note (mindcv's parser rejects any unknown key);
- **the model's preprocessing** comes from its mindcv model config (``default_cfgs``, read back with
  ``mindcv.models.registry.get_pretrained_cfg``): ``image_resize`` (the input size), ``interpolation``,
  ``crop_pct``, ``mean`` and ``std``, for each of these the recipe and the command line leave unset. mindcv's
  scripts otherwise take them from their own defaults (224, bilinear, 0.875, ImageNet mean/std), whatever the model.
"""
from __future__ import annotations

import os
import runpy
import sys
import tempfile
from typing import List, Optional, Sequence

from zoo.errors import ZooError

SCRIPTS = ("train.py", "validate.py", "train_with_func.py", "validate_with_func.py")
# keys of mindcv's parser the model's config fills when neither the recipe nor the command line sets them
PREPROCESS_KEYS = ("image_resize", "interpolation", "crop_pct", "mean", "std")
# values mindcv's parser accepts but its library reads differently from the zoo (said once, at start)
DIFFERENT_VALUES = {
    ("weight_decay_filter", "1d_and_bias"): "mindcv 0.3.0 has no 1d_and_bias filter and applies its norm_and_bias "
                                            "rule (no decay on parameters named *gamma*, *beta*, *bias*) instead",
}

USAGE = __doc__.split("\n\n")[1]


class ScriptNotFound(ZooError):
    pass


def _checkout_dirs(mindcv_dir: Optional[str]) -> List[str]:
    dirs = [d for d in (mindcv_dir, os.environ.get("ZOO_MINDCV_DIR")) if d]
    try:
        import importlib.util
        spec = importlib.util.find_spec("mindcv")
        if spec is not None and spec.origin:
            dirs.append(os.path.dirname(os.path.dirname(os.path.abspath(spec.origin))))
    except (ImportError, ValueError):
        pass
    return dirs


def find_script(script: str, mindcv_dir: Optional[str] = None) -> str:
    """The path of mindcv's ``script`` (a path, or a name looked up as the module docstring says)."""
    if os.path.isfile(script):
        return os.path.abspath(script)
    if mindcv_dir and not os.path.isdir(mindcv_dir):
        raise ScriptNotFound(f"--mindcv-dir {mindcv_dir}: no such directory")
    looked = []
    for d in _checkout_dirs(mindcv_dir):
        path = os.path.join(d, script)
        looked.append(d)
        if os.path.isfile(path) and os.path.isfile(os.path.join(d, "config.py")):
            return os.path.abspath(path)
    import importlib.metadata
    try:
        version = importlib.metadata.version("mindcv")
    except importlib.metadata.PackageNotFoundError:
        version = None
    where = "; looked in " + ", ".join(looked) if looked else ""
    raise ScriptNotFound(
        f"{script}: not found{where}. mindcv's scripts are not part of the mindcv package: clone mindcv at the "
        f"installed version ({'git clone -b v' + version if version else 'git clone'} "
        "https://github.com/mindspore-lab/mindcv) and pass --mindcv-dir <checkout> (or set ZOO_MINDCV_DIR), or give "
        "the script's path")


def _checkout_version(folder: str) -> Optional[str]:
    path = os.path.join(folder, "mindcv", "version.py")
    if not os.path.isfile(path):
        return None
    for line in open(path):
        if line.strip().startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("'\"")
    return None


def _option_given(argv: Sequence[str], key: str) -> bool:
    flag = "--" + key
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _config_path(argv: List[str]):
    """(index of the value, path) of ``-c/--config`` in argv, or (None, None)."""
    for i, a in enumerate(argv):
        if a in ("-c", "--config") and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        for flag in ("--config=", "-c="):
            if a.startswith(flag):
                return i, a[len(flag):]
    return None, None


def _parser_keys(config_module) -> set:
    _, parser = config_module.create_parser()
    return {a.dest for a in parser._actions} | set(parser._defaults)


def _wrap_parse_args(config_module, tmpdir: str, say):
    """mindcv's ``config.parse_args`` with zoo-only recipe keys left out and the model's preprocessing filled in."""
    original = config_module.parse_args

    def parse_args(args=None):
        import yaml

        argv = list(sys.argv[1:] if args is None else args)
        recipe = {}
        index, path = _config_path(argv)
        if path and os.path.isfile(path):
            with open(path) as f:
                recipe = yaml.safe_load(f) or {}
            if isinstance(recipe, dict):
                known = _parser_keys(config_module)
                extra = [k for k in recipe if k not in known]
                if extra:
                    say("left out of the recipe mindcv reads (zoo-only keys, see docs/training.md): "
                        + ", ".join(extra))
                    kept = {k: v for k, v in recipe.items() if k in known}
                    filtered = os.path.join(tmpdir, os.path.basename(path))
                    with open(filtered, "w") as f:
                        yaml.safe_dump(kept, f, sort_keys=False)
                    argv[index] = filtered if argv[index] == path else argv[index].replace(path, filtered)
                    recipe = kept
        ns = original(argv)
        for (key, value), why in DIFFERENT_VALUES.items():
            if getattr(ns, key, None) == value:
                say(f"{key}: {value}: {why}")
        _fill_preprocessing(ns, recipe, argv, say)
        return ns

    config_module.parse_args = parse_args


def _fill_preprocessing(ns, recipe: dict, argv: Sequence[str], say) -> None:
    from mindcv.models.registry import get_pretrained_cfg

    cfg = get_pretrained_cfg(getattr(ns, "model", "") or "")
    if "zoo_name" not in cfg:  # one of mindcv's own models: nothing changes
        return
    values = {"image_resize": int(cfg["input_size"][-1]), "interpolation": cfg["interpolation"],
              "crop_pct": cfg["crop_pct"], "mean": list(cfg["mean"]), "std": list(cfg["std"])}
    filled = []
    for key in PREPROCESS_KEYS:
        if hasattr(ns, key) and key not in recipe and not _option_given(argv, key):
            setattr(ns, key, values[key])
            filled.append(f"{key} {values[key]}")
    if filled:
        say(f"{ns.model}: from its model config: {', '.join(filled)}")


def run(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mindcv_dir = None
    while argv and argv[0].startswith("-"):
        opt = argv.pop(0)
        if opt in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if opt == "--mindcv-dir" and argv:
            mindcv_dir = argv.pop(0)
        elif opt.startswith("--mindcv-dir="):
            mindcv_dir = opt.split("=", 1)[1]
        else:
            print(f"zoo.mindcv: unknown option {opt!r} before the script name\nusage:\n{USAGE}", file=sys.stderr)
            return 2
    if not argv:
        print(f"zoo.mindcv: name mindcv's script to run ({', '.join(SCRIPTS)}) and its arguments\nusage:\n{USAGE}",
              file=sys.stderr)
        return 2
    _, recipe = _config_path(argv[1:])
    if recipe and os.path.isfile(recipe):  # leaving the teacher keys out would train without the teacher
        import yaml

        with open(recipe) as f:
            data = yaml.safe_load(f)
        if isinstance(data, dict) and data.get("teacher_model"):
            print(f"zoo.mindcv: error: {recipe} distils from a teacher (teacher_model); mindcv's scripts have no "
                  "distillation: train it with tools/train.py (docs/distillation.md)", file=sys.stderr)
            return 2
    try:
        script = find_script(argv[0], mindcv_dir)
    except ScriptNotFound as err:
        print(f"zoo.mindcv: error: {err}", file=sys.stderr)
        return 2
    folder = os.path.dirname(script)

    def say(msg):
        print(f"zoo.mindcv: {msg}", file=sys.stderr, flush=True)

    from zoo import integrations

    import mindcv

    integrations.register_mindcv()
    there = _checkout_version(folder)
    if there and there != mindcv.__version__:
        say(f"warning: {script} is from mindcv {there} but mindcv {mindcv.__version__} is installed; use the "
            f"checkout of v{mindcv.__version__}")

    sys.path.insert(0, folder)
    sys.modules.pop("config", None)
    import config as config_module  # mindcv's config.py, next to its scripts

    with tempfile.TemporaryDirectory(prefix="zoo-mindcv-") as tmpdir:
        _wrap_parse_args(config_module, tmpdir, say)
        sys.argv = [script, *argv[1:]]
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as done:
            code = done.code
            return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main() -> None:
    import threading

    code = run()
    for t in threading.enumerate():  # mindcv saves checkpoints in background threads: let them finish
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    from zoo.cli import exit_process

    exit_process(code)


if __name__ == "__main__":
    main()
