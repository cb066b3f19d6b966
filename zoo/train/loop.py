"""The training loop, the same for both frameworks.

    python tools/train.py -c configs/<family>/<recipe>.yaml [--key value ...]          # MindSpore
    msrun --worker_num=8 --local_worker_num=8 tools/train.py -c ...                    # MindSpore, data parallel
    torchrun --nproc_per_node=2 tools/train.py -c ... --framework pt                   # PyTorch (DDP)

A backend (``zoo.train.ms.MindSporeBackend`` or ``zoo.train.pt.PyTorchBackend``) builds the model,
loss, optimizer and train step and saves and loads its state; everything else happens here, once:
the datasets and the per-epoch input pipeline (``zoo.data.ms``: both frameworks consume the same
batches in the same order), logging, evaluation, the checkpoint policy, resume and the stop on a
non-finite loss.

Outputs in ``ckpt_save_dir``: ``args.yaml`` (the resolved recipe), ``rank<N>.log``, ``result.log`` (one
row per epoch), ``<model>-<epoch>_<steps><suffix>`` per epoch (the newest ``keep_checkpoint_max``),
``<model>_best<suffix>``, ``last<suffix>`` (what ``--resume auto`` continues from) and ``history.json``
(the loss of every step and each epoch's metrics); the suffix is
``.ckpt`` for MindSpore and ``.pth`` for PyTorch. Checkpoints hold the weights, the optimizer state and the
training position; they are written to a temporary file and renamed, so none is ever half-written, and
``zoo convert`` reads them (dropping the optimizer state).
"""
from __future__ import annotations

import glob
import logging
import os
import sys
import time

import numpy as np

from zoo.files import atomic_write
from zoo.train.config import TrainConfig, to_dict

EXIT_DIVERGED = 3
log = logging.getLogger("zoo.train")


from zoo.errors import Diverged, TrainingError  # noqa: E402,F401  (re-exported)


def make_backend(cfg: TrainConfig):
    if cfg.framework == "pt":
        from zoo.train.pt import PyTorchBackend
        return PyTorchBackend(cfg)
    from zoo.train.ms import MindSporeBackend
    return MindSporeBackend(cfg)


def build_schedule(cfg: TrainConfig, steps_per_epoch: int) -> list:
    """The per-step learning rates (mindcv's create_scheduler: plain Python, used by both backends)."""
    from mindcv.scheduler import create_scheduler

    if cfg.scheduler == "constant":  # mindcv warns about decay epochs even where none apply
        logging.getLogger("mindcv.scheduler.scheduler_factory").setLevel(logging.ERROR)
    return [float(v) for v in create_scheduler(
        steps_per_epoch, scheduler=cfg.scheduler, lr=cfg.lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
        warmup_factor=cfg.warmup_factor, decay_epochs=cfg.decay_epochs, decay_rate=cfg.decay_rate,
        milestones=cfg.multi_step_decay_milestones, num_epochs=cfg.epoch_size, num_cycles=cfg.num_cycles,
        cycle_decay=cfg.cycle_decay, lr_epoch_stair=cfg.lr_epoch_stair)]


def decayed(name: str, ndim: int, cfg: TrainConfig) -> bool:
    """Whether weight decay applies to a parameter (``weight_decay_filter``; names in PyTorch or MindSpore form)."""
    if cfg.weight_decay_filter == "1d_and_bias":  # timm's rule
        return not (ndim <= 1 or name.endswith(".bias"))
    if cfg.weight_decay_filter == "norm_and_bias":  # mindcv's rule, by name
        return not any(s in name for s in ("beta", "gamma", "bias"))
    return True  # 'disable': every parameter (and 'auto', which only MindSpore interprets)


def setup_logging(cfg: TrainConfig, rank: int) -> None:
    os.makedirs(cfg.ckpt_save_dir, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.FileHandler(os.path.join(cfg.ckpt_save_dir, f"rank{rank}.log"))]
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stdout))
    for name in ("zoo.train", "zoo.data"):  # unreadable-image reports go to the same places
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for h in list(logger.handlers):
            logger.removeHandler(h)
        for h in handlers:
            h.setFormatter(fmt)
            logger.addHandler(h)


def evaluate(backend, source, cfg: TrainConfig) -> dict:
    """Top-1, top-5 and mean cross-entropy over the whole split (ranks share it, then all-reduce)."""
    from zoo.data.ms import batches, create_loader

    loader, _, _ = create_loader(source, cfg, training=False, rank=backend.rank, world=backend.world)
    backend.set_train(False)
    totals = np.zeros(4)  # correct@1, correct@5, loss sum, count
    for x, y in batches(loader):
        totals += score(backend.logits(x), y)
    totals = backend.allreduce(totals)
    n = max(totals[3], 1)
    return {"top1": 100 * totals[0] / n, "top5": 100 * totals[1] / n, "loss": totals[2] / n, "count": int(totals[3])}


def score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[correct@1, correct@5, cross-entropy sum, count] of a batch."""
    logits = logits.astype(np.float64)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return np.array([(top5[:, 0] == labels).sum(), (top5 == labels[:, None]).any(axis=1).sum(),
                     -logp[np.arange(len(labels)), labels].sum(), len(labels)], np.float64)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training; returns the final summary. Raises TrainingError / Diverged."""
    import zoo
    from zoo.data.ms import batches, create_loader
    from zoo.data.sources import open_dataset
    from zoo.train import distill

    distill.check(cfg)  # a teacher without weights, or weights out of range: before anything starts
    backend = make_backend(cfg)
    rank, world = backend.rank, backend.world
    setup_logging(cfg, rank)
    entry = zoo.get_entry(cfg.model)  # unknown model: KeyError with suggestions, before any data work

    train_src = open_dataset(cfg.dataset, cfg.data_dir, cfg.train_split)
    val_src = open_dataset(cfg.dataset, cfg.data_dir, cfg.val_split, train_src.classes) if cfg.val_while_train else None
    if train_src.num_classes != cfg.num_classes:
        raise TrainingError(f"num_classes is {cfg.num_classes} but {cfg.dataset} at {cfg.data_dir} has "
                            f"{train_src.num_classes} classes; set num_classes: {train_src.num_classes}")
    from zoo.data.ms import train_steps

    steps = train_steps(len(train_src), cfg, world)
    if steps < 1:
        raise TrainingError(f"{len(train_src)} training samples over {world} rank(s) make no batch of {cfg.batch_size}")
    schedule = build_schedule(cfg, steps)
    backend.build(schedule)

    suffix = backend.suffix
    last_path = os.path.join(cfg.ckpt_save_dir, "last" + suffix)
    start_epoch, start_step, best = 0, 0, {"top1": -1.0, "epoch": -1}
    if cfg.resume:
        path = last_path if cfg.resume == "auto" else cfg.resume
        saved = backend.load(path)
        start_epoch, start_step = int(saved["epoch"]), int(saved["step"])
        best = {"top1": float(saved.get("best_top1", -1.0)), "epoch": int(saved.get("best_epoch", -1))}
        if int(saved.get("world", world)) != world or int(saved.get("batch_size", cfg.batch_size)) != cfg.batch_size:
            log.warning("resuming with %d rank(s) x batch %d, the run had %d x %d: the data order changes from here",
                        world, cfg.batch_size, int(saved.get("world", 0)), int(saved.get("batch_size", 0)))
        log.info("resumed from %s: epoch %d, step %d", path, start_epoch + 1, start_step)

    if rank == 0:
        import yaml
        with open(os.path.join(cfg.ckpt_save_dir, "args.yaml"), "w") as f:
            yaml.safe_dump({**to_dict(cfg), "world_size": world, "global_batch_size": cfg.global_batch(world)}, f,
                           sort_keys=False)
    log.info("model %s (%s), %d parameters; %s: %d train / %s val samples, %d classes", cfg.model, entry.family,
             backend.n_params(), cfg.dataset, len(train_src), len(val_src) if val_src else "-", train_src.num_classes)
    log.info("ranks %d, batch %d per rank, global batch %d, %d steps per epoch, %d epochs, %s",
             world, cfg.batch_size, cfg.global_batch(world), steps, cfg.epoch_size, backend.describe())

    result_path = os.path.join(cfg.ckpt_save_dir, "result.log")
    meter = distill.TermMeter(backend)  # each loss term of a distillation (none otherwise)
    term_cols = [f"train_{k}" for k in (backend.loss_terms() or {}) if k != "loss"]
    if rank == 0 and not os.path.exists(result_path):
        with open(result_path, "w") as f:
            f.write("\t".join(["epoch", "train_loss"] + term_cols + ["val_top1", "val_top5", "val_loss", "lr",
                                                                     "train_time_s", "eval_time_s", "img_per_s"])
                    + "\n")

    def position(epoch, step):  # plain Python numbers (a .pth is read back with weights_only=True)
        return {"epoch": int(epoch), "step": int(step), "global_step": int(epoch * steps + step),
                "best_top1": float(best["top1"]), "best_epoch": int(best["epoch"]), "world": int(world),
                "batch_size": int(cfg.batch_size), "seed": int(cfg.seed)}

    def save(path, epoch, step):
        try:
            backend.save(path, position(epoch, step))
        except Diverged as err:
            good = last_path if os.path.exists(last_path) else None
            raise Diverged(str(err) + (f" The last good checkpoint is {good}." if good else " No checkpoint was saved yet.")
                           + " Lower the learning rate, check the data, or use a loss scale with AMP.") from None

    def save_last(epoch, step):
        if rank == 0:
            save(last_path, epoch, step)
        if cfg.ckpt_save_all_ranks and rank:
            save(os.path.join(cfg.ckpt_save_dir, f"rank{rank}", "last" + suffix), epoch, step)

    history_path = os.path.join(cfg.ckpt_save_dir, "history.json")
    history = {"steps": [], "epochs": []}
    if cfg.resume and os.path.exists(history_path):
        import json
        with open(history_path) as f:
            history = json.load(f)
        history["steps"] = [h for h in history["steps"] if h[0] < start_epoch * steps + start_step]
        history["epochs"] = [h for h in history["epochs"] if h["epoch"] <= start_epoch]

    summary = {}
    for epoch in range(start_epoch, cfg.epoch_size):
        skip = start_step if epoch == start_epoch else 0
        loader, _, indices = create_loader(train_src, cfg, training=True, epoch=epoch, rank=rank, world=world,
                                           start_step=skip)
        if cfg.record_samples:
            with open(os.path.join(cfg.ckpt_save_dir, f"samples_rank{rank}.txt"), "a") as f:
                f.write(f"epoch {epoch + 1} from step {skip}: " + " ".join(map(str, indices.tolist())) + "\n")
        backend.set_train(True)
        distill.at_epoch_start(backend, cfg, epoch, skip)
        t_epoch = t_int = time.perf_counter()
        losses, seen_int = [], 0
        for i, (x, y) in enumerate(batches(loader), start=skip):
            loss, overflow = backend.train_step(x, y, schedule[min(epoch * steps + i, len(schedule) - 1)])
            loss = float(backend.allreduce(np.array([loss]))[0] / world)
            if not np.isfinite(loss):
                if overflow and cfg.drop_overflow_update:
                    log.warning("epoch %d step %d: gradient overflow, update skipped (loss scale adjusts)", epoch + 1, i + 1)
                    continue
                good = last_path if os.path.exists(last_path) else None
                raise Diverged(f"the loss became {loss} at epoch {epoch + 1}, step {i + 1}: stopping. "
                               + (f"The last good checkpoint is {good}." if good else "No checkpoint was saved yet.")
                               + " Lower the learning rate, check the data, or use a loss scale with AMP.")
            losses.append(loss)
            meter.add()
            history["steps"].append([epoch * steps + i, loss])
            seen_int += len(y)
            if (i + 1) % cfg.log_interval == 0 or i + 1 == steps:
                dt = time.perf_counter() - t_int
                todo = (cfg.epoch_size - epoch) * steps - (i + 1)
                eta = (time.perf_counter() - t_epoch) / max(i + 1 - skip, 1) * todo
                log.info("epoch [%d/%d] step [%d/%d] loss %.4f%s lr %.6f img/s %.1f (global %.1f) eta %s",
                         epoch + 1, cfg.epoch_size, i + 1, steps, loss, meter.interval_text(),
                         schedule[min(epoch * steps + i, len(schedule) - 1)], seen_int / dt, seen_int * world / dt,
                         _hms(eta))
                t_int, seen_int = time.perf_counter(), 0
            if cfg.ckpt_save_steps and (i + 1) % cfg.ckpt_save_steps == 0 and i + 1 < steps:
                save_last(epoch, i + 1)
        train_time = time.perf_counter() - t_epoch
        train_loss = float(np.mean(losses)) if losses else float("nan")
        terms = meter.epoch_means()
        backend.reduce_bn()

        metrics, eval_time = {}, 0.0
        if val_src is not None and ((epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epoch_size):
            t = time.perf_counter()
            metrics = evaluate(backend, val_src, cfg)
            eval_time = time.perf_counter() - t
            log.info("epoch [%d/%d] validation: top-1 %.2f%%, top-5 %.2f%%, loss %.4f (%d samples, %.1fs)",
                     epoch + 1, cfg.epoch_size, metrics["top1"], metrics["top5"], metrics["loss"], metrics["count"],
                     eval_time)
            if metrics["top1"] > best["top1"]:
                best = {"top1": metrics["top1"], "epoch": epoch + 1}

        save_last(epoch + 1, 0)
        ran = len(losses) * cfg.batch_size
        if rank == 0:
            if (epoch + 1) % cfg.ckpt_save_interval == 0 or epoch + 1 == cfg.epoch_size:
                save(os.path.join(cfg.ckpt_save_dir, f"{cfg.model}-{epoch + 1}_{steps}{suffix}"), epoch + 1, 0)
                _prune(cfg, suffix)
            if metrics and best["epoch"] == epoch + 1:
                save(os.path.join(cfg.ckpt_save_dir, f"{cfg.model}_best{suffix}"), epoch + 1, 0)
            lr_now = schedule[min((epoch + 1) * steps - 1, len(schedule) - 1)]
            history["epochs"].append({"epoch": epoch + 1, "train_loss": train_loss, **terms, "lr": lr_now, **metrics})
            _write_json(history_path, history)
            with open(result_path, "a") as f:
                f.write(f"{epoch + 1}\t{train_loss:.4f}\t"
                        + "".join(f"{terms.get(c, float('nan')):.4g}\t" for c in term_cols)
                        + f"{_m(metrics, 'top1')}\t{_m(metrics, 'top5')}\t"
                        f"{_m(metrics, 'loss', 4)}\t{lr_now:.6g}\t{train_time:.1f}\t{eval_time:.1f}\t"
                        f"{ran * world / max(train_time, 1e-9):.1f}\n")
        log.info("epoch [%d/%d] done: train loss %.4f%s, %.1fs, %.1f img/s (global)", epoch + 1, cfg.epoch_size,
                 train_loss, "".join(f", {k[6:]} {v:.4g}" for k, v in terms.items()), train_time,
                 ran * world / max(train_time, 1e-9))
        summary = {"epoch": epoch + 1, "train_loss": train_loss, **{f"val_{k}": v for k, v in metrics.items()},
                   "best_top1": best["top1"], "best_epoch": best["epoch"], "train_time": train_time,
                   "step_time": train_time / max(len(losses), 1), "world": world}
    if train_src.bad_files:
        log.warning("%d unreadable image(s) were skipped: %s", len(train_src.bad_files), ", ".join(train_src.bad_files[:10]))
    log.info("finished: %s", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    backend.finish()
    return summary


def refuse_non_finite(bad, state: dict, path: str) -> None:
    """The backends' check before saving: weights that became NaN/inf stop the run, the last good file stays."""
    if bad:
        raise Diverged(f"the weights became non-finite ({', '.join(bad[:3])}) after epoch {state['epoch'] + 1} "
                       f"step {state['step']}: stopping without saving {os.path.basename(path)}.")


def _write_json(path: str, obj) -> None:
    import json

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f)

    atomic_write(path, write)


def _prune(cfg: TrainConfig, suffix: str) -> None:
    files = glob.glob(os.path.join(cfg.ckpt_save_dir, f"{glob.escape(cfg.model)}-*_*{suffix}"))
    files.sort(key=lambda p: int(os.path.basename(p)[len(cfg.model) + 1:].split("_")[0]))
    for old in files[:-cfg.keep_checkpoint_max] if cfg.keep_checkpoint_max > 0 else []:
        os.remove(old)


def _m(metrics: dict, key: str, digits: int = 2) -> str:
    return f"{metrics[key]:.{digits}f}" if key in metrics else "-"


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def distributed_launch() -> bool:
    """Launched by msrun (scheduler or worker) or torchrun with more than one process."""
    msrun = os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") and int(os.environ.get("MS_WORKER_NUM", "1")) > 1
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ
    return msrun or torchrun


def main(argv=None) -> int:
    """``tools/train.py`` / ``zoo train``: -c RECIPE [--framework ms|pt] [--key value ...]."""
    import argparse

    from zoo.data.sources import DatasetError
    from zoo.train.config import ConfigError, keys_help, load_config, parse_overrides

    p = argparse.ArgumentParser(prog="zoo train", description="Train a registered model from a YAML recipe (mindcv key "
                                "names) with MindSpore (default) or PyTorch (--framework pt); any key can be "
                                "overridden with --key value. Launch with msrun (MindSpore) or torchrun (PyTorch) for "
                                "data-parallel training.", epilog="`--help-keys` lists every key.")
    p.add_argument("-c", "--config", help="YAML recipe (e.g. configs/triplet/triplet_resnet50_imagenet.yaml)")
    p.add_argument("--help-keys", action="store_true", help="list every config key with its default and meaning")
    args, rest = p.parse_known_args(argv)
    if args.help_keys:
        print(keys_help())
        return 0
    try:
        cfg = load_config(args.config, parse_overrides(rest))
        train(cfg)
    except (ConfigError, DatasetError, TrainingError, KeyError) as err:
        msg = err.args[0] if err.args else str(err)
        print(f"zoo train: error: {msg}", file=sys.stderr)
        if logging.getLogger("zoo.train").handlers:
            log.error("%s", msg)
        return EXIT_DIVERGED if isinstance(err, Diverged) else 2
    return 0
