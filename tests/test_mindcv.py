"""mindcv's own scripts on the zoo's models (``python -m zoo.mindcv``), and the recipes as mindcv reads them.

mindcv's scripts (train.py, validate.py, config.py) live in its source tree, not in the mindcv wheel: the tests
that run them need a checkout of the installed version (``ZOO_MINDCV_DIR=<mindcv checkout at v0.3.0>``, or a
checkout installed with ``pip install -e``) and are skipped without one. The recipe checks against mindcv
0.3.0's defaults run everywhere: the table below is mindcv 0.3.0's parser, and a test compares the two
whenever the checkout is there.
"""
import glob
import os
import subprocess
import sys

import pytest
import yaml

from zoo.train.config import KEYS, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.yaml")))

# mindcv 0.3.0's config.py (create_parser): every key and its default
MINDCV_030_DEFAULTS = {
    'mode': 0, 'distribute': False, 'val_while_train': False, 'val_interval': 1, 'log_interval': 100, 'seed': 42,
    'dataset': 'imagenet', 'data_dir': './', 'train_split': 'train', 'val_split': 'val', 'dataset_download': False,
    'num_parallel_workers': 8, 'shuffle': True, 'num_samples': None, 'batch_size': 128, 'drop_remainder': True,
    'image_resize': 224, 'scale': (0.08, 1.0), 'ratio': (0.75, 1.333), 'hflip': 0.5, 'vflip': 0.0,
    'color_jitter': 0.4, 'interpolation': 'bilinear', 'auto_augment': None, 'aug_splits': 0, 're_prob': 0.0,
    're_scale': (0.02, 0.33), 're_ratio': (0.3, 3.3), 're_value': 0, 're_max_attempts': 10,
    'mean': [123.675, 116.28, 103.53], 'std': [58.395, 57.12, 57.375], 'crop_pct': 0.875, 'mixup': 0.0,
    'cutmix': 0.0, 'cutmix_prob': 1.0, 'aug_repeats': 0, 'model': 'mobilenet_v2_035_224', 'num_classes': None,
    'in_channels': 3, 'drop_rate': None, 'drop_path_rate': None, 'pretrained': False, 'ckpt_path': '',
    'resume_opt': False, 'keep_checkpoint_max': 10, 'ckpt_save_dir': './ckpt', 'ckpt_save_interval': 1,
    'ckpt_save_policy': 'latest_k', 'epoch_size': 90, 'dataset_sink_mode': True, 'ema': False, 'ema_decay': 0.9999,
    'clip_grad': False, 'clip_value': 15.0, 'layer_decay': None, 'gradient_accumulation_steps': 1, 'opt': 'adam',
    'momentum': 0.9, 'weight_decay': 1e-06, 'use_nesterov': False, 'weight_decay_filter': 'disable', 'eps': 1e-10,
    'scheduler': 'cosine_decay', 'lr': 0.001, 'min_lr': 1e-06, 'warmup_epochs': 3, 'warmup_factor': 0.0,
    'decay_epochs': 100, 'decay_rate': 0.9, 'multi_step_decay_milestones': [30, 60, 90], 'lr_epoch_stair': False,
    'num_cycles': 1, 'cycle_decay': 1.0, 'loss': 'CE', 'label_smoothing': 0.0, 'aux_factor': 0.0,
    'reduction': 'mean', 'amp_level': 'O0', 'val_amp_level': 'O0', 'amp_cast_list': None,
    'loss_scale_type': 'fixed', 'loss_scale': 1.0, 'drop_overflow_update': False,
}
ZOO_ONLY = sorted(k for k in KEYS if k not in MINDCV_030_DEFAULTS)


def _checkout():
    from zoo.mindcv import ScriptNotFound, find_script
    try:
        return os.path.dirname(find_script("train.py"))
    except ScriptNotFound:
        return None


CHECKOUT = _checkout()
needs_checkout = pytest.mark.skipif(CHECKOUT is None, reason="no mindcv checkout (its scripts are not in the mindcv "
                                    "wheel): set ZOO_MINDCV_DIR to a checkout of the installed version")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-9 * max(1, abs(b))
    return a == b


def _differences(zoo_cfg, mindcv_values: dict) -> dict:
    return {k: (getattr(zoo_cfg, k), mindcv_values[k]) for k in KEYS
            if k in mindcv_values and not _same(getattr(zoo_cfg, k), mindcv_values[k])}


def _recipe(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _mindcv_config():
    sys.path.insert(0, CHECKOUT)
    sys.modules.pop("config", None)
    try:
        import config
    finally:
        sys.path.remove(CHECKOUT)
    sys.modules.pop("config", None)  # not left for other tests to import by that name
    return config


# zoo-only keys no recipe needs: the device comes from the installed build (device_target: auto, as mindcv's
# train.py runs), and mindcv's Adam betas are fixed at the zoo's defaults
NOT_IN_RECIPES = ("device_target", "beta1", "beta2")


def _for_mindcv(data: dict) -> dict:
    """The recipe as ``python -m zoo.mindcv`` hands it to mindcv: zoo-only keys left out."""
    return {k: v for k, v in data.items() if k not in ZOO_ONLY}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: os.path.relpath(p, ROOT))
def test_recipe_means_the_same_to_mindcv_030(recipe):
    """Every key mindcv reads gets the value the zoo's trainer reads: mindcv 0.3.0's defaults fill what a recipe
    leaves out, so a recipe writes out every key whose default differs (zoo-only keys, which the runner leaves
    out for mindcv, aside)."""
    data = _recipe(recipe)
    assert [k for k in data if k in NOT_IN_RECIPES] == [], "no recipe needs these (mindcv's parser rejects them)"
    mindcv_values = {**MINDCV_030_DEFAULTS, **_for_mindcv(data)}
    assert _differences(load_config(recipe), mindcv_values) == {}


def test_zoo_only_keys_are_few_and_documented():
    doc = open(os.path.join(ROOT, "docs", "training.md")).read()
    section = doc.split("## Zoo-only keys", 1)[1].split("\n## ", 1)[0]
    assert [k for k in ZOO_ONLY if f"`{k}`" not in section] == [], "docs/training.md lists every zoo-only key"
    from zoo.train.distill import KEYS as DISTILLATION  # a capability mindcv lacks (docs/distillation.md)

    assert len([k for k in ZOO_ONLY if k not in DISTILLATION]) <= 10


@needs_checkout
def test_defaults_table_is_mindcv_030s_parser():
    config = _mindcv_config()
    _, parser = config.create_parser()
    real = {a.dest: a.default for a in parser._actions if a.dest not in ("help", "config")}
    assert real.keys() == MINDCV_030_DEFAULTS.keys()
    assert [k for k in real if not _same(real[k], MINDCV_030_DEFAULTS[k])] == []


@needs_checkout
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: os.path.relpath(p, ROOT))
def test_recipe_parses_in_mindcvs_own_parser(recipe, tmp_path):
    """mindcv 0.3.0's own parse_args reads the recipe (as is when it has no zoo-only key, else without them, as
    the runner gives it) to the values the zoo reads."""
    config = _mindcv_config()
    data = _recipe(recipe)
    if _for_mindcv(data) != data:
        recipe_for_mindcv = tmp_path / os.path.basename(recipe)
        recipe_for_mindcv.write_text(yaml.safe_dump(_for_mindcv(data)))
    else:
        recipe_for_mindcv = recipe
    args = config.parse_args(["-c", str(recipe_for_mindcv)])
    assert _differences(load_config(recipe), vars(args)) == {}


@needs_checkout
def test_the_model_config_gives_mindcv_the_preprocessing(tmp_path):
    """What mindcv's parse_args returns inside the runner: unset preprocessing keys from the model's config."""
    from zoo import integrations, mindcv as runner

    integrations.register_mindcv()
    config = _mindcv_config()
    notes = []
    runner._wrap_parse_args(config, str(tmp_path), notes.append)
    a = config.parse_args(["--model", "van_b0"])
    assert (a.image_resize, a.interpolation, a.crop_pct, a.mean, a.std) == (224, "bicubic", 0.9, [127.5] * 3,
                                                                          [127.5] * 3)
    a = config.parse_args(["--model", "triplet_resnet18_cifar", "--interpolation", "nearest"])
    assert (a.image_resize, a.interpolation) == (32, "nearest")  # given on the command line: kept
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: zoo_halonet_50t\ncrop_pct: 0.8\nframework: ms\ndevice_target: CPU\n")
    a = config.parse_args(["-c", str(recipe)])
    assert (a.image_resize, a.crop_pct, a.interpolation) == (256, 0.8, "bilinear")
    assert any("zoo-only keys" in n and "framework, device_target" in n for n in notes)
    a = config.parse_args(["--model", "resnet18"])  # one of mindcv's own: untouched
    assert (a.image_resize, a.interpolation, a.crop_pct) == (224, "bilinear", 0.875)


@needs_checkout
def test_mindcv_train_and_validate_run_a_zoo_model(tmp_path):
    """mindcv's own train.py and validate.py, run exactly as docs/training.md says, on a zoo model in GRAPH mode
    on the CPU: train writes checkpoints the zoo reads, validate evaluates the best one."""
    from zoo.data.synthetic import make_image_folder

    make_image_folder(str(tmp_path / "DATA"), classes=4, per_class=4, size=32)
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT)
    env.pop("ZOO_MINDCV_DIR", None)

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "zoo.mindcv", "--mindcv-dir", CHECKOUT, *args], capture_output=True,
                           text=True, timeout=900, cwd=str(tmp_path), env=env)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        return r.stdout + r.stderr

    recipe = os.path.join(ROOT, "configs", "triplet", "triplet_resnet18_cifar_smoke.yaml")
    out = run("train.py", "-c", recipe, "--data_dir", "DATA", "--ckpt_save_dir", "runs/r18_mindcv", "--epoch_size", "1")
    assert "Model: triplet_resnet18_cifar" in out and "Epoch: [1/1], batch: [2/2]" in out, out[-3000:]
    best = tmp_path / "runs" / "r18_mindcv" / "triplet_resnet18_cifar_best.ckpt"
    assert os.path.isfile(best) and os.path.isfile(tmp_path / "runs" / "r18_mindcv" / "triplet_resnet18_cifar-1_2.ckpt")
    out = run("validate.py", "--model", "triplet_resnet18_cifar", "--num_classes", "4", "--data_dir", "DATA",
              "--ckpt_path", "runs/r18_mindcv/triplet_resnet18_cifar_best.ckpt", "--num_parallel_workers", "2")
    assert "triplet_resnet18_cifar: from its model config: image_resize 32" in out, out[-3000:]
    assert "'Top_1_Accuracy'" in out, out[-3000:]
    import zoo  # mindcv's checkpoint holds the zoo's MindSpore names: the zoo reads it, on both frameworks
    assert zoo.create_model("triplet_resnet18_cifar", "pt", checkpoint=str(best)).fc.out_features == 4


def test_runner_says_where_mindcvs_scripts_are(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ZOO_MINDCV_DIR"}
    r = subprocess.run([sys.executable, "-m", "zoo.mindcv", "--mindcv-dir", str(tmp_path), "train.py", "--model",
                        "van_b0"], capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                       env=dict(env, PYTHONPATH=ROOT))
    assert r.returncode == 2
    assert "not part of the mindcv package" in r.stderr and "--mindcv-dir" in r.stderr, r.stderr
