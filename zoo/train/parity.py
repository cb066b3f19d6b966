"""Training parity: N optimizer steps on each framework, from identical weights and batches.

``zoo parity MODEL --train-steps N`` builds both trainer backends (``zoo.train.ms``, ``zoo.train.pt``)
exactly as ``zoo train`` does (same optimizer, weight-decay groups, per-step learning rates), copies one
set of generic weights into both through the converter, feeds both the same batches, and compares:

- the loss of every step: ``|loss_ms - loss_pt| / |loss_pt|``;
- the weight updates: for every parameter ``||dw_ms - dw_pt|| / ||dw_pt||`` with ``dw = w_final - w_start``
  (relative to what training changed, not to the weights, which barely move in a few steps).

Dropout and drop-path are off. With ``--recipe``, a recipe that mixes batches (the small-image
pipeline's CutMix/Mixup) has the random batches mixed the same way, so the loss on soft targets (with
the recipe's label smoothing) is compared too. The default optimizers are the recipes' kinds: SGD with momentum (weight
decay on every parameter, step decay) and AdamW (decay on matrices only, warmup + cosine), each with
its learning rate changing every step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

OPTIMIZERS = {
    "momentum": dict(opt="momentum", lr="0.005", momentum="0.9", weight_decay="0.0005", weight_decay_filter="disable",
                     scheduler="step_decay", decay_epochs="2", decay_rate="0.5"),
    "adamw": dict(opt="adamw", lr="0.001", weight_decay="0.05", weight_decay_filter="1d_and_bias",
                  scheduler="warmup_cosine_decay", warmup_epochs="2", warmup_factor="0.1", min_lr="0.00001",
                  eps="1e-8"),
}


@dataclass
class TrainParityResult:
    model: str
    opt: str
    steps: int
    losses_ms: List[float] = field(default_factory=list)
    losses_pt: List[float] = field(default_factory=list)
    loss_rel: float = float("nan")  # worst over steps
    update_rel: float = float("nan")  # worst over parameters
    update_worst: str = ""
    update_median: float = float("nan")
    teacher: Optional[str] = None
    terms_ms: List[dict] = field(default_factory=list)  # distillation: each step's loss terms
    terms_pt: List[dict] = field(default_factory=list)
    term_rel: Dict[str, float] = field(default_factory=dict)  # worst |ms - pt| / |pt| over steps, per term
    # the same measures after an earlier step (``also_after``): step -> {loss_rel, update_rel, update_median, ...}
    after: Dict[int, dict] = field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[str] = None


DISTILL = dict(at_beta="1000", at_mode="code", kd_alpha="0.9", kd_temperature="4")  # the reference's AT + KD


def _teacher_file(teacher: str, num_classes: int, size, seed: int, folder: str) -> str:
    """A teacher checkpoint with generic weights (the same file feeds both frameworks)."""
    import torch

    import zoo
    from zoo.parity import randomize_

    torch.manual_seed(seed)
    model = zoo.create_model(teacher, "pt", num_classes=num_classes)
    randomize_(model, seed, (16, *size))
    path = f"{folder}/teacher.pth"
    torch.save(model.state_dict(), path)
    return path


def train_parity(name: str, steps: int = 5, opt: str = "momentum", recipe: Optional[str] = None,
                 input_size: Optional[Sequence[int]] = None, batch: int = 4, seed: int = 0,
                 mode: int = 0, teacher: Optional[str] = None, also_after: Sequence[int] = ()) -> TrainParityResult:
    """Run ``steps`` steps of ``opt`` (a key of OPTIMIZERS, or the recipe's when ``recipe`` is given).

    ``also_after``: steps after which the losses so far and the updates so far are measured too (``res.after``),
    e.g. ``(1,)`` for the first step alone without a second run.

    ``teacher``: distil from this model (generic weights, one file for both frameworks) with the reference's
    AT + KD settings (``DISTILL``); each step's loss terms are compared too."""
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="zoo_train_parity_")
    import mindspore as ms
    import torch

    from zoo import registry
    from zoo.convert import core
    from zoo.parity import randomize_
    from zoo.train.config import load_config
    from zoo.train.loop import build_schedule
    from zoo.train.ms import MindSporeBackend
    from zoo.train.pt import PyTorchBackend

    entry = registry.get(name)
    size = tuple(input_size or entry.test_input_size or entry.input_size)
    res = TrainParityResult(name, "recipe" if recipe else opt, steps, teacher=teacher)
    t0 = time.perf_counter()
    try:
        extra = {k: str(v) for k, v in entry.test_kwargs.items()} if size != tuple(entry.input_size) else {}
        if extra:
            raise ValueError(f"{name} needs {extra} at {size}; give --input-size {entry.input_size[1]}")
        over = dict(model=name, num_classes=str(entry.num_classes), drop_rate="0.0", drop_path_rate="0.0",
                    epoch_size=str(steps), mode=str(mode), device_target="CPU", amp_level="O0", seed=str(seed))
        if not recipe:
            over.update(OPTIMIZERS[opt])
        if teacher:
            over.update(DISTILL, teacher_model=teacher, image_resize=str(size[1]), ckpt_save_dir=tmp.name,
                        teacher_ckpt_path=_teacher_file(teacher, entry.num_classes, size, seed + 7, tmp.name))
        cfg = load_config(recipe, over)
        res.opt = cfg.opt
        schedule = build_schedule(cfg, 1)  # one step per "epoch": the lr changes every step
        pt_b, ms_b = PyTorchBackend(cfg), MindSporeBackend(cfg)
        ms_b.cache_graphs = False  # a comparison in a temporary folder: nothing to reuse, no cache left on
        torch.manual_seed(seed)
        pt_b.build(schedule)
        randomize_(pt_b.model, seed, (16, *size))
        ms_b.build(schedule)
        sp = core.spec_of(pt_b.model)
        core.load_into_ms(ms_b.net, core.to_ms(core.pt_state(pt_b.model), sp))
        start = core.pt_state(pt_b.model)
        rng = np.random.default_rng(seed + 1)
        mixer = _recipe_mixer(cfg) if recipe else None
        pt_b.set_train(True)
        ms_b.set_train(True)
        for s in range(steps):
            x = rng.standard_normal((batch, *size)).astype(np.float32)
            y = rng.integers(0, cfg.num_classes, batch).astype(np.int32)
            if mixer is not None:  # the recipe's CutMix/Mixup: both frameworks get the same soft targets
                x, y = mixer(x, y, np.random.default_rng([seed, s, 2]))
            res.losses_pt.append(pt_b.train_step(x, y, schedule[s])[0])
            res.losses_ms.append(ms_b.train_step(x, y)[0])
            if teacher:
                res.terms_pt.append(dict(pt_b.loss_terms()))
                res.terms_ms.append(dict(ms_b.loss_terms()))
            if s + 1 in also_after and s + 1 < steps:
                res.after[s + 1] = _compare(res, pt_b, ms_b, sp, start)
        for k in (res.terms_pt[0] if res.terms_pt else {}):
            res.term_rel[k] = max(abs(m[k] - p[k]) / max(abs(p[k]), 1e-30) for m, p in zip(res.terms_ms, res.terms_pt))
        final = _compare(res, pt_b, ms_b, sp, start)
        res.loss_rel, res.update_rel, res.update_median = final["loss_rel"], final["update_rel"], final["update_median"]
        res.update_worst = final["update_worst"]
        ms.set_context(mode=ms.PYNATIVE_MODE)
    except Exception as err:
        res.error = f"{type(err).__name__}: {err}"
    finally:
        tmp.cleanup()
    res.seconds = time.perf_counter() - t0
    return res


def _compare(res: TrainParityResult, pt_b, ms_b, sp, start: dict) -> dict:
    """The losses so far (worst relative difference) and what training changed so far in each parameter,
    MindSpore against PyTorch (relative to PyTorch's change)."""
    from zoo.convert import core

    lp, lm = np.array(res.losses_pt), np.array(res.losses_ms)
    out = dict(steps=len(lp), loss_rel=float(np.max(np.abs(lm - lp) / np.maximum(np.abs(lp), 1e-12))))
    end_pt = core.pt_state(pt_b.model)
    end_ms = core.from_ms(core.ms_params(ms_b.net), sp)
    rels: Dict[str, float] = {}
    for k, p in pt_b.model.named_parameters():
        d_pt = end_pt[k].astype(np.float64) - start[k]
        d_ms = end_ms[k].astype(np.float64) - start[k]
        n = np.linalg.norm(d_pt)
        if n > 0:
            rels[k] = float(np.linalg.norm(d_ms - d_pt) / n)
    if not rels:
        raise ValueError("no parameter changed in PyTorch (a learning rate of 0 at every step?)")
    out["update_worst"], out["update_rel"] = max(rels.items(), key=lambda kv: kv[1])
    out["update_median"] = float(np.median(list(rels.values())))
    return out


def _recipe_mixer(cfg):
    """The recipe's batch mixing, if it trains through the small-image pipeline (zoo.data.augment)."""
    from zoo.data.augment import BatchMixer, uses_small_pipeline

    return BatchMixer.from_config(cfg, cfg.num_classes) if uses_small_pipeline(cfg) else None


def format_table(results) -> str:
    head = ("model", "optimizer", "steps", "loss rel (worst step)", "update rel (worst param)", "update rel (median)",
            "worst parameter", "time")
    rows = [(r.model, r.opt, str(r.steps), f"{r.loss_rel:.1e}", f"{r.update_rel:.1e}", f"{r.update_median:.1e}",
             r.update_worst if not r.error else f"ERROR {r.error.splitlines()[0][:80]}", f"{r.seconds:.0f}s")
            for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in rows]
    lines.append("loss rel: |loss_ms - loss_pt| / |loss_pt| per step; update rel: ||dw_ms - dw_pt|| / ||dw_pt||, "
                 "dw = final - initial weights.")
    for r in results:
        lines.append(f"  {r.model} {r.opt} losses pt: " + " ".join(f"{v:.5f}" for v in r.losses_pt))
        lines.append(f"  {r.model} {r.opt} losses ms: " + " ".join(f"{v:.5f}" for v in r.losses_ms))
        if r.terms_pt:
            lines.append(f"  {r.model} {r.opt} distilled from {r.teacher} (AT beta {DISTILL['at_beta']}, KD alpha "
                         f"{DISTILL['kd_alpha']}, T {DISTILL['kd_temperature']}); terms per step, pt | ms, worst rel:")
            for k, rel in r.term_rel.items():
                lines.append(f"    {k:<5} " + " ".join(f"{p[k]:.6g}|{m[k]:.6g}" for p, m in zip(r.terms_pt, r.terms_ms))
                             + f"   rel {rel:.1e}")
    return "\n".join(lines)
