"""What a request will cost a signature, bounded before the graph runs.

The decoders have already bounded what a request *declares* against what it *sent*
(`serving.limits`). What a signature then does with it can still amplify it: a text model
pads every row to the longest one (the tagger then to 20 characters a word), an image
model decodes each image at its full size before resizing it, a generator runs one step
per new token and beam. These costs are known from the inputs alone, so they are checked
here, after validation and before `Servable.run`, against the flags of `serving.limits`:

- **text** (`rows x longest string x weight`) and **tokens** (`elements x weight`) against
  `--max_padded_text_bytes`;
- **images**: each encoded image's pixels, read from its header (Pillow reads headers
  without decoding), against `--max_image_pixels`, and the request's images, each counted
  at least at the signature's working size (`weight` pixels), against `--max_request_pixels`;
  float **pixels** arrays `[N, H, W, C]` count `N x max(H x W, weight)` there too;
- **generation** (`rows x beams x new tokens`) against `--max_generated_tokens`.

A SavedModel declares what its inputs are in `assets.extra/request_costs.json` (the zoo's
exports write it, `COSTS_PATH`):

    {"serving_default": {"inputs": {"sentences": {"kind": "text", "weight": 4}}},
     "generate": {"inputs": {"prompt": {"kind": "text"},
                             "max_new_tokens": {"kind": "new_tokens"}}},
     "translate": {"inputs": {...}, "new_tokens": 80, "beams": 4}}

Signature-level `new_tokens` / `beams` are what the signature generates when no input says.
Any other SavedModel gets the checks that need no declaration: the element bound of the
decoders, and the header check of every string element that starts like an encoded image
(JPEG, PNG, GIF, WebP; BMP only where it parses), since `tf.io.decode_image` decodes
exactly those.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving import limits
from serving.errors import invalid

COSTS_FILE = "request_costs.json"
#: where a SavedModel version declares its request costs
COSTS_PATH = Path("assets.extra") / COSTS_FILE
_MAX_COSTS_BYTES = 1 << 20

KINDS = ("text", "tokens", "image", "pixels", "new_tokens", "beams")


@dataclass(frozen=True)
class InputCost:
    """What one input is: its kind (one of KINDS), its weight in that kind's units, and for
    `new_tokens` / `beams` the cap the signature clamps values to (0: none)."""

    kind: str
    weight: int = 1
    cap: int = 0


@dataclass(frozen=True)
class SignatureCost:
    """A signature's declared inputs, and what it generates when no input says."""

    inputs: dict[str, InputCost] = field(default_factory=dict)
    new_tokens: int = 0
    beams: int = 1

    @property
    def generates(self) -> bool:
        """Whether the signature generates tokens (runs a loop as long as it is asked)."""
        return self.new_tokens > 0 or any(i.kind == "new_tokens" for i in self.inputs.values())


def _positive_int(value, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_costs(doc) -> dict[str, SignatureCost]:
    """Signature name -> SignatureCost from the JSON document; ValueError when malformed."""
    if not isinstance(doc, dict):
        raise ValueError("the document must be a JSON object keyed by signature name")
    out = {}
    for sig_name, entry in doc.items():
        where = f"signature {sig_name!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("inputs", {}), dict):
            raise ValueError(f"{where} must be an object with an 'inputs' object")
        inputs = {}
        for name, spec in entry.get("inputs", {}).items():
            if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
                raise ValueError(f"{where} input {name!r} needs a kind, one of {KINDS}")
            weight = _positive_int(spec.get("weight", 1), f"{where} input {name!r} weight", 1)
            cap = _positive_int(spec.get("cap", 0), f"{where} input {name!r} cap")
            inputs[name] = InputCost(spec["kind"], weight, cap)
        out[sig_name] = SignatureCost(
            inputs,
            _positive_int(entry.get("new_tokens", 0), f"{where} new_tokens"),
            _positive_int(entry.get("beams", 1), f"{where} beams", 1),
        )
    return out


def read_costs(version_dir: str | Path) -> dict[str, SignatureCost]:
    """The declared costs of a SavedModel version ({} when it declares none).

    Raises ValueError naming the file when it is unreadable or malformed, so that the load
    fails with a clear message instead of serving with the checks silently off.
    """
    path = Path(version_dir) / COSTS_PATH
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_COSTS_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    if len(raw) > _MAX_COSTS_BYTES:
        raise ValueError(f"{path}: larger than {_MAX_COSTS_BYTES} bytes")
    try:
        return parse_costs(json.loads(raw))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None


def write_costs(version_dir: str | Path, costs: dict[str, dict]) -> None:
    """Write a declaration (validated first) into a SavedModel version being exported."""
    parse_costs(costs)
    path = Path(version_dir) / COSTS_PATH
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(costs, indent=1, sort_keys=True))


# ---- image headers -------------------------------------------------------------------------
def _image_class(data: bytes):
    """The Pillow image class for `data`'s magic (None when it has none)."""
    from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin

    if data.startswith(b"\xff\xd8\xff"):
        return JpegImagePlugin.JpegImageFile
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PngImagePlugin.PngImageFile
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GifImagePlugin.GifImageFile
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        from PIL import WebPImagePlugin

        return WebPImagePlugin.WebPImageFile
    if data.startswith(b"BM"):
        return BmpImagePlugin.BmpImageFile
    return None


def image_pixels(data: bytes, strict: bool) -> int | None:
    """Pixels `tf.io.decode_image` would allocate for one encoded image (frames x width x
    height), read from its header; None when `data` is not an image.

    Pillow's image classes parse the header only (pixels are read on `load()`), and built
    directly they skip `Image.open`'s own bomb check, so the real size is known. With
    `strict` (an input declared as images), bytes that start like an image but whose header
    does not parse are refused (INVALID_ARGUMENT) rather than passed on to a decoder that
    might read them; elsewhere they count as no image ("BMW" starts like a BMP).
    """
    if data[:1] not in (b"\xff", b"\x89", b"G", b"B", b"R"):
        return None  # the common case for text: no parse at all
    image_class = _image_class(data)
    if image_class is None:
        return None
    try:
        with image_class(io.BytesIO(data)) as image:
            width, height = image.size
            frames = getattr(image, "n_frames", 1) if image.format == "GIF" else 1
    except Exception:  # Pillow raises many types on corrupt headers
        if strict:
            raise invalid("an image's header cannot be read (corrupt or truncated)") from None
        return None
    return int(frames) * int(width) * int(height)


# ---- the check -----------------------------------------------------------------------------
def _longest(array: np.ndarray) -> int:
    return max((len(v) for v in array.flat if isinstance(v, bytes | str)), default=0)


def _rows(inputs: dict[str, np.ndarray], names) -> int:
    return max((inputs[n].shape[0] for n in names if inputs[n].ndim), default=1)


def _images(name: str, array: np.ndarray, spec: InputCost | None) -> int:
    """The request pixels of one string input, each image checked on its own."""
    lim = limits.current()
    declared = spec is not None and spec.kind == "image"
    total = 0
    for value in array.flat:
        if not isinstance(value, bytes):
            continue
        pixels = image_pixels(value, strict=declared)
        if pixels is not None and pixels > lim.max_image_pixels:
            raise lim.exceeded("max_image_pixels", f"An image of input '{name}' (pixels)", pixels)
        if declared:
            total += max(pixels or 0, spec.weight)
        elif pixels is not None:
            total += pixels
    return total


def check(inputs: dict[str, np.ndarray], declared: SignatureCost | None) -> None:
    """Refuse (INVALID_ARGUMENT naming the flag) a request whose cost is over a limit."""
    specs = declared.inputs if declared is not None else {}
    text: dict[str, int] = {}  # input -> padded units
    pixels = 0
    default_new = declared.new_tokens if declared else 0
    new_tokens: np.ndarray | int = default_new
    beams: np.ndarray | int = declared.beams if declared else 1
    for name, array in inputs.items():  # element counts: already bounded by the decoders
        spec = specs.get(name)
        kind = spec.kind if spec else None
        if kind == "text":
            text[name] = array.size * _longest(array) * spec.weight
        elif kind == "tokens":
            text[name] = array.size * spec.weight
        elif kind == "pixels":
            h, w = (array.shape[1], array.shape[2]) if array.ndim >= 3 else (1, 1)
            pixels += (array.shape[0] if array.ndim else 1) * max(h * w, spec.weight)
        elif kind == "new_tokens":
            new_tokens = _per_row(array, default_new, spec.cap)
        elif kind == "beams":
            beams = _per_row(array, declared.beams, spec.cap)
        elif array.dtype == object:
            pixels += _images(name, array, spec)
    if text:
        _limit(sum(text.values()), "max_padded_text_bytes", _text_what(text, specs))
    if pixels:
        _limit(pixels, "max_request_pixels", "The request's images (pixel-equivalents)")
    generation = _generated_tokens(inputs, specs, new_tokens, beams)
    if generation:
        _limit(generation, "max_generated_tokens", "The tokens asked for (rows x beams x new)")


def _text_what(text: dict[str, int], specs: dict[str, InputCost]) -> str:
    """What the padded-text limit is about, for its error message."""

    def unit(name: str) -> str:
        spec = specs[name]
        padded = "elements" if spec.kind == "tokens" else "rows x longest string in bytes"
        return padded + (f" x weight {spec.weight}" if spec.weight != 1 else "")

    if len(text) == 1:
        (name,) = text
        return f"Input '{name}' padded ({unit(name)})"
    parts = ", ".join(f"'{n}' {v} ({unit(n)})" for n, v in text.items())
    return f"The text inputs padded ({parts}) in all"


def _per_row(values: np.ndarray, default: int, cap: int) -> np.ndarray:
    """A signature's view of a count input: <= 0 means its default, and it clamps to cap."""
    values = np.asarray(values).astype(np.int64, copy=False)
    values = np.where(values <= 0, default, values)
    return np.minimum(values, cap) if cap else values


def _generated_tokens(inputs, specs, new_tokens, beams) -> int:
    """rows x beams x new tokens, per row where the inputs are per row."""
    if isinstance(new_tokens, int) and new_tokens == 0:
        return 0
    sources = [n for n, s in specs.items() if s.kind in ("text", "tokens", "image", "pixels")]
    rows = _rows(inputs, [n for n in sources if n in inputs])
    try:
        per_row = np.broadcast_to(
            np.asarray(new_tokens, np.int64) * np.clip(np.asarray(beams, np.int64), 1, None),
            (rows,),
        )
    except ValueError:  # per-row inputs of another length: the signature will refuse them
        return 0
    return int(per_row.sum())


def _limit(value: int, flag: str, what: str) -> None:
    lim = limits.current()
    if value > getattr(lim, flag):
        raise lim.exceeded(flag, what, value)
