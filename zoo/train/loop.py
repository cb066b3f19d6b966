"""The training loop, the same for both frameworks.

    python tools/train.py -c configs/<family>/<recipe>.yaml [--key value ...]          # MindSpore
    msrun --worker_num=8 --local_worker_num=8 tools/train.py -c ...                    # MindSpore, data parallel
    torchrun --nproc_per_node=2 tools/train.py -c ... --framework pt                   # PyTorch (DDP)

A backend (``zoo.train.ms.MindSporeBackend`` or ``zoo.train.pt.PyTorchBackend``) builds the model,
loss, optimizer and train step and saves and loads its state; everything else happens here, once:
the datasets and the per-epoch input pipeline (``zoo.data.ms``: both frameworks consume the same
batches in the same order), logging, evaluation, the checkpoint policy, resume and the stop on a
non-finite loss.

The order of a run: every key, the model's input size and the data are checked (``check_before_start``)
before a framework is initialised; rank 0 then takes the output folder (``zoo.train.rundir``: a folder that
holds a run is refused without ``--resume``, a lock keeps other runs out); then the model is built and the
epochs run (``train_one_epoch``; ``zoo.train.checkpoints.CheckpointSaver`` keeps last / per-epoch / best and
prunes; ``zoo.train.runlog.RunLog`` keeps history.json and result.log).

Outputs in ``ckpt_save_dir``: ``args.yaml`` (the resolved recipe), ``rank<N>.log``, ``result.log`` (one
row per epoch), ``<model>-<epoch>_<steps><suffix>`` per epoch (the newest ``keep_checkpoint_max``),
``<model>_best<suffix>``, ``last<suffix>`` (what ``--resume auto`` continues from) and ``history.json``
(the loss of every step and each epoch's metrics); the suffix is
``.ckpt`` for MindSpore and ``.pth`` for PyTorch. Checkpoints hold the weights, the optimizer state and the
training position; they are written to a temporary file and renamed, so none is ever half-written, and
``zoo convert`` reads them (dropping the optimizer state).
"""
from __future__ import annotations

import logging
import os
import sys
import time

import numpy as np

from zoo.errors import ConfigError, Diverged, TrainingError  # noqa: F401  (re-exported)
from zoo.metrics import score, summarize  # noqa: F401  (score re-exported)
from zoo.train import distill
from zoo.train.checkpoints import CheckpointSaver, resume
from zoo.train.common import (  # noqa: F401  (re-exported)
    EXIT_DIVERGED, decayed, distributed_launch, refuse_non_finite,
)
from zoo.train.config import TrainConfig, to_dict
from zoo.train.runlog import RunLog

log = logging.getLogger("zoo.train")


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
    from zoo.data.ms import create_loader

    loader, _, _ = create_loader(source, cfg, training=False, rank=backend.rank, world=backend.world)
    backend.set_train(False)
    totals = np.zeros(4)  # correct@1, correct@5, loss sum, count
    for x, y in _batches(loader, source):
        totals += score(backend.logits(x), y)
    return summarize(backend.allreduce(totals))


def _batches(loader, source):
    """The loader's batches; a split with no readable image ends in the reader's DatasetError, not in
    the traceback MindSpore's dataset engine wraps around it."""
    from zoo.data.ms import batches

    try:
        yield from batches(loader)
    except Exception:
        if source.error is not None:
            raise source.error from None
        raise


def lr_at(schedule: list, global_step: int) -> float:
    return schedule[min(global_step, len(schedule) - 1)]


def train_one_epoch(backend, cfg: TrainConfig, source, epoch: int, steps: int, schedule: list, skip: int,
                    saver: CheckpointSaver, runlog: RunLog, meter=None) -> dict:
    """Epoch ``epoch`` (0-based) from step ``skip``: the steps, their log lines, mid-epoch ``last`` saves.

    ``meter`` (``zoo.train.distill.TermMeter``) averages a distillation's loss terms. Returns the epoch's mean
    loss (and terms), the number of images this rank trained on and the time."""
    from zoo.data.ms import create_loader

    rank, world = backend.rank, backend.world
    loader, _, indices = create_loader(source, cfg, training=True, epoch=epoch, rank=rank, world=world,
                                       start_step=skip)
    if cfg.record_samples:
        with open(os.path.join(cfg.ckpt_save_dir, f"samples_rank{rank}.txt"), "a") as f:
            f.write(f"epoch {epoch + 1} from step {skip}: " + " ".join(map(str, indices.tolist())) + "\n")
    backend.set_train(True)
    distill.at_epoch_start(backend, cfg, epoch, skip)
    t_epoch = t_int = time.perf_counter()
    losses, seen_int = [], 0
    for i, (x, y) in enumerate(_batches(loader, source), start=skip):
        lr = lr_at(schedule, epoch * steps + i)
        loss, overflow = backend.train_step(x, y, lr)
        loss = float(backend.allreduce(np.array([loss]))[0] / world)
        if not np.isfinite(loss):
            if overflow and cfg.drop_overflow_update:
                log.warning("epoch %d step %d: gradient overflow, update skipped (loss scale adjusts)",
                            epoch + 1, i + 1)
                continue
            raise saver.diverged(f"the loss became {loss} at epoch {epoch + 1}, step {i + 1}: stopping.")
        losses.append(loss)
        if meter is not None:
            meter.add()
        runlog.step(epoch * steps + i, loss)
        seen_int += len(y)
        if (i + 1) % cfg.log_interval == 0 or i + 1 == steps:
            dt = time.perf_counter() - t_int
            todo = (cfg.epoch_size - epoch) * steps - (i + 1)
            eta = (time.perf_counter() - t_epoch) / max(i + 1 - skip, 1) * todo
            log.info("epoch [%d/%d] step [%d/%d] loss %.4f%s lr %.6f img/s %.1f (global %.1f) eta %s",
                     epoch + 1, cfg.epoch_size, i + 1, steps, loss, meter.interval_text() if meter else "", lr,
                     seen_int / dt, seen_int * world / dt, _hms(eta))
            t_int, seen_int = time.perf_counter(), 0
        if cfg.ckpt_save_steps and (i + 1) % cfg.ckpt_save_steps == 0 and i + 1 < steps:
            saver.save_last(epoch, i + 1)
    train_time = time.perf_counter() - t_epoch
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "images": len(losses) * cfg.batch_size,
            "train_time": train_time, "steps_run": len(losses), "terms": meter.epoch_means() if meter else {}}


def check_input_size(entry, cfg: TrainConfig) -> None:
    """The model's input-size constraint, checked before anything is compiled: a forward of the PyTorch twin on
    the meta device (shapes only, no memory) at ``image_resize``. Only trusted where the same check passes at
    the model's own input size (an op without a meta kernel proves nothing)."""
    import torch

    from zoo.factory import build_kwargs

    kwargs = dict(num_classes=cfg.num_classes, in_chans=cfg.in_channels)

    def forward(size):
        with torch.device("meta"):
            m = entry.builder("pt")(**build_kwargs(entry, **kwargs)).eval()
            with torch.no_grad():
                m(torch.empty(2, cfg.in_channels, size, size))

    size = cfg.image_resize
    if size == entry.input_size[1]:
        return
    try:
        forward(size)
    except Exception as err:  # noqa: BLE001 - any failure at this size, if the model's own size works
        try:
            forward(entry.input_size[1])
        except Exception:
            return
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ConfigError(f"image_resize: {size} does not fit {cfg.model}: {first}") from None


def check_before_start(cfg: TrainConfig):
    """Everything that can be checked before a framework is initialised or a file written: the backend's
    settings, the model and its input size, the datasets (layout, classes, a readable image). Returns
    (entry, train source, val source or None)."""
    import zoo
    from zoo.data.sources import open_dataset

    distill.check(cfg)  # a teacher without weights, or weights out of range
    if cfg.framework == "pt":
        from zoo.train.pt import check
    else:
        from zoo.train.ms import check
    check(cfg)
    entry = zoo.get_entry(cfg.model)  # unknown model: an error with suggestions, before any data work
    check_input_size(entry, cfg)
    train_src = open_dataset(cfg.dataset, cfg.data_dir, cfg.train_split)
    val_src = open_dataset(cfg.dataset, cfg.data_dir, cfg.val_split, train_src.classes) if cfg.val_while_train else None
    if train_src.num_classes != cfg.num_classes:
        raise ConfigError(f"num_classes is {cfg.num_classes} but {cfg.dataset} at {cfg.data_dir} has "
                          f"{train_src.num_classes} classes; set num_classes: {train_src.num_classes}")
    train_src.probe(seed=cfg.seed)
    if val_src is not None:
        val_src.probe(seed=cfg.seed)
    return entry, train_src, val_src


def expected_world() -> int:
    """The number of ranks the launcher starts (before the framework is initialised)."""
    if os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED"):
        return max(1, int(os.environ.get("MS_WORKER_NUM", "1")))
    if "LOCAL_RANK" in os.environ:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    return 1


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training; returns the final summary. Raises the zoo's errors (ConfigError,
    DatasetError, TrainingError, Diverged) with a message that says what to do."""
    from zoo import compile_cache

    try:
        return _train(cfg)
    finally:  # a run that stopped (a NaN, a full disk) leaves no compile cache on for later graphs of this process
        compile_cache.disable()


def _train(cfg: TrainConfig) -> dict:
    from zoo.train import rundir

    entry, train_src, val_src = check_before_start(cfg)
    from zoo.data.ms import train_steps

    world = expected_world()
    steps = train_steps(len(train_src), cfg, world)
    if steps < 1:
        raise ConfigError(f"batch_size: {len(train_src)} training samples over {world} rank(s) make no batch of "
                          f"{cfg.batch_size}")

    backend = make_backend(cfg)
    rank = backend.rank
    if backend.world != world:  # the launcher's environment said otherwise: count again with the real world
        world = backend.world
        steps = train_steps(len(train_src), cfg, world)
        if steps < 1:
            raise ConfigError(f"batch_size: {len(train_src)} training samples over {world} rank(s) make no batch of "
                              f"{cfg.batch_size}")
    backend.classes = list(train_src.classes)
    lock = rundir.take(cfg, backend)  # refuses a folder that holds a run; one run per folder
    try:
        setup_logging(cfg, rank)
        for note in lock.notes if lock is not None else ():
            log.info("%s", note)
        return _run(cfg, backend, entry, train_src, val_src, steps)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: TrainConfig, backend, entry, train_src, val_src, steps: int) -> dict:
    rank, world = backend.rank, backend.world
    schedule = build_schedule(cfg, steps)
    backend.build(schedule)

    saver = CheckpointSaver(backend, cfg, steps, train_src.classes)
    meter = distill.TermMeter(backend)  # each loss term of a distillation (none otherwise)
    runlog = RunLog(cfg, rank)
    start_epoch, start_step = 0, 0
    if cfg.resume:
        start_epoch, start_step = resume(backend, cfg, saver)
        runlog.restore(start_epoch, start_epoch * steps + start_step)

    if rank == 0:
        import yaml

        from zoo.files import write_text

        write_text(os.path.join(cfg.ckpt_save_dir, "args.yaml"), yaml.safe_dump(
            {**to_dict(cfg), "world_size": world, "global_batch_size": cfg.global_batch(world)}, sort_keys=False))
    log.info("model %s (%s), %d parameters; %s: %d train / %s val samples, %d classes", cfg.model, entry.family,
             backend.n_params(), cfg.dataset, len(train_src), len(val_src) if val_src else "-", train_src.num_classes)
    log.info("ranks %d, batch %d per rank, global batch %d, %d steps per epoch, %d epochs, %s",
             world, cfg.batch_size, cfg.global_batch(world), steps, cfg.epoch_size, backend.describe())

    summary = {}
    for epoch in range(start_epoch, cfg.epoch_size):
        ran = train_one_epoch(backend, cfg, train_src, epoch, steps, schedule,
                              start_step if epoch == start_epoch else 0, saver, runlog, meter)
        backend.reduce_bn()
        metrics, eval_time = {}, 0.0
        if val_src is not None and ((epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epoch_size):
            t = time.perf_counter()
            metrics = evaluate(backend, val_src, cfg)
            eval_time = time.perf_counter() - t
            log.info("epoch [%d/%d] validation: top-1 %.2f%%, top-5 %.2f%%, loss %.4f (%d samples, %.1fs)",
                     epoch + 1, cfg.epoch_size, metrics["top1"], metrics["top5"], metrics["loss"], metrics["count"],
                     eval_time)
        saver.end_epoch(epoch + 1, metrics)
        img_per_s = ran["images"] * world / max(ran["train_time"], 1e-9)
        lr_end = lr_at(schedule, (epoch + 1) * steps - 1)
        runlog.epoch({"epoch": epoch + 1, "train_loss": ran["train_loss"], **ran["terms"], "lr": lr_end, **metrics,
                      "train_time": ran["train_time"], "eval_time": eval_time, "img_per_s": img_per_s})
        log.info("epoch [%d/%d] done: train loss %.4f%s, %.1fs, %.1f img/s (global)", epoch + 1, cfg.epoch_size,
                 ran["train_loss"], "".join(f", {k[6:]} {v:.4g}" for k, v in ran["terms"].items()),
                 ran["train_time"], img_per_s)
        summary = {"epoch": epoch + 1, "train_loss": ran["train_loss"], **{f"val_{k}": v for k, v in metrics.items()},
                   "best_top1": saver.best["top1"], "best_epoch": saver.best["epoch"], "train_time": ran["train_time"],
                   "step_time": ran["train_time"] / max(ran["steps_run"], 1), "world": world}
    if train_src.bad_files:
        log.warning("%d unreadable image(s) were skipped: %s", len(train_src.bad_files),
                    ", ".join(train_src.bad_files[:10]))
    log.info("finished: %s", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in summary.items()))
    backend.finish()
    return summary


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="zoo train", allow_abbrev=False, description="Train a registered model from a "
                                "YAML recipe (mindcv key names) with MindSpore (default) or PyTorch (--framework pt); "
                                "any key can be overridden with --key value (`--help-keys` lists them, with their "
                                "ranges). Launch with msrun (MindSpore) or torchrun (PyTorch) for data-parallel "
                                "training. A ckpt_save_dir that holds a run is refused unless it is resumed "
                                "(--resume auto).", epilog="Exit status: 0 done, 2 a configuration, data or "
                                "output-folder error (nothing was trained), 3 stopped by a non-finite loss or "
                                "non-finite weights (the last good checkpoint is kept).")
    p.add_argument("-c", "--config", help="YAML recipe (e.g. configs/triplet/triplet_resnet50_imagenet.yaml)")
    p.add_argument("--help-keys", action="store_true", help="list every config key with its default and meaning")
    p.add_argument("--check", action="store_true", help="check the recipe, the model's input size and the data, "
                   "then exit without training (nothing is written)")
    return p


def _log_to_files(msg: str) -> None:
    """An error goes once to the console (stderr) and into the rank logs, not twice to the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (msg,), None)
    for h in log.handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def main(argv=None) -> int:
    """``tools/train.py`` / ``zoo train``: -c RECIPE [--framework ms|pt] [--key value ...]."""
    from zoo.errors import ZooError
    from zoo.train.config import keys_help, load_config, parse_overrides

    args, rest = build_parser().parse_known_args(argv)
    if args.help_keys:
        print(keys_help())
        return 0
    try:
        cfg = load_config(args.config, parse_overrides(rest))
        if args.check:
            entry, train_src, val_src = check_before_start(cfg)
            print(f"zoo train: {args.config or 'the configuration'} is fine: {cfg.model} ({entry.family}) at "
                  f"{cfg.image_resize} px, {cfg.dataset}: {len(train_src)} train / "
                  f"{len(val_src) if val_src else '-'} val samples, {train_src.num_classes} classes")
            return 0
        train(cfg)
    except ZooError as err:  # anything else is a bug and keeps its traceback
        print(f"zoo train: error: {err.message}", file=sys.stderr)
        _log_to_files(err.message)
        return EXIT_DIVERGED if isinstance(err, Diverged) else 2
    return 0
