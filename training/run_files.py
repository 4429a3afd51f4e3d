"""The one writer of a run directory's two records, `run.json` (what the run is: model,
preset, config, assets, seed, provenance, and the `training` record of its starts and
resumes) and `history.json` (one logs dict per completed epoch). Both are replaced whole and
atomically (`serving.layout.write_json_atomic`), so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.layout import write_json_atomic

RUN_INFO = "run.json"
HISTORY = "history.json"


def _read(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    return json.loads(path.read_text())


def read_info(run_dir: str | Path) -> dict[str, Any] | None:
    """`run.json` of `run_dir`, or None when the run has none yet."""
    return _read(Path(run_dir) / RUN_INFO, None)


def write_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    """Replace `run.json` of `run_dir` with `info`."""
    write_json_atomic(Path(run_dir) / RUN_INFO, info)


def update_info(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Set `fields` in `run.json` of `run_dir`, keeping the rest; the new content."""
    info = {**(read_info(run_dir) or {}), **fields}
    write_info(run_dir, info)
    return info


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """`history.json` of `run_dir`: one dict per completed epoch, oldest first ([] if none)."""
    return _read(Path(run_dir) / HISTORY, [])


def write_history(run_dir: str | Path, history: list[dict[str, Any]]) -> None:
    """Replace `history.json` of `run_dir` with `history`."""
    write_json_atomic(Path(run_dir) / HISTORY, history)


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Replace `metrics.json` of `run_dir`: the run's final task metrics, written last."""
    write_json_atomic(Path(run_dir) / "metrics.json", metrics)
