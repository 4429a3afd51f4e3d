"""The `zoo` command: list | card | train | finetune | evaluate | export | predict | caption |
translate | pull | publish | pack | serve | generate.

This is the application layer: subcommands import `training` / `catalogue` / `serving`
lazily, so `zoo list` stays fast and the model code in `zoo/` stays framework-free.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tfzoo import quiet

if TYPE_CHECKING:
    import keras

#: Commands that do not import TensorFlow up front (`zoo list` answers in well under a
#: second; `zoo pull` imports it only to export a run artifact).
WITHOUT_TENSORFLOW = {"list", "card", "pack", "pull"}


def parse_overrides(pairs: list[str]) -> dict:
    """`--set key=value` pairs as a dict; values are JSON, or strings when they are not."""
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
    from catalogue import Manifest
    from catalogue.headline import format_metric
    from catalogue.progress import format_size
    from zoo import catalog

    manifest = Manifest()
    releases = [manifest.latest(name) for name in manifest.names()]
    for family in catalog.families():
        presets = ", ".join(family.presets)
        print(f"{family.name:16s} {family.task:22s} presets: {presets:32s} {family.description}")
        for release in (r for r in releases if r is not None and r.family == family.name):
            restricted = f"  [{release.licence}]" if release.restricted else ""
            print(
                f"{'':16s} pretrained: {release.reference:24s} "
                f"{format_metric(release.metric)} on {release.dataset}, "
                f"{format_size(release.size)}{restricted}"
            )
    if not any(releases):
        print(f"no pretrained artifacts in {manifest.path} yet (zoo publish RUN_DIR NAME)")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from catalogue import Manifest

    manifest = Manifest()
    release = manifest.resolve(args.name)
    print((manifest.directory / release.card).read_text(encoding="utf-8"), end="")
    return 0


def load_source(source: str) -> keras.Model:
    """A run directory or a published artifact NAME[@VERSION] as a trained Keras model: what
    `train.run` initialises parts of a new model from (the captioner's `encoder_init`)."""
    import catalogue

    model, _ = catalogue.load_model(source)
    return model


def _train_kwargs(args: argparse.Namespace, **provenance) -> dict:
    """train.run's arguments; how the run was made goes into its run.json (for the card)."""
    command = shlex.join(["zoo", *args.argv])
    return dict(
        load_source=load_source,
        provenance={"command": command, "data_dir": args.data_dir, **provenance},
        preset=args.preset,
        model_dir=args.model_dir,
        data_dir=args.data_dir,
        data=getattr(args, "data", None),
        epochs=args.epochs,
        batch_size=args.batch_size,
        strategy=args.strategy,
        overrides=parse_overrides(args.set),
        steps_per_epoch=args.steps_per_epoch,
        tpu=args.tpu,
        steps_per_execution=args.steps_per_execution,
        seed=args.seed,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.xla],
        verbose=args.verbose,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from training import train

    metrics = train.run(args.model, **_train_kwargs(args))
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from training import prepare

    data = prepare.run(
        args.model,
        args.data_dir,
        args.out,
        preset=args.preset,
        overrides=parse_overrides(args.set),
        command=shlex.join(["zoo", *args.argv]),
        load_source=load_source,
    )
    rows = {s: len(next(iter(data.split(s).values()))) for s in data.splits}
    print(json.dumps({"prepared": str(data.path), "preset": data.preset, "rows": rows}))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    import catalogue
    from training import checkpoints, train
    from training.recipe import get_recipe

    source, parent = Path(args.source), {"run_dir": str(Path(args.source).resolve())}
    if not source.is_dir():  # a published artifact: its run directory, unpacked in the cache
        try:
            source, target = catalogue.run_dir_for(
                args.source, args.cache, mirrors=args.mirror, log=_say
            )
        except catalogue.PullError as err:
            raise catalogue.PullError(f"{args.source} is not a run directory; {err}") from None
        parent = catalogue.parent_record(target)
    if checkpoints.latest_checkpoint(source / "checkpoints") is None:
        raise SystemExit(f"{source} has no completed checkpoint to fine-tune from")
    run_info = checkpoints.read_json(source / "run.json")
    kwargs = _train_kwargs(args, parent=parent)
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
    from tfzoo.verbs import predict

    for line in predict.run(args.export_dir, args.inputs, args.signature, args.top_k):
        print(line)
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from tfzoo.verbs import caption

    lines = caption.run(
        args.model, args.images, args.beam_size, args.max_length, args.attention_plot
    )
    print("\n".join(lines))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from tfzoo.verbs import translate

    lines = translate.run(
        args.model, args.sentences, args.beam_size, args.max_length, args.attention_plot
    )
    print("\n".join(lines))
    return 0


def _say(message: str) -> None:
    print(message, flush=True)


def sha256_arg(value: str) -> str:
    """argparse type of `--sha256`: exactly 64 hex digits, returned lowercased."""
    from catalogue.cache import check_sha256
    from catalogue.errors import PullError

    try:
        return check_sha256(value)
    except PullError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def seconds_arg(value: str) -> float:
    """argparse type of a duration: a positive, finite number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {value!r}")
    return seconds


def cmd_pull(args: argparse.Namespace) -> int:
    import catalogue

    cache = catalogue.Cache(args.cache)
    target, fetched = catalogue.fetch_reference(
        args.artifact, args.sha256, cache, mirrors=args.mirror, log=_say, deadline=args.timeout
    )
    if catalogue.archive_kind(fetched.path) == catalogue.RUN:
        quiet.import_tensorflow()  # a run artifact is exported into a SavedModel
    path = catalogue.install_fetched(target, fetched, args.to, args.version, cache)
    print(f"installed {path}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    import catalogue
    from catalogue.headline import format_metric

    release = catalogue.publish(
        args.run_dir,
        args.name,
        out=args.out,
        half=args.half,
        data_dir=args.data_dir,
        command=args.command_line,
        dataset=args.dataset,
        use=args.intended_use,
        batch_size=args.batch_size,
        as_family=args.as_family,
        log=_say,
    )
    print(
        f"published {release.reference}: {format_metric(release.metric)}, "
        f"{release.size:,} bytes, sha256 {release.sha256}"
    )
    print(f"wrote {Path(args.out or catalogue.pretrained_dir()) / release.file} and its card")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    import catalogue

    digest = catalogue.pack(args.version_dir, args.out)
    print(f"{digest}  {args.out}")
    return 0


def _forward(module: str, argv: list[str]) -> int:
    import importlib

    return int(importlib.import_module(module).main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `zoo` command."""
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="model families, presets and pretrained artifacts")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("card", help="print the model card of a published artifact")
    p.add_argument("name", help="NAME or NAME@VERSION")
    p.set_defaults(func=cmd_card)

    def source_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mirror",
            action="append",
            default=[],
            metavar="URL",
            help="base URL (or folder) serving pretrained/ files; tried in order "
            "after the repository's copy, before $TFZOO_MIRROR (comma-separated)",
        )
        p.add_argument(
            "--cache",
            default=None,
            type=Path,
            help="download cache (default $TFZOO_CACHE or ~/.cache/tfzoo)",
        )

    def training_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", default=None)
        p.add_argument("--model-dir", required=True, help="run directory (resumed if it exists)")
        p.add_argument("--data-dir", default=None, help="local data; default: TFDS (online)")
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=None, help="global batch size")
        p.add_argument("--steps-per-epoch", type=int, default=None)
        p.add_argument(
            "--seed",
            type=int,
            default=0,
            help="seed of initial weights, dropout and shuffling (default 0; kept on resume)",
        )
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
    p.add_argument(
        "--data",
        default=None,
        help="prepared arrays (`zoo prepare`) instead of --data-dir: any Keras backend, "
        "no TensorFlow needed",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prepare", help="write a family's data as arrays for `train --data`")
    p.add_argument("model")
    p.add_argument("--data-dir", default=None, help="local data; default: TFDS (online)")
    p.add_argument("--out", required=True, type=Path, help="folder to write (replaced whole)")
    p.add_argument("--preset", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("finetune", help="continue from a trained run or artifact on new data")
    p.add_argument("source", help="run directory, or published artifact NAME[@VERSION]")
    training_flags(p)
    source_flags(p)
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

    def decoding_flags(p: argparse.ArgumentParser, default_model: str) -> None:
        p.add_argument("--model", default=default_model, help="SavedModel base path or version")
        p.add_argument("--beam-size", type=int, default=0, help="1 greedy; 0 the export's")
        p.add_argument("--max-length", type=int, default=0, help="0: the export's cap")
        p.add_argument("--attention-plot", default=None, metavar="OUT.png",
                       help="draw the attention (OUT-<n>.png for several inputs)")  # fmt: skip

    p = sub.add_parser("caption", help="caption images with an exported captioner")
    p.add_argument("images", nargs="+")
    decoding_flags(p, "models/captioner")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("translate", help="translate sentences with an exported seq2seq model")
    p.add_argument("sentences", nargs="+")
    decoding_flags(p, "models/translate")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("pull", help="download, verify and install a pretrained artifact")
    p.add_argument("artifact", help="NAME[@VERSION] (see zoo list), URL or local .tar.gz")
    p.add_argument("--to", required=True, help="model base path; installs <to>/<next version>/")
    p.add_argument(
        "--sha256",
        default=None,
        type=sha256_arg,
        help="expected sha256, 64 hex digits (required for URLs)",
    )
    p.add_argument("--version", type=int, default=None)
    p.add_argument(
        "--timeout",
        type=seconds_arg,
        default=None,
        metavar="SECONDS",
        help="overall deadline of each download (default $TFZOO_PULL_TIMEOUT, else "
        "2 min + 4 s per MiB of the artifact, or 1 h when its size is unknown)",
    )
    source_flags(p)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("publish", help="pack a trained run as a pretrained artifact")
    p.add_argument("run_dir")
    p.add_argument("name", help="family/variant, e.g. cifar_convnet/paper")
    p.add_argument("--half", action="store_true", help="store the weights in float16")
    p.add_argument(
        "--as-family",
        action="store_true",
        help="make serve serves it under the family's name (gpt), other variants as gpt-<variant>",
    )
    p.add_argument("--out", default=None, help="published folder (default: the repo's pretrained/)")
    p.add_argument("--data-dir", default=None, help="data to evaluate on (default: the run's)")
    p.add_argument(
        "--command",
        dest="command_line",
        default=None,
        help="the command that trained the run (default: recorded in run.json)",
    )
    p.add_argument("--dataset", default=None, help="dataset key for the card's licence")
    p.add_argument("--intended-use", default=None, help="replaces the task's default text")
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("pack", help="write a SavedModel version or run artifact as a .tar.gz")
    p.add_argument("version_dir")
    p.add_argument("out")
    p.set_defaults(func=cmd_pack)

    sub.add_parser(
        "serve", help="TF Serving-compatible server (TF Serving's flags)", add_help=False
    )
    sub.add_parser("generate", help="sample text from a trained language model", add_help=False)
    return parser


def _backend_neutral(args: argparse.Namespace) -> bool:
    """Commands that run on any Keras backend without importing TensorFlow themselves:
    `prepare`, and `train --data` (Keras imports TensorFlow when it is the backend)."""
    return args.command == "prepare" or (args.command == "train" and bool(args.data))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zoo` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet.configure_environment()
    if argv and argv[0] in ("serve", "generate"):
        quiet.import_tensorflow()
        return _forward(
            {"serve": "serving.main", "generate": "tfzoo.verbs.generate"}[argv[0]], argv[1:]
        )
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.command not in WITHOUT_TENSORFLOW and not _backend_neutral(args):
            quiet.import_tensorflow()
        return args.func(args)
    except (KeyError, ValueError, OSError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
