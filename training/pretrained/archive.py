"""Reproducible `.tar.gz` archives of a directory, their sha256, and safe unpacking.

An artifact is one of two kinds of directory, packed the same way:
- a *run* artifact: a minimal training run directory (`run.json`, `checkpoints/`,
  `metrics.json`, `card.md`), which `training.export.load_trained` and fine-tuning read
  as they read any run directory;
- a *SavedModel* artifact: one SavedModel version directory (`saved_model.pb`, ...).

Packing is reproducible: the same files always give the same bytes (sorted entries, zero
mtimes and owners, normalised modes, a gzip header without a name or time), so a sha256
identifies the content. Standard library only.
"""

from __future__ import annotations

import gzip
import hashlib
import stat
import tarfile
from pathlib import Path

from serving.layout import staged_directory, staged_file
from training.pretrained.errors import PullError

CHUNK = 1 << 20
RUN = "run"
SAVED_MODEL = "saved_model"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_kind(directory: str | Path) -> str | None:
    """RUN, SAVED_MODEL, or None when `directory` is neither."""
    directory = Path(directory)
    if (directory / "saved_model.pb").is_file():
        return SAVED_MODEL
    if (directory / "run.json").is_file() and (directory / "checkpoints").is_dir():
        return RUN
    return None


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    executable = info.isdir() or info.mode & stat.S_IXUSR
    info.mode = 0o755 if executable else 0o644
    return info


def pack(directory: str | Path, out: str | Path) -> str:
    """Write `directory` (a run artifact or a SavedModel version) as a reproducible .tar.gz
    at `out`, atomically; returns its sha256."""
    directory = Path(directory)
    if directory_kind(directory) is None:
        raise PullError(
            f"{directory} is neither a SavedModel version (saved_model.pb) "
            "nor a run directory (run.json and checkpoints/)"
        )
    with (
        staged_file(out) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(directory.rglob("*")):
            arcname = path.relative_to(directory).as_posix()
            tar.add(path, arcname=arcname, recursive=False, filter=_normalize)
    return sha256_of(out)


def archive_kind(archive: str | Path) -> str:
    """The kind of directory a verified archive holds (RUN or SAVED_MODEL)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = set(tar.getnames())
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PullError(f"corrupt artifact {archive}: {err}") from err
    if "saved_model.pb" in names:
        return SAVED_MODEL
    if "run.json" in names and any(n.startswith("checkpoints/") for n in names):
        return RUN
    raise PullError(f"artifact {archive} holds neither a SavedModel nor a run directory")


def unpack(archive: str | Path, final: str | Path) -> Path:
    """Unpack `archive` into the new directory `final`, atomically.

    The tree is extracted under a hidden temporary name beside `final` (tar's "data"
    filter refuses absolute paths, links out of the tree and device files) and renamed
    into place only when complete; `final` must not exist (FileExistsError).
    """
    final = Path(final)
    with staged_directory(final) as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise PullError(f"corrupt artifact {archive}: {err}") from err
        if directory_kind(tmp) is None:
            raise PullError(f"artifact {archive} holds neither a SavedModel nor a run directory")
    return final
