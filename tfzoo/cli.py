"""The `zoo` command: list | train | finetune | evaluate | export | predict | pull | pack |
serve | generate.

This is the application layer: subcommands import `training` / `serving` lazily, so
`zoo list` stays fast and the model code in `zoo/` stays framework-free.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def cmd_list(args: argparse.Namespace) -> int:
    from zoo import registry

    for name in registry.names():
        spec = registry.get(name)
        presets = ", ".join(spec.presets)
        print(f"{name:16s} {spec.task:22s} presets: {presets:32s} {spec.description}")
    return 0


def _train_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        preset=args.preset,
        model_dir=args.model_dir,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        strategy=args.strategy,
        overrides=_parse_overrides(args.set),
        steps_per_epoch=args.steps_per_epoch,
        tpu=args.tpu,
        steps_per_execution=args.steps_per_execution,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.xla],
        verbose=args.verbose,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from training import train

    metrics = train.run(args.model, **_train_kwargs(args))
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from training import checkpoints, train
    from training.recipe import get_recipe

    source = Path(args.source)
    if checkpoints.latest_checkpoint(source / "checkpoints") is None:
        raise SystemExit(f"{source} has no completed checkpoint to fine-tune from")
    run_info = checkpoints.read_json(source / "run.json")
    kwargs = _train_kwargs(args)
    kwargs["preset"] = kwargs["preset"] or run_info["preset"]
    recipe = get_recipe(run_info["model"])
    kwargs["overrides"] = {
        **recipe.finetune_overrides(run_info["config"], args.data_dir),
        **kwargs["overrides"],
    }
    metrics = train.run(run_info["model"], parent=source, **kwargs)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training import evaluate

    print(json.dumps(evaluate.run(args.model_dir, args.data_dir, args.batch_size), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training import export

    path = export.run(args.model_dir, args.to, version=args.version)
    print(f"exported {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from training import predict

    for line in predict.run(args.export_dir, args.inputs, args.signature, args.top_k):
        print(line)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from training import pretrained

    try:
        path = pretrained.pull(args.artifact, args.to, args.sha256, args.cache, args.version)
    except pretrained.PullError as err:
        raise RuntimeError(str(err)) from None
    print(f"installed {path}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from training import pretrained

    try:
        digest = pretrained.pack(args.version_dir, args.out)
    except pretrained.PullError as err:
        raise RuntimeError(str(err)) from None
    print(f"{digest}  {args.out}")
    return 0


def _forward(module: str, argv: list[str]) -> int:
    import importlib

    return int(importlib.import_module(module).main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `zoo` command."""
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered models and presets").set_defaults(func=cmd_list)

    def training_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", default=None)
        p.add_argument("--model-dir", required=True, help="run directory (resumed if it exists)")
        p.add_argument("--data-dir", default=None, help="local data; default: TFDS (online)")
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=None, help="global batch size")
        p.add_argument("--steps-per-epoch", type=int, default=None)
        p.add_argument(
            "--steps-per-execution", type=int, default=1, help="training steps per graph call"
        )
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--strategy", default="auto")
        p.add_argument("--tpu", default=None, help="TPU name or address")
        p.add_argument("--xla", choices=["auto", "on", "off"], default="auto")
        p.add_argument("--verbose", type=int, default=1)

    p = sub.add_parser("train", help="train a model")
    p.add_argument("model")
    training_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="continue from a trained run on new data")
    p.add_argument("source", help="run directory to start from")
    training_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="task metric of a trained run")
    p.add_argument("model", nargs="?", help="(optional; read from the run directory)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write a SavedModel version for serving")
    p.add_argument("model", nargs="?", help="(optional; read from the run directory)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--to", required=True, help="model base path; writes <to>/<next version>/")
    p.add_argument("--version", type=int, default=None)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="run an exported model locally on inputs")
    p.add_argument("export_dir", help="a SavedModel version directory (or its base path)")
    p.add_argument("inputs", nargs="+", help="image files for image models, text otherwise")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--top-k", type=int, default=3)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("pull", help="download, verify and install a published SavedModel")
    p.add_argument("artifact", help="published name, URL (http/https/file) or local .tar.gz")
    p.add_argument("--to", required=True, help="model base path; installs <to>/<next version>/")
    p.add_argument("--sha256", default=None, help="expected sha256 (required for URLs)")
    p.add_argument("--cache", default=None, type=Path, help="download cache directory")
    p.add_argument("--version", type=int, default=None)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("pack", help="write a SavedModel version as a .tar.gz artifact")
    p.add_argument("version_dir")
    p.add_argument("out")
    p.set_defaults(func=cmd_pack)

    sub.add_parser(
        "serve", help="TF Serving-compatible server (TF Serving's flags)", add_help=False
    )
    sub.add_parser("generate", help="sample text from a trained language model", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zoo` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if argv and argv[0] == "serve":
        return _forward("serving.main", argv[1:])
    if argv and argv[0] == "generate":
        return _forward("training.generate", argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"zoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
