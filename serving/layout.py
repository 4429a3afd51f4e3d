"""The on-disk layouts: model version directories, atomic writes, TF Serving's warmup file.

One module, standard library only (no TensorFlow), used by every writer and reader:
`zoo export` and `zoo pull` write `<base>/<version>/`, training writes checkpoints and JSON
files, and the server discovers versions and replays the warmup file. `serving/` owns it
because the server must never import `zoo/` or `training/`; they import it from here.

Version directories follow TF Serving's `FileSystemStoragePathSource`: a child of the base
path whose name is a decimal int64 (`00000123` is version 123). Every other name is
ignored, which is how writers stay invisible until they finish: they build a version under
a hidden non-numeric name (`.tmp-3-...`) and rename it into place in one step.

Listing errors: `numbered_entries` raises whatever listing the base path raises, for the
server's repository to report per model; the writers' and readers' `version_dirs` and
`next_version` treat an absent base path or a file as "no versions" and raise the other
errors (a base path that cannot be listed cannot be written to either).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WARMUP_FILE = "tf_serving_warmup_requests"
#: TF Serving's warmup file inside a SavedModel version: a TFRecord of PredictionLog.
WARMUP_PATH = Path("assets.extra") / WARMUP_FILE

#: The largest version TF Serving accepts (versions are int64 in its protos).
MAX_VERSION = 2**63 - 1


def parse_version(name: str) -> int | None:
    """The version a directory name stands for, or None when it is not a version name.

    ASCII decimal digits only (leading zeros allowed: `00000123` is 123), at most int64's
    maximum, like TF Serving's `safe_strto64` parse of the name minus signs and spaces.
    """
    if not (name.isascii() and name.isdigit()):
        return None
    version = int(name)
    return version if version <= MAX_VERSION else None


def numbered_entries(base_path: str | Path) -> list[tuple[int, Path]]:
    """(version, path) of every entry of `base_path` with a version name, oldest first:
    directories, files and symbolic links alike (dangling ones included).

    Raises the OSError of listing `base_path`: FileNotFoundError when it is absent,
    NotADirectoryError when it is a file, PermissionError, ELOOP for a symlink loop,
    ENAMETOOLONG for an over-long name.
    """
    base = Path(base_path)
    found = []
    for name in os.listdir(base):
        version = parse_version(name)
        if version is not None:
            found.append((version, base / name))
    return sorted(found)


def _numbered(base_path: str | Path) -> list[tuple[int, Path]]:
    """`numbered_entries`, with an absent base path or a file as an empty one."""
    try:
        return numbered_entries(base_path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def is_dir(path: Path) -> bool:
    """Whether `path` is a directory (following symlinks); False when it cannot be stat'ed."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def version_dirs(base_path: str | Path) -> list[tuple[int, Path]]:
    """(version, directory) of the version directories under `base_path`, oldest first.

    Files, entries that cannot be stat'ed (dangling symlinks) and non-numeric names
    (temporary `.tmp-3-...` directories of a write in progress) are ignored; an absent base
    path has no versions; other listing errors are raised. Completeness is not checked
    here: the server's repository also waits for `saved_model.pb` and a settled tree.
    """
    return [(version, path) for version, path in _numbered(base_path) if is_dir(path)]


def next_version(base_path: str | Path) -> int:
    """1 + the highest version under `base_path` (1 when none).

    A file with a version name counts too, so the returned name is always free.
    """
    numbered = _numbered(base_path)
    return numbered[-1][0] + 1 if numbered else 1


def _temp_sibling(path: Path) -> Path:
    """A unique hidden, non-numeric name beside `path` that keeps its name as a suffix.

    Keeping the suffix matters to writers that check it (Keras wants `.weights.h5`).
    """
    return path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def _fsync_path(path: Path) -> None:
    """fsync one file or directory (best effort for directories: some filesystems refuse)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def replace_file(src: str | Path, dst: str | Path) -> None:
    """Move the finished file `src` over `dst` atomically and durably.

    `src` is flushed to disk before the rename and the directory after it, so after a crash
    `dst` holds either its old content or all of the new one.
    """
    src, dst = Path(src), Path(dst)
    _fsync_path(src)
    os.replace(src, dst)
    _fsync_path(dst.parent)


@contextlib.contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write `path`'s new content to, by any means.

    When the block ends normally the file is fsynced and renamed over `path`; on any
    exception it is removed and `path` is left exactly as it was. For writers that take a
    file name (`model.save_weights`, a TFRecord or tar writer, `shutil.copyfile`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        replace_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling and a rename (never half-written)."""
    with staged_file(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (see `write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write `data` as JSON (indent 2, sorted keys) to `path` atomically.

    The data is serialized before anything is written, so a value that cannot be
    serialized raises and leaves the old file intact.
    """
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def _fsync_tree(root: Path) -> None:
    for directory, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(directory) / name)
        _fsync_path(Path(directory))


@contextlib.contextmanager
def staged_directory(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`, renamed to `final` on success.

    The temporary name (`.tmp-<final name>-...`) is not a version name, so a server polling
    the parent never sees a half-written version. When the block ends normally the tree is
    flushed to disk and renamed into place in one step; on any exception it is removed and
    nothing is left behind. Refuses (FileExistsError) when `final` exists, before the block
    and again before the rename: versions are never overwritten.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are never overwritten")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()  # not tempfile.mkdtemp: its 0700 mode would hide the version from other users
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():  # os.rename would silently replace an empty directory
            raise FileExistsError(f"{final} already exists; versions are never overwritten")
        os.rename(tmp, final)
        _fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
