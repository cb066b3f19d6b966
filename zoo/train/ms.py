"""The MindSpore trainer: one process per device, data parallel under msrun.

    python tools/train.py -c configs/triplet/triplet_resnet50_imagenet.yaml [--key value ...]
    msrun --worker_num=8 --local_worker_num=8 tools/train.py -c ...

GRAPH mode by default. mindcv's factories build the loss, optimizer, learning-rate schedule,
augmentation and batching (``zoo.data.ms``); MindSpore's ``amp.build_train_network`` builds the
train step (mixed precision, loss scaling and, under data parallel, the gradient all-reduce).

Outputs in ``ckpt_save_dir``: ``args.yaml`` (the resolved recipe), ``rank<N>.log``, ``result.log``
(one row per epoch), ``<model>-<epoch>_<step>.ckpt`` per epoch (the last ``keep_checkpoint_max``),
``<model>_best.ckpt`` and ``last.ckpt`` (what ``--resume auto`` continues from). Checkpoints hold the
weights, the optimizer state and the training position, and are written to a temporary file and
renamed, so none is ever half-written; ``zoo convert`` reads them (it drops the optimizer state).

A non-finite loss stops the run (exit status 3) and leaves the last good checkpoint in place.
"""
from __future__ import annotations

import glob
import logging
import os
import sys
import time
from typing import Optional, Tuple

import numpy as np

from zoo.train.config import TrainConfig, to_dict

EXIT_DIVERGED = 3
STATE_PREFIX = "train_state."  # training-position entries stored in checkpoints (dropped by zoo convert)

log = logging.getLogger("zoo.train")


class TrainingError(Exception):
    """The run cannot start or continue; the message says why and what to do."""


class Diverged(TrainingError):
    pass


# --- set-up ---------------------------------------------------------------------------------

def launched_by_msrun() -> bool:
    """msrun starts a scheduler (MS_SCHED) and the workers (MS_WORKER), all running this script; each must
    call ``init()`` (the scheduler's serves the cluster and ends the process when the workers finish)."""
    return os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") and int(os.environ.get("MS_WORKER_NUM", "1")) > 1


def setup_context(cfg: TrainConfig) -> Tuple[int, int]:
    """MindSpore context, and (rank, world) after joining the data-parallel group if launched so."""
    import mindspore as ms

    ms.set_context(mode=cfg.mode)
    ms.set_device(cfg.device_target)
    rank, world = 0, 1
    if cfg.distribute or launched_by_msrun():
        from mindspore.communication import get_group_size, get_rank, init

        init()
        rank, world = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
    ms.set_seed(cfg.seed)
    np.random.seed(cfg.seed)
    return rank, world


def setup_logging(cfg: TrainConfig, rank: int) -> None:
    os.makedirs(cfg.ckpt_save_dir, exist_ok=True)
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    fh = logging.FileHandler(os.path.join(cfg.ckpt_save_dir, f"rank{rank}.log"))
    fh.setFormatter(fmt)
    log.addHandler(fh)
    if rank == 0:
        sh = logging.StreamHandler(sys.stdout)
        sh.setFormatter(fmt)
        log.addHandler(sh)
    data_log = logging.getLogger("zoo.data")  # unreadable-image reports, in the same places
    data_log.handlers = log.handlers
    data_log.setLevel(logging.INFO)
    data_log.propagate = False


def _param_groups(net, cfg: TrainConfig):
    """timm's rule for weight_decay_filter '1d_and_bias': no decay for 1-D parameters and biases."""
    decay, no_decay = [], []
    for p in net.trainable_params():
        (no_decay if p.ndim <= 1 or p.name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
            {"order_params": net.trainable_params()}]


def build_optimizer(net, cfg: TrainConfig, lr_schedule):
    from mindcv.optim import create_optimizer

    kwargs = {}
    if cfg.opt.lower() in ("adam", "adamw", "lamb", "nadam", "adan", "lion"):
        kwargs = dict(beta1=cfg.beta1, beta2=cfg.beta2)
    if cfg.opt.lower() in ("adam", "adamw"):
        kwargs["eps"] = cfg.eps
    fixed_scale = cfg.loss_scale if cfg.loss_scale_type == "fixed" and not cfg.drop_overflow_update else 1.0
    if cfg.weight_decay_filter == "1d_and_bias":
        params, wd_filter = _param_groups(net, cfg), "auto"  # 'auto' hands our groups through unchanged
    else:
        params, wd_filter = net.trainable_params(), cfg.weight_decay_filter
    logging.getLogger("mindcv.optim.optim_factory").setLevel(logging.ERROR)  # its 'auto' warning
    return create_optimizer(params, opt=cfg.opt, lr=lr_schedule, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                            nesterov=cfg.use_nesterov, weight_decay_filter=wd_filter, loss_scale=fixed_scale, **kwargs)


def build_schedule(cfg: TrainConfig, steps_per_epoch: int) -> list:
    from mindcv.scheduler import create_scheduler

    if cfg.scheduler == "constant":  # mindcv warns about decay epochs even where none apply
        logging.getLogger("mindcv.scheduler.scheduler_factory").setLevel(logging.ERROR)
    return [float(v) for v in create_scheduler(
        steps_per_epoch, scheduler=cfg.scheduler, lr=cfg.lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
        warmup_factor=cfg.warmup_factor, decay_epochs=cfg.decay_epochs, decay_rate=cfg.decay_rate,
        milestones=cfg.multi_step_decay_milestones, num_epochs=cfg.epoch_size, num_cycles=cfg.num_cycles,
        cycle_decay=cfg.cycle_decay, lr_epoch_stair=cfg.lr_epoch_stair)]


def build_train_step(net, loss_fn, opt, cfg: TrainConfig):
    from mindspore import amp

    if cfg.loss_scale_type == "dynamic":
        manager = amp.DynamicLossScaleManager(cfg.loss_scale, scale_factor=2, scale_window=1000)
    else:
        manager = amp.FixedLossScaleManager(cfg.loss_scale, drop_overflow_update=cfg.drop_overflow_update)
    return amp.build_train_network(net, opt, loss_fn, level=cfg.amp_level, loss_scale_manager=manager)


# --- checkpoints ----------------------------------------------------------------------------

def save_state(path: str, train_step, state: dict) -> None:
    """Weights + optimizer state + training position, written atomically; refuses non-finite weights.

    (A step's loss is computed before its update, so the weights after it are checked here.)
    """
    import mindspore as ms

    bad = [p.name for p in train_step.get_parameters()
           if p.dtype in (ms.float32, ms.float16) and not np.isfinite(p.asnumpy()).all()]
    if bad:
        raise Diverged(f"the weights became non-finite ({', '.join(bad[:3])}) after epoch {state['epoch'] + 1} "
                       f"step {state['step']}: stopping without saving {os.path.basename(path)}.")
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.partial-{os.getpid()}.ckpt")
    try:
        ms.save_checkpoint(train_step, tmp, append_dict={STATE_PREFIX + k: v for k, v in state.items()})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_state(path: str, train_step) -> dict:
    """Restore weights and optimizer state into ``train_step``; returns the training position."""
    import mindspore as ms

    if not os.path.isfile(path):
        raise TrainingError(f"--resume {path}: no such checkpoint")
    try:
        params = ms.load_checkpoint(path)
    except Exception as err:
        raise TrainingError(f"--resume {path}: cannot read the checkpoint ({type(err).__name__}: {err})") from None
    state = {k[len(STATE_PREFIX):]: params.pop(k).asnumpy().item() for k in list(params) if k.startswith(STATE_PREFIX)}
    if "epoch" not in state:
        raise TrainingError(f"--resume {path}: not a training checkpoint of this trainer (no training position); "
                            "to start from its weights use ckpt_path instead")
    params.pop("learning_rate", None)  # the schedule comes from the recipe
    own = {p.name for p in train_step.get_parameters()}
    missing = sorted(own - set(params) - {"learning_rate"})
    unexpected = sorted(set(params) - own)
    if missing or unexpected:
        raise TrainingError(f"--resume {path}: the checkpoint does not match this model and optimizer "
                            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was it saved with another recipe?")
    ms.load_param_into_net(train_step, params, strict_load=True)
    return state


def reduce_bn_stats(net, world: int) -> None:
    """Average BatchNorm running statistics over ranks (timm's ``--dist-bn reduce``).

    Data parallel all-reduces gradients, not these buffers: each rank's statistics follow its own
    shard. Averaging them at each epoch end makes every rank hold the same model for the sharded
    validation and the checkpoint.
    """
    if world == 1:
        return
    import mindspore as ms

    stats = [p for p in net.get_parameters() if p.name.endswith((".moving_mean", ".moving_variance"))]
    if not stats:
        return
    flat = np.concatenate([p.asnumpy().reshape(-1).astype(np.float64) for p in stats])
    flat = _allreduce(flat, world) / world
    offset = 0
    for p in stats:
        n = int(np.prod(p.shape))
        p.set_data(ms.Tensor(flat[offset:offset + n].reshape(p.shape), p.dtype))
        offset += n


# --- evaluation ----------------------------------------------------------------------------

def _allreduce(values: np.ndarray, world: int) -> np.ndarray:
    if world == 1:
        return values
    import mindspore as ms
    from mindspore import ops

    return ops.AllReduce()(ms.Tensor(values.astype(np.float32))).asnumpy().astype(np.float64)


def evaluate(net, source, cfg: TrainConfig, rank: int, world: int) -> dict:
    """Top-1, top-5 and mean cross-entropy over the whole split (ranks share it, then all-reduce)."""
    import mindspore as ms

    from zoo.data.ms import batches, create_loader

    loader, _, _ = create_loader(source, cfg, training=False, rank=rank, world=world)
    net.set_train(False)
    totals = np.zeros(4)  # correct@1, correct@5, loss sum, count
    for x, y in batches(loader):
        logits = net(ms.Tensor(x)).asnumpy().astype(np.float64)
        top5 = np.argsort(-logits, axis=1)[:, :5]
        totals[0] += (top5[:, 0] == y).sum()
        totals[1] += (top5 == y[:, None]).any(axis=1).sum()
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        totals[2] += -logp[np.arange(len(y)), y].sum()
        totals[3] += len(y)
    totals = _allreduce(totals, world)
    n = max(totals[3], 1)
    return {"top1": 100 * totals[0] / n, "top5": 100 * totals[1] / n, "loss": totals[2] / n, "count": int(totals[3])}


# --- the run -------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training; returns the final summary. Raises TrainingError / Diverged."""
    import mindspore as ms
    from mindcv.loss import create_loss

    import zoo
    from zoo.data.ms import batches, create_loader
    from zoo.data.sources import open_dataset

    rank, world = setup_context(cfg)
    setup_logging(cfg, rank)
    entry = zoo.get_entry(cfg.model)  # unknown model: KeyError with suggestions, before any data work

    train_src = open_dataset(cfg.dataset, cfg.data_dir, cfg.train_split)
    val_src = open_dataset(cfg.dataset, cfg.data_dir, cfg.val_split, train_src.classes) if cfg.val_while_train else None
    if train_src.num_classes != cfg.num_classes:
        raise TrainingError(f"num_classes is {cfg.num_classes} but {cfg.dataset} at {cfg.data_dir} has "
                            f"{train_src.num_classes} classes; set num_classes: {train_src.num_classes}")
    per_rank = len(train_src) // world
    steps = per_rank // cfg.batch_size if cfg.drop_remainder else -(-per_rank // cfg.batch_size)
    if steps < 1:
        raise TrainingError(f"{len(train_src)} training samples over {world} rank(s) make no batch of {cfg.batch_size}")

    net = zoo.create_model(cfg.model, "ms", num_classes=cfg.num_classes, checkpoint=cfg.ckpt_path or None,
                           in_chans=cfg.in_channels, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)
    loss_fn = create_loss(name=cfg.loss.upper(), label_smoothing=cfg.label_smoothing)
    schedule = build_schedule(cfg, steps)
    opt = build_optimizer(net, cfg, schedule)
    train_step = build_train_step(net, loss_fn, opt, cfg)
    train_step.set_train(True)

    start_epoch, start_step, best = 0, 0, {"top1": -1.0, "epoch": -1}
    last_path = os.path.join(cfg.ckpt_save_dir, "last.ckpt")
    if cfg.resume:
        path = last_path if cfg.resume == "auto" else cfg.resume
        state = load_state(path, train_step)
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        best = {"top1": float(state.get("best_top1", -1.0)), "epoch": int(state.get("best_epoch", -1))}
        if int(state.get("world", world)) != world or int(state.get("batch_size", cfg.batch_size)) != cfg.batch_size:
            log.warning("resuming with %d rank(s) x batch %d, the run had %d x %d: the data order changes from here",
                        world, cfg.batch_size, int(state.get("world", 0)), int(state.get("batch_size", 0)))
        log.info("resumed from %s: epoch %d, step %d", path, start_epoch + 1, start_step)

    if rank == 0:
        import yaml
        with open(os.path.join(cfg.ckpt_save_dir, "args.yaml"), "w") as f:
            yaml.safe_dump({**to_dict(cfg), "world_size": world, "global_batch_size": cfg.global_batch(world)}, f,
                           sort_keys=False)
    log.info("model %s (%s), %d parameters; %s: %d train / %s val samples, %d classes",
             cfg.model, entry.family, sum(int(np.prod(p.shape)) for p in net.trainable_params()), cfg.dataset,
             len(train_src), len(val_src) if val_src else "-", train_src.num_classes)
    log.info("ranks %d, batch %d per rank, global batch %d, %d steps per epoch, %d epochs, mode %s, amp %s, %s",
             world, cfg.batch_size, cfg.global_batch(world), steps, cfg.epoch_size,
             "GRAPH" if cfg.mode == 0 else "PYNATIVE", cfg.amp_level, cfg.device_target)

    result_path = os.path.join(cfg.ckpt_save_dir, "result.log")
    if rank == 0 and not os.path.exists(result_path):
        with open(result_path, "w") as f:
            f.write("epoch\ttrain_loss\tval_top1\tval_top5\tval_loss\tlr\ttrain_time_s\teval_time_s\timg_per_s\n")

    def state(epoch, step):
        return {"epoch": epoch, "step": step, "global_step": epoch * steps + step, "best_top1": best["top1"],
                "best_epoch": best["epoch"], "world": world, "batch_size": cfg.batch_size, "seed": cfg.seed}

    def save_last(epoch, step):
        try:
            if rank == 0:
                save_state(last_path, train_step, state(epoch, step))
        except Diverged as err:
            good = last_path if os.path.exists(last_path) else None
            raise Diverged(str(err) + (f" The last good checkpoint is {good}." if good else " No checkpoint was saved yet.")
                           + " Lower the learning rate, check the data, or use a loss scale with AMP.") from None
        if cfg.ckpt_save_all_ranks and rank:
            save_state(os.path.join(cfg.ckpt_save_dir, f"rank{rank}", "last.ckpt"), train_step, state(epoch, step))

    summary = {}
    for epoch in range(start_epoch, cfg.epoch_size):
        skip = start_step if epoch == start_epoch else 0
        loader, n_batches, indices = create_loader(train_src, cfg, training=True, epoch=epoch, rank=rank, world=world,
                                                   start_step=skip)
        if cfg.record_samples:
            with open(os.path.join(cfg.ckpt_save_dir, f"samples_rank{rank}.txt"), "a") as f:
                f.write(f"epoch {epoch + 1} from step {skip}: " + " ".join(map(str, indices.tolist())) + "\n")
        train_step.set_train(True)
        t_epoch = t_int = time.perf_counter()
        losses, seen_int = [], 0
        for i, (x, y) in enumerate(batches(loader), start=skip):
            out = train_step(ms.Tensor(x), ms.Tensor(y))
            loss_t, overflow = (out[0], bool(out[1].asnumpy())) if isinstance(out, tuple) else (out, False)
            loss = float(_allreduce(np.array([float(loss_t.asnumpy())]), world)[0] / world)
            if not np.isfinite(loss):
                if overflow and cfg.drop_overflow_update:
                    log.warning("epoch %d step %d: gradient overflow, update skipped (loss scale adjusts)", epoch + 1, i + 1)
                    continue
                good = last_path if os.path.exists(last_path) else None
                raise Diverged(f"the loss became {loss} at epoch {epoch + 1}, step {i + 1}: stopping. "
                               + (f"The last good checkpoint is {good}." if good else "No checkpoint was saved yet.")
                               + " Lower the learning rate, check the data, or use a loss scale with AMP.")
            losses.append(loss)
            seen_int += len(y)
            if (i + 1) % cfg.log_interval == 0 or i + 1 == steps:
                dt = time.perf_counter() - t_int
                todo = (cfg.epoch_size - epoch) * steps - (i + 1)
                eta = (time.perf_counter() - t_epoch) / max(i + 1 - skip, 1) * todo
                log.info("epoch [%d/%d] step [%d/%d] loss %.4f lr %.6f img/s %.1f (global %.1f) eta %s",
                         epoch + 1, cfg.epoch_size, i + 1, steps, loss, schedule[min(epoch * steps + i, len(schedule) - 1)],
                         seen_int / dt, seen_int * world / dt, _hms(eta))
                t_int, seen_int = time.perf_counter(), 0
            if cfg.ckpt_save_steps and (i + 1) % cfg.ckpt_save_steps == 0 and i + 1 < steps:
                save_last(epoch, i + 1)
        train_time = time.perf_counter() - t_epoch
        train_loss = float(np.mean(losses)) if losses else float("nan")
        reduce_bn_stats(net, world)
        ran = len(losses) * cfg.batch_size

        metrics, eval_time = {}, 0.0
        if val_src is not None and ((epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epoch_size):
            t = time.perf_counter()
            metrics = evaluate(net, val_src, cfg, rank, world)
            eval_time = time.perf_counter() - t
            log.info("epoch [%d/%d] validation: top-1 %.2f%%, top-5 %.2f%%, loss %.4f (%d samples, %.1fs)",
                     epoch + 1, cfg.epoch_size, metrics["top1"], metrics["top5"], metrics["loss"], metrics["count"],
                     eval_time)
            if metrics["top1"] > best["top1"]:
                best = {"top1": metrics["top1"], "epoch": epoch + 1}

        save_last(epoch + 1, 0)
        if rank == 0:
            if (epoch + 1) % cfg.ckpt_save_interval == 0 or epoch + 1 == cfg.epoch_size:
                save_state(os.path.join(cfg.ckpt_save_dir, f"{cfg.model}-{epoch + 1}_{steps}.ckpt"), train_step,
                           state(epoch + 1, 0))
                _prune(cfg)
            if metrics and best["epoch"] == epoch + 1:
                save_state(os.path.join(cfg.ckpt_save_dir, f"{cfg.model}_best.ckpt"), train_step, state(epoch + 1, 0))
            lr_now = schedule[min((epoch + 1) * steps - 1, len(schedule) - 1)]
            with open(result_path, "a") as f:
                f.write(f"{epoch + 1}\t{train_loss:.4f}\t{_m(metrics, 'top1')}\t{_m(metrics, 'top5')}\t"
                        f"{_m(metrics, 'loss', 4)}\t{lr_now:.6g}\t{train_time:.1f}\t{eval_time:.1f}\t"
                        f"{ran * world / max(train_time, 1e-9):.1f}\n")
        log.info("epoch [%d/%d] done: train loss %.4f, %.1fs, %.1f img/s (global)", epoch + 1, cfg.epoch_size,
                 train_loss, train_time, ran * world / max(train_time, 1e-9))
        summary = {"epoch": epoch + 1, "train_loss": train_loss, **{f"val_{k}": v for k, v in metrics.items()},
                   "best_top1": best["top1"], "best_epoch": best["epoch"], "train_time": train_time,
                   "step_time": train_time / max(len(losses), 1), "world": world}
    if train_src.bad_files:
        log.warning("%d unreadable image(s) were skipped: %s", len(train_src.bad_files), ", ".join(train_src.bad_files[:10]))
    log.info("finished: %s", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return summary


def _prune(cfg: TrainConfig) -> None:
    files = glob.glob(os.path.join(cfg.ckpt_save_dir, f"{glob.escape(cfg.model)}-*_*.ckpt"))
    files.sort(key=lambda p: int(os.path.basename(p)[len(cfg.model) + 1:].split("_")[0]))
    for old in files[:-cfg.keep_checkpoint_max] if cfg.keep_checkpoint_max > 0 else []:
        os.remove(old)


def _m(metrics: dict, key: str, digits: int = 2) -> str:
    return f"{metrics[key]:.{digits}f}" if key in metrics else "-"


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def main(argv=None) -> int:
    """``tools/train.py`` / ``zoo train``: -c RECIPE [--key value ...]."""
    import argparse

    from zoo.data.sources import DatasetError
    from zoo.train.config import ConfigError, keys_help, load_config, parse_overrides

    p = argparse.ArgumentParser(prog="zoo train", description="Train a registered model with MindSpore from a YAML "
                                "recipe (mindcv key names); any key can be overridden with --key value. Launch with "
                                "msrun for data-parallel training.", epilog="`--help-keys` lists every key.")
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
