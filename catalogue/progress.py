"""A one-line download progress bar, drawn on stderr only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_size(size: float) -> str:
    """`4.6 MB`, `46 kB`."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


class Progress:
    """`update(n)` after each block; `close()` at the end. Silent unless `stream` is a TTY.

    Redraws at most ten times a second: `label [#####.....]  42%  1.2 MB/2.9 MB  3.1 MB/s`.
    """

    WIDTH = 30

    def __init__(
        self,
        label: str,
        total: int | None,
        done: int = 0,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ):
        self.label, self.total, self.done = label, total, done
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._start_done, self._start = done, time.monotonic()
        self._drawn = 0.0

    def update(self, n: int) -> None:
        """Count `n` more bytes received."""
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = (self.done - self._start_done) / max(now - self._start, 1e-6)
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            bar = "#" * int(fraction * self.WIDTH)
            text = (
                f"{self.label} [{bar:.<{self.WIDTH}}] {fraction:4.0%}  "
                f"{format_size(self.done)}/{format_size(self.total)}  {format_size(rate)}/s"
            )
        else:
            text = f"{self.label} {format_size(self.done)}  {format_size(rate)}/s"
        self.stream.write("\r" + text)
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
