"""A served version's model card: the small JSON file `zoo pull` installs beside its SavedModel.

`assets.extra/zoo_card.json` (TF Serving ignores `assets.extra/` but for its warmup file) holds
flat facts of the published artifact: `artifact` (`name@version`), `metric` (its headline,
e.g. "bleu 35.4"), `dataset`, `licence`, `parameters`, `size` (archive bytes),
`weights_dtype` and `restricted`. The server reads it once when the version loads and shows it
through the Open Inference Protocol's model configuration (`GET /v2/models/{m}/config`, its
`parameters`), where the web page reads it like any client. A version without a card (a
SavedModel not installed from the catalogue) simply has none; a card that is too large or
not a flat JSON object is ignored with a warning, never failing the load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

CARD_PATH = "assets.extra/zoo_card.json"
MAX_CARD_BYTES = 16 * 1024

log = logging.getLogger(__name__)


def read_card(version_dir: str | Path) -> dict[str, str]:
    """The card of `version_dir` as strings ({} when it has none or it is unreadable)."""
    path = Path(version_dir) / CARD_PATH
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CARD_BYTES + 1)  # bounded before it is parsed
    except FileNotFoundError:
        return {}
    except OSError as err:
        log.warning("ignoring the model card %s: %s", path, err)
        return {}
    if len(data) > MAX_CARD_BYTES:
        log.warning("ignoring the model card %s: larger than %d bytes", path, MAX_CARD_BYTES)
        return {}
    try:
        card = json.loads(data)
    except ValueError as err:
        log.warning("ignoring the model card %s: %s", path, err)
        return {}
    if not isinstance(card, dict) or not all(
        isinstance(v, str | int | float | bool) for v in card.values()
    ):
        log.warning("ignoring the model card %s: not a flat JSON object", path)
        return {}
    return {str(k): _text(v) for k, v in card.items()}


def _text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
