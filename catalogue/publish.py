"""`zoo publish RUN_DIR NAME`: a training run -> artifact, card and manifest entry, in one step.

The artifact is a minimal run directory: `run.json`, one weights-only checkpoint (float16
with `half`), `metrics.json` and `card.md`, plus its prebuilt SavedModel (`prebuilt`: the
export `zoo pull` and `make serve` install by extraction, its weights taken from the
checkpoint). It is staged in a hidden folder inside the output folder, evaluated there with
the family's recipe (`training.evaluate.run`: the metric on the card is measured on the
artifact itself, after any compression), packed reproducibly, and only then moved in beside
its card, with the manifest written last. An artifact replaces the current version of its
name only when its headline metric improves; the replaced version's archive is removed (its
manifest record stays, so mirrors that keep the file can still serve `NAME@VERSION`).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalogue import headline, prebuilt
from catalogue.archive import pack, sha256_of
from catalogue.card import CardFacts, intended_use, render
from catalogue.datasets import Dataset, infer_dataset
from catalogue.errors import PublishError, PullError
from catalogue.fetch import Log, log_to_stderr
from catalogue.manifest import Manifest, Release, check_name, pretrained_dir
from catalogue.weights import weights_only
from serving.layout import replace_file, write_json_atomic, write_text_atomic
from training import run_files
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
    info = _read_json(run_dir / "run.json") or {}
    config = info.get("config", {})
    metrics = _read_json(run_dir / "metrics.json")  # written when a run ends
    unfinished = ""
    if metrics is None:
        unfinished = f"; published before its run ended ({_planned_epochs(info)})"
    best = run_dir / "checkpoints" / "best.weights.h5"
    if best.is_file():
        history = _read_json(run_dir / "history.json") or []
        marked = [h["epoch"] for h in history if h.get("best")]
        epoch = int(marked[-1]) if marked else last
        monitor = config.get("checkpoint_monitor", "the monitored value")
        return best, epoch, f"the best epoch by {monitor} (epoch {epoch} of {last}){unfinished}"
    trained = _trained_epochs(info)
    if _is_artifact(metrics) and trained > last:
        # an unpacked artifact, published again (a new export of the same weights): it
        # kept one checkpoint, its run's best, and its run trained on past it
        monitor = config.get("checkpoint_monitor", "the monitored value")
        return found[-1][1], last, f"the best epoch by {monitor} (epoch {last} of {trained})"
    return found[-1][1], last, f"the last epoch ({last}){unfinished}"


def _is_artifact(metrics: dict | None) -> bool:
    """Whether these metrics are a published artifact's (an unpacked archive published
    again), not the ones its run wrote."""
    return (metrics or {}).get("measured_on") == "this artifact"


def _trained_epochs(info: dict) -> int:
    """The epochs the run's recorded training segments reached (0 when none are recorded)."""
    segments = info.get("training", {}).get("segments") or []
    return max((int(s["epochs"][1]) for s in segments if s.get("epochs")), default=0)


def _planned_epochs(info: dict) -> str:
    """What the run's last command asks for, as "N epochs" (its --epochs, else the config's)."""
    segments = info.get("training", {}).get("segments") or [{}]
    asked = re.search(r"--epochs[ =](\d+)", segments[-1].get("command", ""))
    epochs = asked.group(1) if asked else info.get("config", {}).get("epochs", "?")
    return f"its command asks for {epochs} epochs"


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


@dataclass(frozen=True)
class _Run:
    """The facts of the run being published, checked before anything is written."""

    path: Path
    info: dict[str, Any]  # run.json
    family: catalog.FamilyInfo
    command: str
    data_dir: str | None
    dataset: Dataset
    checkpoint: Path
    epoch: int
    checkpoint_note: str

    @property
    def config(self) -> dict[str, Any]:
        """The run's config (run.json's)."""
        return self.info["config"]


def _read_run(
    run_dir: Path, name: str, command: str | None, data_dir: str | None, dataset: str | None
) -> _Run:
    """Check that `run_dir` can be published as `name` and gather what the card needs."""
    try:
        check_name(name)
    except ValueError as err:
        raise PublishError(str(err)) from None
    info = _read_json(run_dir / "run.json")
    if info is None:
        raise PublishError(f"{run_dir} is not a training run (no run.json)")
    family = info["model"]
    if name.split("/")[0] != family:
        raise PublishError(f"{run_dir} trained {family}: name it {family}/<variant>, not {name}")
    family_info = catalog.family(family)
    if family_info is None:
        raise PublishError(f"unknown model family {family!r}")
    command = command or info.get("command")
    if not command:
        raise PublishError(
            f"{run_dir}/run.json does not record the command that trained it; "
            "pass --command 'zoo train ...'"
        )
    data_dir = data_dir or info.get("data_dir")
    try:
        data = infer_dataset(family, info["config"], data_dir, dataset)
    except KeyError as err:
        raise PublishError(str(err.args[0])) from None
    return _Run(run_dir, info, family_info, command, data_dir, data, *_checkpoint(run_dir))


def _card_facts(
    run: _Run, name: str, version: int, metrics: dict, metric: dict, **facts: Any
) -> CardFacts:
    """The card's facts: the run's, the evaluation's, and the stored weights' (`facts`)."""
    return CardFacts(
        name=name,
        version=version,
        family=run.family.name,
        task=run.family.task,
        description=run.family.description,
        preset=run.info.get("preset", ""),
        metric=metric,
        metrics=metrics,
        dataset=run.dataset,
        command=run.command,
        seed=run.info.get("seed"),
        training=run.info.get("training"),  # not a legacy free-text `trained_on`
        data_dir=run.data_dir,
        checkpoint_note=run.checkpoint_note,
        **facts,
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
    as_family: bool = False,
    evaluate: Evaluate = _default_evaluate,
    log: Log = log_to_stderr,
) -> Release:
    """Publish the trained run `run_dir` as the next version of artifact `name` in `out`
    (the repository's `pretrained/` by default); returns the manifest's new release.

    `command` and `data_dir` default to what the run recorded in run.json; `dataset` to
    the dataset `data_dir` or the config names, else the family's reference data.
    `as_family`: `make serve` serves this artifact under its family's name (`gpt`), and
    the family's other artifacts as `<family>-<variant>`.
    """
    run = _read_run(Path(run_dir), name, command, data_dir, dataset)
    out = Path(out) if out is not None else pretrained_dir()
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out)
    previous = manifest.latest(name)
    version = previous.version + 1 if previous else 1
    stem = f"{name.replace('/', '-')}-v{version}"

    with tempfile.TemporaryDirectory(prefix=".publish-", dir=out) as tmp:
        stage = Path(tmp) / "artifact"
        weights = stage / "checkpoints" / f"ckpt-{run.epoch:04d}.weights.h5"
        weights.parent.mkdir(parents=True)
        run_files.write_info(stage, run.info)
        stored = weights_only(run.checkpoint, weights, half=half)
        dtype = "float16" if stored.half_arrays else "float32"
        metrics = evaluate(stage, run.data_dir, batch_size)
        from training.recipe import get_recipe  # Keras: imported when publishing, not listing

        metric = headline.pick(get_recipe(run.family.name).headline, run.config, metrics)
        if not headline.improves(metric, previous.metric if previous else None):
            raise PublishError(
                f"{headline.format_metric(metric)} does not improve on {previous.reference}'s "
                f"{headline.format_metric(previous.metric)}; nothing was replaced"
            )
        try:  # the SavedModel `zoo pull` and `make serve` install, with no export there
            prebuilt.prebuild(stage, name.split("/")[0])
        except PullError as err:
            raise PublishError(f"{run.path} does not export: {err}") from None
        run_metrics = _read_json(run.path / "metrics.json") or {}
        if _is_artifact(run_metrics):
            run_metrics = {}  # measured with its own export: not the float32 run's
        run_metric = None  # the float32 run's own figure, beside the float16 artifact's
        if dtype == "float16" and metric["name"] in run_metrics:
            run_metric = headline.pick(
                get_recipe(run.family.name).headline, run.config, run_metrics
            )
            _half_check(metric, run_metric, log)
        write_json_atomic(
            stage / "metrics.json",
            {**metrics, "measured_on": "this artifact", "weights_dtype": dtype},
        )
        facts = _card_facts(
            run,
            name,
            version,
            metrics,
            metric,
            parameters=stored.parameters,
            weights_file=f"checkpoints/{weights.name}",
            weights_sha256=sha256_of(weights),
            weights_dtype=dtype,
            intended_use=use
            or intended_use(
                get_recipe(run.family.name).intended_use,
                run.config,
                run.info.get("assets", {}),
            ),
            run_metric=run_metric,
        )
        write_text_atomic(stage / "card.md", render(facts))
        packed = Path(tmp) / "artifact.tar.gz"
        archive = {"file": f"{stem}.tar.gz", "sha256": pack(stage, packed)}
        archive["size"] = packed.stat().st_size
        write_text_atomic(out / f"{stem}.md", render(facts, archive))
        replace_file(packed, out / archive["file"])

    release = Release(
        name=name,
        version=version,
        file=archive["file"],
        sha256=archive["sha256"],
        size=archive["size"],
        metric=metric,
        dataset=run.dataset.key,
        licence=run.dataset.licence,
        restricted=run.dataset.restricted,
        card=f"{stem}.md",
        parameters=stored.parameters,
        weights_dtype=dtype,
    )
    manifest.add(release)
    if as_family:
        manifest.serve_as_family(name)
    manifest.save()
    if previous is not None and previous.file != release.file:
        (out / previous.file).unlink(missing_ok=True)  # replaced: keep the folder small
    return release
