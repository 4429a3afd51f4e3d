"""The local artifact cache: verified archives, their unpacked run directories, and locks.

Layout under the cache root ($TFZOO_CACHE, else ~/.cache/tfzoo):

    artifacts/<sha256>.tar.gz   verified archives (only ever renamed in after verification)
    artifacts/<sha256>.part     a transfer in progress or interrupted (resumable)
    artifacts/<sha256>.lock     held while one process downloads or unpacks that artifact
    runs/<sha256>/              the unpacked run directory of a run artifact
    locks/<key>.lock            held while one process installs into a model base path

Everything is keyed by content hash, so the cache serves any name, version or mirror that
resolves to the same bytes, and works offline. Locks are `flock`s: concurrent pulls of one
artifact wait for the first one and then reuse its download instead of sharing a `.part`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from catalogue.archive import RUN, directory_kind, sha256_of, unpack
from catalogue.errors import PullError

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: str) -> str:
    """`value` lowercased when it is a sha256 (exactly 64 hex digits), else PullError.

    Every cache path is built from a checked hash, so none can name another place.
    """
    digest = value.lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(digest):
        raise PullError(f"a sha256 is exactly 64 hex digits, not {value!r}")
    return digest


def default_cache() -> Path:
    """$TFZOO_CACHE, else ~/.cache/tfzoo."""
    return Path(os.environ.get("TFZOO_CACHE") or Path.home() / ".cache" / "tfzoo")


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if needed) for the block.

    `on_wait` is called once when another process holds the lock, before waiting for it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Cache:
    """Paths and locks of one cache root."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache()

    def archive(self, sha256: str) -> Path:
        """Where the verified archive of `sha256` lives."""
        return self.root / "artifacts" / f"{check_sha256(sha256)}.tar.gz"

    def part(self, sha256: str) -> Path:
        """The partial download of `sha256`."""
        return self.root / "artifacts" / f"{check_sha256(sha256)}.part"

    def run_dir(self, sha256: str) -> Path:
        """The unpacked run directory of the run artifact `sha256`."""
        return self.root / "runs" / check_sha256(sha256)

    def lock(self, sha256: str, on_wait: Callable[[], None] | None = None):
        """Exclusive lock on one artifact (download, verification, unpacking)."""
        return file_lock(self.root / "artifacts" / f"{check_sha256(sha256)}.lock", on_wait)

    def install_lock(self, base_path: str | Path, on_wait: Callable[[], None] | None = None):
        """Exclusive lock on one model base path, so concurrent installs number versions
        one after the other instead of racing for the same one."""
        key = hashlib.sha256(str(Path(base_path).resolve()).encode()).hexdigest()[:24]
        return file_lock(self.root / "locks" / f"{key}.lock", on_wait)

    def verified(self, sha256: str) -> Path | None:
        """The cached archive of `sha256` when present and intact (a damaged one is removed)."""
        sha256 = check_sha256(sha256)
        path = self.archive(sha256)
        if not path.is_file():
            return None
        if sha256_of(path) == sha256:
            return path
        path.unlink(missing_ok=True)
        return None

    def unpacked(self, sha256: str) -> Path:
        """The run directory of the cached run artifact `sha256`, unpacked on first use."""
        final = self.run_dir(sha256)
        if directory_kind(final) == RUN:
            return final
        with self.lock(sha256):
            if directory_kind(final) == RUN:  # another process unpacked it meanwhile
                return final
            archive = self.verified(sha256)
            if archive is None:
                raise PullError(f"artifact {sha256[:12]} is not in the cache {self.root}")
            return unpack(archive, final, kind=RUN)  # checked as it is unpacked: one pass
