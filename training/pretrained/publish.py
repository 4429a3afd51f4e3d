"""`zoo publish RUN_DIR NAME`: a training run -> artifact, card and manifest entry, in one step.

The artifact is a minimal run directory: `run.json`, one weights-only checkpoint (float16
with `half`), `metrics.json` and `card.md`. It is staged in a hidden folder inside the
output folder, evaluated there with the family's recipe (`training.evaluate.run`: the
metric on the card is measured on the artifact itself, after any compression), packed
reproducibly, and only then moved in beside its card, with the manifest written last. An
artifact replaces the current version of its name only when its headline metric improves;
the replaced version's archive is removed (its manifest record stays, so mirrors that keep
the file can still serve `NAME@VERSION`).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.layout import replace_file, write_json_atomic, write_text_atomic
from training.pretrained import headline
from training.pretrained.archive import pack, sha256_of
from training.pretrained.card import CardFacts, intended_use, render
from training.pretrained.datasets import infer_dataset
from training.pretrained.errors import PublishError
from training.pretrained.fetch import Log, log_to_stderr
from training.pretrained.manifest import Manifest, Release, check_name, pretrained_dir
from training.pretrained.weights import weights_only
from zoo import catalog

Evaluate = Callable[[Path, str | None, int | None], dict[str, Any]]
_CKPT = re.compile(r"^ckpt-(\d+)\.weights\.h5$")


def _default_evaluate(run_dir: Path, data_dir: str | None, batch_size: int | None) -> dict:
    from training import evaluate  # TensorFlow

    return evaluate.run(run_dir, data_dir, batch_size)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _checkpoint(run_dir: Path) -> tuple[Path, int, str]:
    """(the checkpoint that export and evaluate use, its epoch number, a note for the card):
    the best one when the run keeps one, else the newest."""
    found = sorted(
        (int(m.group(1)), p)
        for p in (run_dir / "checkpoints").glob("ckpt-*.weights.h5")
        if (m := _CKPT.match(p.name))
    )
    if not found:
        raise PublishError(f"{run_dir} has no completed checkpoint")
    last = found[-1][0]
    best = run_dir / "checkpoints" / "best.weights.h5"
    if best.is_file():
        history = _read_json(run_dir / "history.json") or []
        marked = [h["epoch"] for h in history if h.get("best")]
        epoch = int(marked[-1]) if marked else last
        monitor = (
            (_read_json(run_dir / "run.json") or {})
            .get("config", {})
            .get("checkpoint_monitor", "the monitored value")
        )
        return best, epoch, f"the best epoch by {monitor} (epoch {epoch} of {last})"
    return found[-1][1], last, f"the last epoch ({last})"


def _half_check(metric: dict, run_metric: dict | None, log: Log) -> None:
    """Warn when float16 storage moved the headline metric by 0.1 point or more."""
    if run_metric is None:
        return
    scale = 100.0 if metric.get("percent") else 1.0
    delta = abs(metric["value"] - run_metric["value"]) * scale
    if delta >= 0.1:
        log(
            f"warning: float16 weights moved {metric['name']} by {delta:.2f} points "
            f"({headline.format_metric(run_metric)} -> {headline.format_metric(metric)}); "
            "consider publishing without --half"
        )


def publish(
    run_dir: str | Path,
    name: str,
    *,
    out: str | Path | None = None,
    half: bool = False,
    data_dir: str | None = None,
    command: str | None = None,
    dataset: str | None = None,
    use: str | None = None,
    batch_size: int | None = None,
    evaluate: Evaluate = _default_evaluate,
    log: Log = log_to_stderr,
) -> Release:
    """Publish the trained run `run_dir` as the next version of artifact `name` in `out`
    (the repository's `pretrained/` by default); returns the manifest's new release.

    `command` and `data_dir` default to what the run recorded in run.json; `dataset` to
    the dataset `data_dir` or the config names, else the family's reference data.
    """
    run_dir = Path(run_dir)
    try:
        check_name(name)
    except ValueError as err:
        raise PublishError(str(err)) from None
    run_info = _read_json(run_dir / "run.json")
    if run_info is None:
        raise PublishError(f"{run_dir} is not a training run (no run.json)")
    family, config = run_info["model"], run_info["config"]
    if name.split("/")[0] != family:
        raise PublishError(f"{run_dir} trained {family}: name it {family}/<variant>, not {name}")
    info = catalog.family(family)
    if info is None:
        raise PublishError(f"unknown model family {family!r}")
    command = command or run_info.get("command")
    if not command:
        raise PublishError(
            f"{run_dir}/run.json does not record the command that trained it; "
            "pass --command 'zoo train ...'"
        )
    data_dir = data_dir or run_info.get("data_dir")
    try:
        data = infer_dataset(family, config, data_dir, dataset)
    except KeyError as err:
        raise PublishError(str(err.args[0])) from None
    checkpoint, epoch, note = _checkpoint(run_dir)

    out = Path(out) if out is not None else pretrained_dir()
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out)
    previous = manifest.latest(name)
    version = previous.version + 1 if previous else 1
    stem = f"{name.replace('/', '-')}-v{version}"

    with tempfile.TemporaryDirectory(prefix=".publish-", dir=out) as tmp:
        stage = Path(tmp) / "artifact"
        weights = stage / "checkpoints" / f"ckpt-{epoch:04d}.weights.h5"
        weights.parent.mkdir(parents=True)
        write_json_atomic(stage / "run.json", run_info)
        stored = weights_only(checkpoint, weights, half=half)
        dtype = "float16" if stored.half_arrays else "float32"
        metrics = evaluate(stage, data_dir, batch_size)
        metric = headline.pick(info.task, config, metrics)
        if not headline.improves(metric, previous.metric if previous else None):
            raise PublishError(
                f"{headline.format_metric(metric)} does not improve on {previous.reference}'s "
                f"{headline.format_metric(previous.metric)}; nothing was replaced"
            )
        run_metrics = _read_json(run_dir / "metrics.json") or {}
        run_metric = None  # the float32 run's own figure, beside the float16 artifact's
        if dtype == "float16" and metric["name"] in run_metrics:
            run_metric = headline.pick(info.task, config, run_metrics)
            _half_check(metric, run_metric, log)
        write_json_atomic(
            stage / "metrics.json",
            {**metrics, "measured_on": "this artifact", "weights_dtype": dtype},
        )
        facts = CardFacts(
            name=name,
            version=version,
            family=family,
            task=info.task,
            description=info.description,
            preset=run_info.get("preset", ""),
            metric=metric,
            metrics=metrics,
            dataset=data,
            command=command,
            data_dir=data_dir,
            parameters=stored.parameters,
            weights_file=f"checkpoints/{weights.name}",
            weights_sha256=sha256_of(weights),
            weights_dtype=dtype,
            checkpoint_note=note,
            intended_use=use or intended_use(info.task, config, run_info.get("assets", {})),
            run_metric=run_metric,
        )
        write_text_atomic(stage / "card.md", render(facts))
        packed = Path(tmp) / "artifact.tar.gz"
        sha256 = pack(stage, packed)
        size = packed.stat().st_size
        archive = {"file": f"{stem}.tar.gz", "size": size, "sha256": sha256}
        write_text_atomic(out / f"{stem}.md", render(facts, archive))
        replace_file(packed, out / archive["file"])

    release = Release(
        name=name,
        version=version,
        file=archive["file"],
        sha256=sha256,
        size=size,
        metric=metric,
        dataset=data.key,
        licence=data.licence,
        restricted=data.restricted,
        card=f"{stem}.md",
        parameters=stored.parameters,
        weights_dtype=dtype,
    )
    manifest.add(release)
    manifest.save()
    if previous is not None and previous.file != release.file:
        (out / previous.file).unlink(missing_ok=True)  # replaced: keep the folder small
    return release
