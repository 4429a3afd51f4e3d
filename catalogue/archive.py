"""Reproducible `.tar.gz` archives of a directory, their sha256, and safe unpacking.

An artifact is one of two kinds of directory, packed the same way:
- a *run* artifact: a minimal training run directory (`run.json`, `checkpoints/`,
  `metrics.json`, `card.md`, and the prebuilt SavedModel of `prebuilt`), which
  `training.export.load_trained` and fine-tuning read as they read any run directory;
- a *SavedModel* artifact: one SavedModel version directory (`saved_model.pb`, ...).

Packing is reproducible: the same files always give the same bytes (sorted entries, zero
mtimes and owners, normalised modes, a gzip header without a name or time), so a sha256
identifies the content. An artifact holds regular files and directories only: `pack`
refuses a tree with links, and unpacking refuses any other member.

Unpacking does not trust tarfile's extraction filters (on some Python versions a chain of
symlinks longer than PATH_MAX defeats them, CVE-2025-4517): every member is checked here
(a normalised relative name, no `..`, no duplicate, a regular file or a directory) and
written here, through directory file descriptors opened with O_NOFOLLOW and files created
with O_EXCL, so nothing is ever written through a link. The unpacked size and the member
count are capped, from the headers and again while the bytes are written, and so is the
decompressed stream, so a gzip bomb is refused after at most the cap. Standard library only.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from catalogue.errors import PullError
from serving.layout import staged_directory, staged_file

CHUNK = 1 << 20
RUN = "run"
SAVED_MODEL = "saved_model"

#: The most bytes an artifact may unpack to (the sum of its files), unless a caller says.
MAX_UNPACKED_BYTES = 4 << 30
#: The most members (files and directories) an artifact may hold, unless a caller says.
MAX_MEMBERS = 100_000
#: Header bytes allowed per member in the decompressed stream on top of the files' bytes
#: (a 512-byte header, a pax record for a long name, padding), bounding a bomb of headers.
HEADER_ALLOWANCE = 8 << 10
#: The largest pax or GNU long-name header tarfile may read into memory.
MAX_EXTENDED_HEADER = 64 << 10

_EXTENDED_TYPES = {
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
}
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: What reading a damaged archive can raise (tarfile lets some parse errors through as
#: ValueError, and a deep chain of pax headers recurses).
_CORRUPT = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, RecursionError)


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


# ------------------------------------------------------------------ packing


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    executable = info.isdir() or info.mode & stat.S_IXUSR
    info.mode = 0o755 if executable else 0o644
    return info


def _packable(directory: Path) -> list[Path]:
    """Every path under `directory`, sorted; PullError on a link or a special file."""
    paths = sorted(directory.rglob("*"))
    for path in paths:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise PullError(f"{path} is a symbolic link: artifacts hold files and directories only")
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise PullError(
                f"{path} is not a regular file: artifacts hold files and directories only"
            )
    return paths


def pack(directory: str | Path, out: str | Path) -> str:
    """Write `directory` (a run artifact or a SavedModel version) as a reproducible .tar.gz
    at `out`, atomically; returns its sha256. A tree holding a link is refused (PullError)."""
    directory = Path(directory)
    if directory_kind(directory) is None:
        raise PullError(
            f"{directory} is neither a SavedModel version (saved_model.pb) "
            "nor a run directory (run.json and checkpoints/)"
        )
    paths = _packable(directory)
    with (
        staged_file(out) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in paths:
            arcname = path.relative_to(directory).as_posix()
            tar.add(path, arcname=arcname, recursive=False, filter=_normalize)
    return sha256_of(out)


# ------------------------------------------------------------------ reading, bounded


@dataclass(frozen=True)
class Limits:
    """The caps of one unpacking: bytes of the files, and number of members."""

    max_bytes: int = MAX_UNPACKED_BYTES
    max_members: int = MAX_MEMBERS

    @property
    def max_stream(self) -> int:
        """The most decompressed bytes tarfile may read (files plus headers)."""
        return self.max_bytes + (self.max_members + 2) * HEADER_ALLOWANCE


class _BoundedStream:
    """A read-only view of a decompressed stream that refuses to go past `limit` bytes."""

    def __init__(self, raw, limit: int):
        self.raw, self.limit, self.mode = raw, limit, "rb"

    def _refuse(self) -> PullError:
        return PullError(
            f"the archive decompresses to more than {self.limit:,} bytes (a compression bomb?)"
        )

    def read(self, size: int = -1) -> bytes:
        room = self.limit + 1 - self.raw.tell()  # one byte more tells "too long" from "full"
        data = self.raw.read(room if size is None or size < 0 else min(size, room))
        if self.raw.tell() > self.limit:
            raise self._refuse()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET and offset > self.limit:
            raise self._refuse()  # before gzip decompresses its way there
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses to read an oversized extended header into memory."""

    def _proc_member(self, tarfile_):  # tarfile's documented hook for subclasses
        if self.type in _EXTENDED_TYPES and self.size > MAX_EXTENDED_HEADER:
            raise PullError(f"an extended tar header of {self.size:,} bytes")
        return super()._proc_member(tarfile_)


@contextlib.contextmanager
def _open_tar(archive: str | Path, limits: Limits) -> Iterator[tarfile.TarFile]:
    """`archive` opened for reading as a gzipped tar, its decompressed stream bounded."""
    with (
        gzip.GzipFile(archive, "rb") as gz,
        tarfile.open(
            fileobj=_BoundedStream(gz, limits.max_stream), mode="r:", tarinfo=_BoundedTarInfo
        ) as tar,
    ):
        yield tar


def _member_kind(member: tarfile.TarInfo) -> str:
    """A word for a member's type, for messages."""
    kinds = {
        tarfile.SYMTYPE: "symbolic link",
        tarfile.LNKTYPE: "hard link",
        tarfile.CHRTYPE: "character device",
        tarfile.BLKTYPE: "block device",
        tarfile.FIFOTYPE: "fifo",
    }
    return kinds.get(member.type, f"member of type {member.type!r}")


def member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name when it is a safe relative name, else PullError.

    Safe: relative, normalised (no `.`, empty or trailing components), no `..`, no NUL.
    """
    if not name or "\x00" in name:
        raise PullError(f"member name {name!r} is empty or holds a NUL byte")
    if name.startswith("/"):
        raise PullError(f"member {name!r} has an absolute name")
    parts = tuple(name.split("/"))
    if ".." in parts:
        raise PullError(f"member {name!r} has a '..' component")
    if posixpath.normpath(name) != name or name == ".":
        raise PullError(f"member name {name!r} is not normalised")
    return parts


class _Checker:
    """Checks members one by one: name, type, uniqueness, count and declared sizes."""

    def __init__(self, limits: Limits):
        self.limits, self.names, self.declared = limits, set(), 0

    def check(self, member: tarfile.TarInfo) -> tuple[str, ...]:
        """`member`'s path components, or PullError."""
        if len(self.names) >= self.limits.max_members:
            raise PullError(f"the archive holds more than {self.limits.max_members:,} members")
        parts = member_parts(member.name)
        if not (member.isreg() or member.isdir()):
            raise PullError(
                f"member {member.name!r} is a {_member_kind(member)}: "
                "an artifact holds regular files and directories only"
            )
        if member.name in self.names:
            raise PullError(f"member {member.name!r} appears twice")
        self.names.add(member.name)
        if member.size < 0:
            raise PullError(f"member {member.name!r} declares a negative size")
        self.declared += member.size
        if self.declared > self.limits.max_bytes:
            raise PullError(f"the archive unpacks to more than {self.limits.max_bytes:,} bytes")
        return parts


def _members(tar: tarfile.TarFile, limits: Limits) -> Iterator[tuple[tarfile.TarInfo, tuple]]:
    """(member, path components) of every member, each checked before it is yielded."""
    checker = _Checker(limits)
    for member in tar:
        yield member, checker.check(member)


def _names(archive: str | Path, limits: Limits) -> set[str]:
    """The member names of `archive`, every member checked; PullError when unsafe/corrupt."""
    try:
        with _open_tar(archive, limits) as tar:
            return {member.name for member, _ in _members(tar, limits)}
    except _CORRUPT as err:
        raise PullError(f"corrupt artifact {archive}: {err}") from err


def member_names(archive: str | Path) -> set[str]:
    """The member names of `archive`, every member checked as `unpack` checks it."""
    return _names(archive, Limits())


def archive_kind(
    archive: str | Path,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> str:
    """The kind of directory a verified archive holds (RUN or SAVED_MODEL).

    Every member is checked as `unpack` checks it, so an unsafe archive is refused here.
    """
    names = _names(archive, Limits(max_bytes, max_members))
    if "saved_model.pb" in names:
        return SAVED_MODEL
    if "run.json" in names and any(n.startswith("checkpoints/") for n in names):
        return RUN
    raise PullError(f"artifact {archive} holds neither a SavedModel nor a run directory")


# ------------------------------------------------------------------ writing, never via a link


def _open_directory(root_fd: int, parts: tuple[str, ...]) -> int:
    """A new descriptor of the directory `root/parts...`, made where missing.

    Each component is opened relative to its parent with O_NOFOLLOW: no link is followed,
    whatever is on disk.
    """
    fd = os.dup(root_fd)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _inside(root: str, parts: tuple[str, ...]) -> None:
    """PullError unless `root/parts...`, resolved, lies inside `root` (itself resolved)."""
    target = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, target]) != root or target == root:
        raise PullError(f"member {'/'.join(parts)!r} resolves outside the destination")


def _write_file(
    tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str, room: int
) -> int:
    """Create `name` (O_EXCL, O_NOFOLLOW) under `parent_fd` with `member`'s bytes, writing at
    most `room` bytes (PullError past that); returns the bytes written. A block of zeros is
    skipped, not written, so it stays a hole where the file system allows (a prebuilt
    SavedModel's blanked weights take no disk in the cache)."""
    mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
    written = 0
    source = tar.extractfile(member)
    if source is None:
        raise PullError(f"member {member.name!r} has no data")
    fd = os.open(name, _FILE_FLAGS, mode, dir_fd=parent_fd)
    with source, os.fdopen(fd, "wb") as out:
        for block in iter(lambda: source.read(CHUNK), b""):
            written += len(block)  # counted, not trusted from the header
            if written > room:
                raise PullError(f"member {member.name!r} unpacks past the archive's byte cap")
            if block.count(0) == len(block):
                out.seek(len(block), os.SEEK_CUR)
            else:
                out.write(block)
        out.truncate(written)  # the size, holes at the end included
    return written


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    parts: tuple[str, ...],
    root: str,
    root_fd: int,
    room: int,
) -> int:
    """Write one checked member under `root`; returns the bytes written."""
    _inside(root, parts)
    if member.isdir():
        os.close(_open_directory(root_fd, parts))
        return 0
    parent_fd = _open_directory(root_fd, parts[:-1])
    try:
        return _write_file(tar, member, parent_fd, parts[-1], room)
    finally:
        os.close(parent_fd)


def extract_into(
    archive: str | Path,
    directory: str | Path,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> int:
    """Extract the gzipped tar `archive` into the existing empty `directory`; returns the
    bytes written.

    Each member is checked (see `member_parts`; regular files and directories only, no
    duplicates) and written by this function, never through a link. At most `max_members`
    members and `max_bytes` bytes of files are accepted, counted both from the headers and
    as written. Raises PullError, leaving what was written so far for the caller to remove
    (`unpack` extracts into a staging directory that it removes).
    """
    limits = Limits(max_bytes, max_members)
    root = os.path.realpath(directory)
    root_fd = os.open(root, _DIRECTORY_FLAGS)
    written = 0
    try:
        with _open_tar(archive, limits) as tar:
            for member, parts in _members(tar, limits):
                written += _extract_member(tar, member, parts, root, root_fd, max_bytes - written)
    except _CORRUPT as err:  # OSError too: a name too long, a file where a directory is
        raise PullError(f"cannot unpack artifact {archive}: {err}") from err
    finally:
        os.close(root_fd)
    return written


def unpack(
    archive: str | Path,
    final: str | Path,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
    kind: str | None = None,
) -> Path:
    """Unpack `archive` into the new directory `final`, atomically.

    The tree is extracted (`extract_into`: checked members, capped size) under a hidden
    temporary name beside `final` and renamed into place only when complete, and only when
    it is an artifact (of `kind`, RUN or SAVED_MODEL, when given); on any failure nothing is
    left. `final` must not exist (FileExistsError).
    """
    final = Path(final)
    with staged_directory(final) as tmp:
        extract_into(archive, tmp, max_bytes=max_bytes, max_members=max_members)
        found = directory_kind(tmp)
        if found is None:
            raise PullError(f"artifact {archive} holds neither a SavedModel nor a run directory")
        if kind is not None and found != kind:
            words = {RUN: "a run directory", SAVED_MODEL: "a SavedModel"}
            raise PullError(f"artifact {archive} is {words[found]}, not {words[kind]}")
    return final
