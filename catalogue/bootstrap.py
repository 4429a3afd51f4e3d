"""First-run set-up for `make serve`: install the pretrained catalogue into ./models.

Every artifact in the manifest (`pretrained/manifest.json`) is pulled from the repository's
`pretrained/` folder (or the cache, or a mirror), verified and installed as a SavedModel
version under `models/<serving name>`, unless that base path already holds a version: no
training, no export (the archives carry their SavedModel, `catalogue.prebuilt`:
extraction and checks only, no TensorFlow), and a second `make serve` starts at once. A base
path whose newest version predates the request-cost declaration (`serving.cost`) gets the
artifact again as a new version. Then `models.config` (TF Serving's ModelServerConfig text
format) lists every model base path under the models folder.

The serving name is the family (`gpt`, `tagger`, ...) when the catalogue has one variant of
it, or for the variant the manifest names as the family's (`"served"`, set by
`zoo publish --as-family`); any other variant is served as `<family>-<variant>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from serving.cost import COSTS_PATH
from serving.layout import version_dirs, write_text_atomic

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def model_base_paths(models: Path) -> list[Path]:
    """Sub-folders of `models` that hold at least one integer version directory."""
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and version_dirs(p))


def write_config(models: Path) -> Path:
    """Write models/models.config for every model base path found; returns its path."""
    entries = "".join(
        f'  config {{\n    name: "{p.name}"\n    base_path: "{p.resolve()}"\n'
        f'    model_platform: "tensorflow"\n  }}\n'
        for p in model_base_paths(models)
    )
    path = models / "models.config"
    write_text_atomic(path, f"model_config_list {{\n{entries}}}\n")
    return path


def install_catalogue(models: Path, cache: str | None = None, log=print) -> dict[str, Path]:
    """Install the newest version of every artifact in the catalogue (`pretrained_dir()`)
    that `models` lacks; returns serving name -> version directory for those installed now."""
    import catalogue

    installed = {}
    for name, served_as in catalogue.Manifest().serving_names().items():
        base = models / served_as
        versions = version_dirs(base)
        if versions and (versions[-1][1] / COSTS_PATH).is_file():
            continue
        if versions:  # exported before the server bounded request costs: a new version
            log(f"[bootstrap] {base} declares no request costs: exporting {name} again")
        log(f"[bootstrap] installing {name} as {base}")
        installed[served_as] = catalogue.pull(name, base, cache=cache, progress=False)
    return installed


def main(argv: list[str] | None = None) -> int:
    """Parse flags, install the catalogue, write the config file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models", type=Path)
    parser.add_argument("--cache", default=None, help="artifact cache (default: ~/.cache/tfzoo)")
    args = parser.parse_args(argv)
    args.models.mkdir(parents=True, exist_ok=True)
    from catalogue import PullError

    try:
        install_catalogue(args.models, cache=args.cache)
    except PullError as err:
        print(f"[bootstrap] {err}", file=sys.stderr)
        return 1
    served = [p.name for p in model_base_paths(args.models)]
    if not served:
        print("[bootstrap] nothing to serve: the catalogue is empty", file=sys.stderr)
        return 1
    path = write_config(args.models)
    print(f"[bootstrap] serving {served} from {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
