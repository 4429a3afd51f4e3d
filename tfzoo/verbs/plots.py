"""Attention figures (matplotlib, no display needed):

- `caption_figure`: Show, Attend and Tell's Figure 2 (soft attention row): the image once per
  generated word, that word's attention over the feature grid upsampled (bilinear) over it
  (the unattended parts darkened), and the word underneath;
- `alignment_figure`: a translation's attention matrix, source words along the top, target
  words down the side (Bahdanau et al. 2015, Figure 3).

Both return a `matplotlib.figure.Figure` (one axes per panel); `save_png` writes it at a
fixed size (inches x dpi, no tight cropping), so the picture's pixel size is predictable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: inches of one caption panel (square) and of the word line under it
PANEL_INCHES, LABEL_INCHES = 2.0, 0.4
DPI = 100


def caption_grid(words: int, columns: int = 5) -> tuple[int, int]:
    """(rows, columns) of a caption figure with one panel per word."""
    columns = max(1, min(columns, words))
    return max(1, math.ceil(words / columns)), columns


def caption_figure_inches(words: int, aspect: float, columns: int = 5) -> tuple[float, float]:
    """(width, height) in inches of `caption_figure` for that many words and an image of
    `aspect` = height / width: panels `PANEL_INCHES` wide, each with its word line."""
    rows, columns = caption_grid(words, columns)
    return columns * PANEL_INCHES, rows * (PANEL_INCHES * aspect + LABEL_INCHES)


def caption_figure_pixels(
    words: int, aspect: float = 1.0, columns: int = 5, dpi: int = DPI
) -> tuple[int, int]:
    """(width, height) in pixels of `caption_figure`'s PNG (see `caption_figure_inches`;
    Agg truncates inches x dpi to whole pixels)."""
    width, height = caption_figure_inches(words, aspect, columns)
    return int(width * dpi), int(height * dpi)


def caption_figure(
    image: np.ndarray, words: Sequence[str], attention: np.ndarray, columns: int = 5
) -> Figure:
    """The image once per word, darkened where that word's attention is low (as in the
    paper's figures): the region a word attends to most shows as it is.

    Args:
        image: uint8 [H, W, 3], shown at its own aspect ratio.
        words: the caption's words (no "</s>").
        attention: [len(words), h, w], each map the weights of one word over the grid.
        columns: panels per row.
    """
    attention = np.asarray(attention, np.float32)
    if attention.ndim != 3 or len(attention) < len(words):
        raise ValueError(f"need one [h, w] attention map per word; got {attention.shape}")
    rows, columns = caption_grid(len(words), columns)
    height, width = image.shape[:2]
    figure = Figure(figsize=caption_figure_inches(len(words), height / width, columns), dpi=DPI)
    extent = (0, width, height, 0)
    for i, word in enumerate(words):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(image, extent=extent)
        weights = attention[i] / max(float(attention[i].max()), 1e-9)
        shade = np.zeros((*weights.shape, 4), np.float32)  # black, opaque where unattended
        shade[..., 3] = 0.8 * (1.0 - weights)
        axes.imshow(shade, interpolation="bilinear", extent=extent)
        axes.set_axis_off()
        axes.text(0.5, -0.04, word, transform=axes.transAxes, ha="center", va="top", fontsize=11)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.98, bottom=0.06, wspace=0.05, hspace=0.2)
    return figure


def alignment_figure(
    source_tokens: Sequence[str], target_tokens: Sequence[str], attention: np.ndarray
) -> Figure:
    """The attention matrix [target, source] as a grid, words on the axes."""
    attention = np.asarray(attention, np.float32)[: len(target_tokens), : len(source_tokens)]
    cell = 0.45
    figure = Figure(
        figsize=(2.0 + cell * len(source_tokens), 1.5 + cell * len(target_tokens)), dpi=DPI
    )
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(attention, cmap="gray", vmin=0.0, vmax=1.0, aspect="equal")
    axes.set_xticks(range(len(source_tokens)), list(source_tokens), rotation=90)
    axes.set_yticks(range(len(target_tokens)), list(target_tokens))
    axes.xaxis.tick_top()
    axes.set_xlabel("source")
    axes.set_ylabel("translation")
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as a PNG of its own size (figsize x dpi pixels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path
