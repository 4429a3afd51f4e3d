"""The headline metric in the catalogue: picked from an evaluation by the recipe's
`Headline` (the task layer says which number a card, the manifest and `zoo list` show, and
which direction is better), formatted, and compared (an artifact is replaced only when it
improves)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.recipe import Headline


def pick(headline: Headline | None, config: dict[str, Any], metrics: dict[str, Any]) -> dict:
    """The manifest's `metric` record (name, value, direction and display style) of a
    recipe's `headline` (`training.recipe.Headline`)."""
    if headline is None:
        raise KeyError("the family's recipe names no headline metric")
    key = headline.key.format(**{"tagset": "upos", **config})
    if key not in metrics:
        raise KeyError(f"the evaluation has no {key!r} metric (it has {sorted(metrics)})")
    return {
        "name": key,
        "value": float(metrics[key]),
        "higher_is_better": headline.higher_is_better,
        "percent": headline.percent,
    }


def format_metric(metric: dict[str, Any]) -> str:
    """`accuracy 72.8%`, `bleu 35.3`, `val_loss 1.820`."""
    value = float(metric["value"])
    if metric.get("percent"):
        return f"{metric['name']} {100 * value:.1f}%"
    return f"{metric['name']} {value:.3f}" if abs(value) < 10 else f"{metric['name']} {value:.1f}"


def improves(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether metric `new` is strictly better than `old` (anything beats nothing)."""
    if old is None:
        return True
    if new["name"] != old["name"]:
        raise ValueError(f"cannot compare {new['name']} with {old['name']}")
    if new["higher_is_better"]:
        return float(new["value"]) > float(old["value"])
    return float(new["value"]) < float(old["value"])
