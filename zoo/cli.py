"""``zoo``: list models, convert checkpoints, measure parity and speed, run the demo.

    zoo list [--family triplet]
    zoo convert triplet_resnet50 official.pth.tar out.ckpt
    zoo parity triplet_resnet18 triplet_mobilenetv2      (or --all, --family F)
    zoo train -c configs/triplet/triplet_resnet18_cifar_smoke.yaml [--framework pt] [--key value ...]
    zoo validate triplet_resnet50 --checkpoint ta_r50.ckpt --data /data/imagenet [--framework pt]
    zoo export triplet_resnet50 --checkpoint ta_r50.ckpt ta_r50.onnx     (or .mindir)
    zoo bench triplet_resnet18 van_b0 --batch 8 --threads 2      (or --all, --family F; see zoo bench -h)
    zoo demo

Exit status: 0 success, 1 a check failed (parity outside its bounds, a demo verdict FAIL), 2 a usage or
input error (the message says what and what to do), 3 a training stopped by a non-finite loss or weights.
Only the zoo's own errors (``zoo.errors.ZooError``) become such messages; anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from zoo.cli_common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, error, exit_process, positive_int  # noqa: F401  (re-exported)
from zoo.cli_common import check_output_file, parse_size as _parse_size  # noqa: F401  (re-exported)
from zoo.errors import ZooError

_positive_int = positive_int


def _fmt_int(v):
    return "-" if v is None else f"{v:,}"


def _fmt(v, spec="{:g}"):
    return "-" if v is None else spec.format(v)


def cmd_list(args) -> int:
    from zoo import registry

    names = registry.list_models(args.family)
    if args.json:
        out = []
        for n in names:
            e = registry.get(n)
            out.append(dict(name=n, family=e.family, input_size=e.input_size, num_classes=e.num_classes,
                            params=e.published.params, gmacs=e.published.gmacs, top1=e.published.top1,
                            top5=e.published.top5, dataset=e.published.dataset, layouts=list(e.layouts),
                            mean=e.preprocess.mean, std=e.preprocess.std, interpolation=e.preprocess.interpolation,
                            crop_pct=e.preprocess.crop_pct, description=e.description,
                            published=[dict(dataset=q.dataset, params=q.params, gmacs=q.gmacs, top1=q.top1,
                                            top5=q.top5, source=q.source) for q in e.all_published]))
        print(json.dumps(out, indent=2))
        return EXIT_OK
    head = ("model", "family", "input", "classes", "dataset", "params (pub.)", "GMACs (pub.)", "top-1", "top-5",
            "layouts")
    rows = []
    for n in names:
        e = registry.get(n)
        p = e.published
        rows.append((n, e.family, "x".join(map(str, e.input_size[1:])), str(e.num_classes), p.dataset,
                     _fmt_int(p.params), _fmt(p.gmacs), _fmt(p.top1), _fmt(p.top5), ", ".join(("zoo",) + e.layouts)))
        for q in e.more_published:  # one model serving several datasets: one more line per dataset
            rows.append(("", "", "", "", q.dataset, _fmt_int(q.params), _fmt(q.gmacs), _fmt(q.top1), _fmt(q.top5), ""))
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for row in rows:
        print(fmt.format(*row))
    print(f"\n{len(names)} models. Published figures are the reference's, on the dataset shown "
          "(a model evaluated on several has one line per dataset); GMACs = multiply-adds, which some READMEs "
          "call FLOPs.")
    return EXIT_OK


def cmd_convert(args) -> int:
    from zoo.convert import convert_file

    t0 = time.perf_counter()
    try:
        loaded = convert_file(args.model, args.src, args.dst, to=args.to, layout=args.layout, force=args.force,
                              allow_non_finite=args.allow_non_finite, to_layout=args.to_layout)
    except ZooError as err:
        print(f"zoo convert: error: {err.message}\nzoo convert: nothing was written to {args.dst}", file=sys.stderr)
        return EXIT_USAGE
    for note in loaded.notes:
        print(f"note: {note}")
    to = args.to or ("ms" if args.dst.lower().endswith(".ckpt") else "pt")
    n = sum(1 for k in loaded.state if not k.endswith("num_batches_tracked"))
    names = f"{args.to_layout} layout" if args.to_layout else f"{'MindSpore' if to == 'ms' else 'PyTorch'} names"
    print(f"converted {args.src} ({loaded.layout} layout) -> {args.dst} "
          f"({names}, {n} tensors) in {time.perf_counter() - t0:.1f}s")
    return EXIT_OK


def _parity_run(names, input_size=None, small=False, grads=True, modes=("pynative", "graph"), out=None):
    from zoo import parity, registry

    out = out or sys.stdout  # the stream of the call (a default bound at import would outlive a redirection)
    results = []
    for i, n in enumerate(names, 1):
        e = registry.get(n)
        size = input_size or (e.test_input_size if small and e.test_input_size else e.input_size)
        print(f"[{i}/{len(names)}] {n} at {'x'.join(map(str, size[1:]))} ...", file=sys.stderr, flush=True)
        results.append(parity.check(n, input_size=size, grads=grads, modes=modes))
    print(parity.format_table(results), file=out)
    print("\n" + parity.LEGEND, file=out)
    return results


def _features_run(names, input_size=None, small=False, modes=("pynative", "graph"), out=None):
    from zoo import parity, registry

    out = out or sys.stdout
    results = []
    for i, n in enumerate(names, 1):
        e = registry.get(n)
        size = input_size or (e.test_input_size if small and e.test_input_size else e.input_size)
        print(f"[{i}/{len(names)}] {n} features at {'x'.join(map(str, size[1:]))} ...", file=sys.stderr, flush=True)
        results.append(parity.check_features(n, input_size=size, modes=modes))
    print(parity.format_features_table(results), file=out)
    print("\n" + parity.FEATURES_LEGEND, file=out)
    return results


def cmd_parity(args) -> int:
    from zoo import registry

    if args.all or args.family:
        names = registry.list_models(args.family)
    elif args.models:
        names = args.models
        for n in names:
            registry.get(n)  # unknown names fail before any work
    else:
        print("zoo parity: give model names, --family F or --all", file=sys.stderr)
        return EXIT_USAGE
    if args.train_steps:
        from zoo.train.parity import OPTIMIZERS, format_table, train_parity

        opts = [o.strip() for o in args.opt.split(",") if o.strip()]
        bad = [o for o in opts if o not in OPTIMIZERS]
        if bad and not args.recipe:
            print(f"zoo parity: unknown optimizer(s) {bad}; use {', '.join(OPTIMIZERS)} or --recipe", file=sys.stderr)
            return EXIT_USAGE
        results = []
        for n in names:
            for o in ([None] if args.recipe else opts):
                print(f"{n}: {args.train_steps} steps of {o or args.recipe} on each framework ...", file=sys.stderr,
                      flush=True)
                results.append(train_parity(n, args.train_steps, o or "momentum", recipe=args.recipe,
                                            input_size=args.input_size, batch=args.batch, teacher=args.teacher))
        print(format_table(results))
        return EXIT_FAIL if any(r.error for r in results) else EXIT_OK
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in ("pynative", "graph")]
    if bad:
        print(f"zoo parity: unknown mode(s) {bad}; use pynative, graph", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        check_output_file(args.json)  # before the (long) measurement
    if args.features:
        results = _features_run(names, args.input_size, args.small, modes)
    else:
        results = _parity_run(names, args.input_size, args.small, not args.no_grad, modes)
    if args.json:
        from zoo.files import write_text

        write_text(args.json, json.dumps([r.as_dict() for r in results], indent=2))
    failed = [r.model for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)}/{len(results)} models within the parity bounds" +
          (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return EXIT_FAIL if failed else EXIT_OK


def cmd_demo(args) -> int:
    """Train on MindSpore, convert, validate on both frameworks, parity; optionally every model's parity."""
    from zoo import demo, registry

    code = demo.run(args.out, epochs=args.epochs)
    if args.all_models:
        print("\n== parity of every registered model (random weights, small inputs where the architecture allows)")
        results = _parity_run(registry.list_models(), small=True)
        failed = [r.model for r in results if not r.passed]
        print(f"{len(results) - len(failed)}/{len(results)} models within the parity bounds"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
        code = code or (EXIT_FAIL if failed else EXIT_OK)
    return code


# `zoo train` and `zoo validate` hand their arguments to the trainer's and the validator's own parsers
# (they also serve tools/train.py and tools/validate.py): the sub-parsers below only show them in `zoo -h`.
PASSTHROUGH = {"train": "zoo.train.loop", "validate": "zoo.validate"}


def _passthrough(command: str, argv) -> int:
    import importlib

    return importlib.import_module(PASSTHROUGH[command]).main(list(argv))


# --- zoo export (ecosystem) -----------------------------------------------------------------

def cmd_export(args) -> int:
    from zoo import export
    from zoo.errors import ZooError

    try:
        size = _parse_size(args.input_size)
    except argparse.ArgumentTypeError as err:
        print(f"zoo export: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        res = export.export(args.model, args.checkpoint, args.out, fmt=args.format, input_size=size,
                            batch=args.batch, force=args.force, layout=args.layout)
    except ZooError as err:
        print(f"zoo export: error: {err.message}", file=sys.stderr)
        print(f"zoo export: nothing was written to {args.out}", file=sys.stderr)
        return EXIT_USAGE
    print(export.format_table([res]))
    print("\n" + export.LEGEND)
    if res.note:
        print(f"note: {res.note}")
    return EXIT_OK


def _add_export_parser(sub) -> None:
    s = sub.add_parser("export", help="export MindIR (MindSpore twin) or ONNX (PyTorch twin), verified",
                       description="Export a model with a checkpoint's weights for deployment: MindIR from the "
                       "MindSpore twin (mindspore.export; MindSpore Lite, Ascend inference), ONNX from the PyTorch "
                       "twin (torch.onnx; needs the onnx extra). The file is loaded back (MindIR: mindspore.load + "
                       "nn.GraphCell; ONNX: onnxruntime) and must give both twins' logits to the parity bound "
                       "before it is written (atomically; an existing OUT only with --force). AIR needs Ascend.")
    s.add_argument("model", help="registered model name (see `zoo list`)")
    s.add_argument("out", help="output file: .mindir, .onnx or .air")
    s.add_argument("--checkpoint", required=True, help="weights: any checkpoint `zoo convert` reads")
    s.add_argument("--format", choices=("mindir", "onnx", "air"), help="default: from OUT's suffix")
    s.add_argument("--input-size", help="e.g. 224 or 3x224x224 (default: the model's input size)")
    s.add_argument("--batch", type=int, default=1, help="batch size of the exported graph (default 1)")
    s.add_argument("--layout", default="auto", help="checkpoint layout, as for `zoo convert` (default auto)")
    s.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    s.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="A MindSpore-first model zoo with PyTorch twins: "
                                "list models, convert checkpoints between frameworks, measure parity.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("list", help="list the registered models and their published figures")
    s.add_argument("--family", help="only this family (e.g. triplet)")
    s.add_argument("--json", action="store_true", help="machine-readable output, with preprocessing")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("convert", help="convert a checkpoint between PyTorch and MindSpore",
                       description="Convert SRC (.pth/.pth.tar/.pt/.bin, .safetensors or .ckpt; the zoo's names in "
                       "either framework or an external layout the model's family imports) into DST for one "
                       "framework. Strict: every tensor used, every parameter filled, shapes checked. DST is "
                       "written atomically and left untouched on any error.")
    s.add_argument("model", help="registered model name (see `zoo list`)")
    s.add_argument("src", help="source checkpoint")
    s.add_argument("dst", help="destination: .ckpt (MindSpore), .pth/.pt (PyTorch) or .safetensors (needs --to)")
    s.add_argument("--to", choices=("ms", "pt"), help="target framework (default: from DST's suffix)")
    s.add_argument("--layout", default="auto",
                   help="source layout: auto (default), zoo, or one the model's family lists in `zoo list`")
    s.add_argument("--to-layout", metavar="LAYOUT",
                   help="write DST (a PyTorch file) in an external layout of the model's family instead of the zoo's "
                   "names, e.g. 'reference' (attention-transfer's model.pt7) or 'functional-zoo'")
    s.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    s.add_argument("--allow-non-finite", action="store_true",
                   help="convert even if tensors hold NaN or inf values (refused by default)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("parity", help="measure MindSpore vs PyTorch parity of registered models",
                       description="Build both twins with the same random weights and report the forward error "
                       "(PYNATIVE and GRAPH), per-parameter gradient error and conversion round trip, against the "
                       "bounds in DESIGN.md. Exit status 1 if any model is outside them.")
    s.add_argument("models", nargs="*", help="model names")
    s.add_argument("--all", action="store_true", help="every registered model")
    s.add_argument("--family", help="every model of one family")
    s.add_argument("--input-size", type=_parse_size, help="e.g. 224 or 3x224x224 (default: the model's input size)")
    s.add_argument("--small", action="store_true", help="use each model's small test input where it has one")
    s.add_argument("--no-grad", action="store_true", help="forward and round trip only")
    s.add_argument("--features", action="store_true",
                   help="feature parity instead: every stage output of the features_only models (both modes)")
    s.add_argument("--modes", default="pynative,graph", help="MindSpore modes for the forward check")
    s.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    s.add_argument("--train-steps", type=int, default=0, metavar="N",  # 0: forward parity
                   help="training parity instead: N optimizer steps on each framework from identical weights and "
                   "batches (the trainers' own optimizers and schedules); reports loss and weight-update errors")
    s.add_argument("--opt", default="momentum,adamw", help="with --train-steps: momentum, adamw (default both)")
    s.add_argument("--recipe", help="with --train-steps: take the optimizer and schedule from this recipe")
    s.add_argument("--batch", type=_positive_int, default=4, help="with --train-steps: batch size (default 4)")
    s.add_argument("--teacher", metavar="MODEL", help="with --train-steps: distil from this model (generic weights; "
                   "the reference's AT beta 1000 + KD alpha 0.9, T 4) and compare every loss term too")
    s.set_defaults(func=cmd_parity)

    sub.add_parser("train", help="train from a YAML recipe, MindSpore or PyTorch (see `zoo train -h`)")
    sub.add_parser("validate", help="top-1/top-5 of a checkpoint with the model's preprocessing "
                   "(see `zoo validate -h`)")

    s = sub.add_parser("demo", help="train on MindSpore, convert, validate on both frameworks, report",
                       description="The main job: train a small model on a real bundled dataset with MindSpore (GRAPH "
                       "mode, CPU, a few minutes), convert it to PyTorch, validate both (equal accuracy), measure "
                       "parity, save the training curve and print one report.")
    s.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    s.add_argument("--epochs", type=_positive_int, help="override the demo recipe's epochs")
    s.add_argument("--all-models", action="store_true", help="also the parity table of every registered model (slow)")
    s.set_defaults(func=cmd_demo)

    _add_export_parser(sub)
    from zoo.bench.command import add_parser as add_bench_parser

    add_bench_parser(sub)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        return _passthrough(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    args.argv = argv[1:]  # the command line as given (zoo bench records it in its report)
    try:
        return args.func(args)
    except ZooError as err:  # unknown model or family, unwritable output, ...; anything else keeps its traceback
        return error(args.command, err)


def run() -> None:
    """Console-script entry point."""
    exit_process(main())


if __name__ == "__main__":
    run()
