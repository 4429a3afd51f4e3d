"""Model cards, generated from facts measured at publish time (never written by hand).

The card inside an archive cannot name the archive's own sha256, so a card is rendered
twice from the same facts: inside the archive with the weights file's sha256, and beside
the archive in the published folder (what `zoo card` prints) with the archive's size and
sha256 added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catalogue.datasets import Dataset
from catalogue.headline import format_metric
from catalogue.progress import format_size


def intended_use(text: str, config: dict[str, Any], assets: dict[str, Any]) -> str:
    """A recipe's default intended-use paragraph (`Recipe.intended_use`), filled in from
    the run: `{classes}` from its class names, other fields from its config."""
    classes = ", ".join(assets.get("class_names", [])[:10])
    if len(assets.get("class_names", [])) > 10:
        classes += ", ..."
    return text.format(
        **{"classes": classes or "its classes", "source_lang": "?", "target_lang": "?", **config}
    )


@dataclass(frozen=True)
class CardFacts:
    """Everything a card states; gathered and measured by `publish`."""

    name: str
    version: int
    family: str
    task: str
    description: str
    preset: str
    metric: dict[str, Any]
    metrics: dict[str, Any]
    dataset: Dataset
    command: str
    data_dir: str | None
    parameters: int
    weights_file: str
    weights_sha256: str
    weights_dtype: str
    checkpoint_note: str
    intended_use: str
    run_metric: dict[str, Any] | None = None
    seed: int | None = None  # recorded by runs since seeds were added; older runs: None
    training: dict[str, Any] | None = None  # run.json's `training` record (training.provenance)
    extra: dict[str, Any] = field(default_factory=dict)


def _environment(environment: dict[str, Any]) -> str | None:
    """One recorded environment in words: the accelerators by kind x count (the CPUs when
    there are none), the Keras backend and the dtype policy; None without devices."""
    devices = environment.get("devices") or []
    shown = [d for d in devices if d.get("kind") != "CPU"] or devices
    if not shown or not environment.get("backend"):
        return None
    named = [
        f"{d['count']} x {d['kind']}"
        + (f" ({d['name']})" if d.get("name") and d["name"].lower() != d["kind"].lower() else "")
        for d in shown
    ]
    line = f"{' + '.join(named)}, Keras backend {environment['backend']}"
    policy = environment.get("precision_policy")
    return line + (f", dtype policy {policy}" if policy else "")


def trained_on(training: dict[str, Any] | None) -> str | None:
    """The card's "trained on" line from run.json's `training` record: each distinct
    environment its segments recorded, in order, and the seconds of training. None (the
    line is left out) when there is no record or a segment's environment was not recorded:
    a card names no machine that the run did not record itself."""
    segments = (training or {}).get("segments") or []
    places: list[str | None] = []
    for segment in segments:
        place = _environment(segment.get("environment") or {})
        if place not in places:
            places.append(place)
    if not places or None in places:
        return None
    line = "; then ".join(p for p in places if p)
    seconds = (training or {}).get("seconds")
    if seconds is not None:
        starts = f" in {len(segments)} segments" if len(segments) > 1 else ""
        line += f"; {seconds:.0f} s of training{starts}"
    return line


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def render(facts: CardFacts, archive: dict[str, Any] | None = None) -> str:
    """The card as Markdown; `archive` (file, size, sha256) adds the archive's identity."""
    held_out = f"{facts.dataset.key} {facts.dataset.held_out}"
    if facts.weights_dtype == "float16":
        weights = (
            "float16 in the archive (half the size), converted back to float32 when "
            "loaded; the metric above was measured on these float16 weights"
        )
    else:
        weights = "float32"
    rows = [
        (
            "metric (held-out split)",
            f"{format_metric(facts.metric)} on {held_out}, measured on this artifact",
        ),
    ]
    if facts.run_metric is not None:
        rows.append(
            ("the float32 run", f"{format_metric(facts.run_metric)} (its own metrics.json)")
        )
    rows += [
        (
            "trained with",
            f"`{facts.command}`"
            + (f" (random seed {facts.seed})" if facts.seed is not None else ""),
        ),
    ]
    where = trained_on(facts.training)
    if where:
        rows.append(("trained on", where))
    rows += [
        (
            "dataset",
            f"{facts.dataset.title}; {facts.dataset.source}"
            + (f"; read from `{facts.data_dir}`" if facts.data_dir else ""),
        ),
        (
            "licence of the data",
            facts.dataset.licence
            + (" (restricted: printed on every pull)" if facts.dataset.restricted else ""),
        ),
        ("model", f"{facts.family} / preset `{facts.preset}` ({facts.task})"),
        ("parameters", f"{facts.parameters:,}"),
        ("weights", f"{weights}; {facts.checkpoint_note}"),
        (f"sha256 of {facts.weights_file}", f"`{facts.weights_sha256}`"),
    ]
    if archive is not None:
        rows.append(("archive", f"{archive['file']}, {format_size(archive['size'])}"))
        rows.append(("sha256 of the archive", f"`{archive['sha256']}`"))
    lines = [
        f"# {facts.name} (version {facts.version})",
        "",
        facts.description,
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
        "## Intended use",
        "",
        facts.intended_use,
        "",
        f"## All metrics on {held_out} (measured on this artifact)",
        "",
        *(f"- {key}: {_number(value)}" for key, value in sorted(facts.metrics.items())),
        "",
        "## Use",
        "",
        "```sh",
        f"zoo pull {facts.name} --to models/{facts.family}",
        f"zoo finetune {facts.name} --data-dir DATA --model-dir runs/mine",
        "```",
        "",
        "```python",
        "from catalogue import load_model",
        "",
        f'model, run_info = load_model("{facts.name}")',
        "```",
        "",
    ]
    return "\n".join(lines)
