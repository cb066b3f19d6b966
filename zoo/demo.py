"""``make demo`` / ``zoo demo``: train on one framework, prove the result on the other.

1. Train a registered model (``configs/triplet/triplet_resnet18_cifar_digits.yaml``: Triplet Attention
   ResNet-18 on scikit-learn's bundled handwritten digits, nothing downloaded) with MindSpore in GRAPH mode.
2. Convert the best checkpoint to PyTorch with the converter (``zoo convert``).
3. Validate both frameworks on the held-out split with the model's preprocessing: the same inputs, so
   the accuracies must be equal; report the largest logit difference.
4. Measure the twins' parity on random weights (forward in both MindSpore modes, gradients, round trip).
5. Save the training curve (``runs/demo/training_curve.png``) and print one report with a verdict.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "triplet",
                      "triplet_resnet18_cifar_digits.yaml")


def plot_history(history_path: str, out_png: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_path) as f:
        h = json.load(f)
    steps = np.array(h["steps"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps[:, 0], steps[:, 1], lw=0.8, color="tab:blue", alpha=0.5, label="step")
    if len(steps) >= 10:
        k = max(1, len(steps) // 20)
        smooth = np.convolve(steps[:, 1], np.ones(k) / k, mode="valid")
        a.plot(steps[k - 1:, 0], smooth, color="tab:blue", label=f"mean of {k}")
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    a.set_yscale("log")
    a.legend()
    ep = [e["epoch"] for e in h["epochs"] if "top1" in e]
    b.plot(ep, [e["top1"] for e in h["epochs"] if "top1" in e], "o-", label="top-1")
    b.plot(ep, [e["top5"] for e in h["epochs"] if "top5" in e], "s--", label="top-5")
    b.set_xlabel("epoch")
    b.set_ylabel("validation accuracy (%)")
    b.set_ylim(0, 100)
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def run(out_dir: str = "runs/demo", recipe: str = RECIPE, epochs: int = None) -> int:
    from zoo import parity
    from zoo.convert import convert_file
    from zoo.train.config import load_config
    from zoo.train.loop import train
    from zoo.validate import validate

    t0 = time.perf_counter()
    train_dir = os.path.join(out_dir, "train")
    if os.path.isdir(train_dir):
        shutil.rmtree(train_dir)  # the demo's own previous run
    os.makedirs(out_dir, exist_ok=True)
    over = {"ckpt_save_dir": train_dir}
    if epochs:
        over["epoch_size"] = str(epochs)
    cfg = load_config(recipe, over)
    print(f"== 1. training {cfg.model} on {cfg.dataset} with MindSpore ({'GRAPH' if cfg.mode == 0 else 'PYNATIVE'} "
          f"mode, {cfg.epoch_size} epochs)", flush=True)
    summary = train(cfg)
    t_train = time.perf_counter() - t0

    print("\n== 2. converting the best checkpoint to PyTorch", flush=True)
    ms_ckpt = os.path.join(train_dir, f"{cfg.model}_best.ckpt")
    pt_ckpt = os.path.join(out_dir, f"{cfg.model}_digits.pth")
    loaded = convert_file(cfg.model, ms_ckpt, pt_ckpt, force=True)
    for note in loaded.notes:
        print(f"   note: {note}")
    print(f"   {ms_ckpt} -> {pt_ckpt}")

    print("\n== 3. validating on both frameworks (same preprocessed inputs)", flush=True)
    res = {}
    for fw, ckpt in (("ms", ms_ckpt), ("pt", pt_ckpt)):
        res[fw] = validate(cfg.model, ckpt, cfg.data_dir, fw, dataset=cfg.dataset, split=cfg.val_split,
                           keep_logits=True)
        r = res[fw]
        print(f"   {'MindSpore' if fw == 'ms' else 'PyTorch  '}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  "
              f"loss {r['loss']:.4f}  ({r['count']} images, {r['seconds']:.1f}s)")
    lm, lp = res["ms"]["logits"], res["pt"]["logits"]
    logit_err = float(np.abs(lm - lp).max()) / max(1.0, float(np.abs(lp).max()))
    agree = float((lm.argmax(1) == lp.argmax(1)).mean()) * 100

    print("\n== 4. parity of the twins on random weights", flush=True)
    pr = parity.check(cfg.model, input_size=(3, cfg.image_resize, cfg.image_resize))
    print(parity.format_table([pr]))

    png = os.path.join(out_dir, "training_curve.png")
    plot_history(os.path.join(train_dir, "history.json"), png, f"{cfg.model} on {cfg.dataset} (MindSpore, CPU)")
    elapsed = time.perf_counter() - t0
    chance = 100.0 / cfg.num_classes
    same = res["ms"]["top1"] == res["pt"]["top1"] and res["ms"]["top5"] == res["pt"]["top5"]
    learned = res["ms"]["top1"] >= max(5 * chance, 50.0)
    ok = same and learned and pr.passed and logit_err <= parity.FWD_BOUND
    report = [
        "", "== report",
        f"model            {cfg.model} ({pr.n_params:,} parameters), {cfg.dataset}: {summary.get('epoch')} epochs, "
        f"best epoch {summary.get('best_epoch')}",
        f"training         MindSpore GRAPH on {cfg.device_target}: {t_train:.0f}s, "
        f"{summary.get('step_time', 0):.2f}s/step (batch {cfg.batch_size}); "
        f"final train loss {summary.get('train_loss', float('nan')):.4f}",
        f"accuracy         MindSpore top-1 {res['ms']['top1']:.2f}% / top-5 {res['ms']['top5']:.2f}%   "
        f"PyTorch top-1 {res['pt']['top1']:.2f}% / top-5 {res['pt']['top5']:.2f}%   "
        f"({'equal' if same else 'DIFFERENT'}; chance {chance:.0f}%)",
        f"same prediction  {agree:.2f}% of images; largest logit difference {logit_err:.1e} (bound 1e-4)",
        f"twin parity      forward {max(pr.fwd.values(), default=float('nan')):.1e}, gradients "
        f"{pr.grad_ratio:.2f} of bound, round trip {'identical' if pr.roundtrip else 'DIFFERS'}"
        if pr.grad_ratio is not None else f"twin parity      FAILED: {pr.error}",
        f"training curve   {png}",
        f"time             {elapsed:.0f}s",
        f"verdict          {'PASS' if ok else 'FAIL'}: trained on MindSpore, "
        + ("the converted PyTorch model gives the same accuracy" if same else "the accuracies differ")
        + ("" if learned else "; the model did not learn well above chance"),
    ]
    print("\n".join(report))
    with open(os.path.join(out_dir, "report.txt"), "w") as f:
        f.write("\n".join(report[1:]) + "\n")
    return 0 if ok else 1
