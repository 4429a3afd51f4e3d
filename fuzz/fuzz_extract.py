"""Fuzz target: unpacking a pretrained artifact (`catalogue.archive`) from any bytes.

Each input is tried as the archive file twice: as given (the fuzzer may produce a .tar.gz)
and gzipped (so the mutations reach the tar parser). Both `extract_into` (into an empty
folder, keeping what it wrote) and `unpack` (atomic, leaving nothing on failure) must either
succeed or raise PullError, and never leave a link, a special file, a file outside their
destination, more than the byte cap, or a staging directory behind. Anything else raises,
and the fuzzer reports it as a crash.

    python fuzz/fuzz_extract.py -max_total_time=60      # atheris (pip install .[fuzz])
    python fuzz/fuzz_extract.py --plain 2000            # no atheris: random mutations

A runner can import this module and call `test_one_input(data)`; `seed_inputs()` gives
uncompressed tar archives to start a corpus from.
"""

from __future__ import annotations

import atexit
import gzip
import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # noqa: E402

archive_module = None
PullError: type[Exception] = Exception  # catalogue.errors.PullError, once loaded

#: Small caps, so a bomb is found quickly and a run stays fast.
MAX_BYTES = 1 << 20
MAX_MEMBERS = 64
_SENTINEL = b"outside the destination"
_scratch_dir: Path | None = None


def _scratch() -> Path:
    """The process's scratch folder (made once): `outside/f` is the file no input may touch."""
    global _scratch_dir
    if _scratch_dir is None:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # unpack fsyncs: use memory
        _scratch_dir = Path(tempfile.mkdtemp(prefix="fuzz-extract-", dir=shm))
        atexit.register(shutil.rmtree, _scratch_dir, True)
        (_scratch_dir / "outside").mkdir()
        (_scratch_dir / "outside" / "f").write_bytes(_SENTINEL)
    return _scratch_dir


def load() -> None:
    """Import the extraction code (under atheris' instrumentation when fuzzing)."""
    global archive_module, PullError
    from catalogue import archive
    from catalogue.errors import PullError as error

    archive_module, PullError = archive, error


def check_tree(destination: Path, cap: int = MAX_BYTES) -> int:
    """The bytes of the files under `destination`; AssertionError on a link, a special
    file, an entry resolving outside it, or more than `cap` bytes in all (shared with
    tests/training/test_pull_hardening.py)."""
    root = os.path.realpath(destination)
    total = 0
    for directory, dirs, files in os.walk(destination):
        for name in dirs + files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise AssertionError(f"{path} is neither a file nor a directory")
            if os.path.commonpath([root, os.path.realpath(path)]) != root:
                raise AssertionError(f"{path} resolves outside {root}")
            total += os.lstat(path).st_size if stat.S_ISREG(mode) else 0
    if total > cap:
        raise AssertionError(f"{total} bytes written, more than the cap {cap}")
    return total


def _check_scratch(scratch: Path, expected: set[str]) -> None:
    """AssertionError when the scratch folder holds anything unexpected or `outside/f`
    changed."""
    if set(os.listdir(scratch)) != expected:
        raise AssertionError(f"left in {scratch}: {sorted(set(os.listdir(scratch)) - expected)}")
    outside = sorted(os.listdir(scratch / "outside"))
    if outside != ["f"] or (scratch / "outside" / "f").read_bytes() != _SENTINEL:
        raise AssertionError(f"{scratch / 'outside'} was modified: {outside}")


def _try_archive(archive: Path, scratch: Path) -> None:
    """Both extraction paths on one archive file, with every check."""
    into = scratch / "into"
    into.mkdir()
    try:
        written = archive_module.extract_into(
            archive, into, max_bytes=MAX_BYTES, max_members=MAX_MEMBERS
        )
    except PullError:
        written = None
    total = check_tree(into)
    if written is not None and written != total:
        raise AssertionError(f"extract_into reported {written} bytes, {total} on disk")
    final = scratch / "final"
    try:
        archive_module.unpack(archive, final, max_bytes=MAX_BYTES, max_members=MAX_MEMBERS)
    except PullError:
        _check_scratch(scratch, {"outside", "archive.tar.gz", "into"})
    else:
        check_tree(final)
        _check_scratch(scratch, {"outside", "archive.tar.gz", "into", "final"})
        shutil.rmtree(final)
    shutil.rmtree(into)


def test_one_input(data: bytes) -> None:
    """The fuzz target: `data`, raw and gzipped, as an artifact archive."""
    if archive_module is None:
        load()
    scratch = _scratch()
    archive = scratch / "archive.tar.gz"
    for payload in (data, gzip.compress(data, mtime=0)):
        archive.write_bytes(payload)
        _try_archive(archive, scratch)
    archive.unlink()


# ------------------------------------------------------------------ seeds, and a plain loop


def _tar(members: list[tuple[str, bytes, str, bytes | None]], fmt: int) -> bytes:
    """An uncompressed tar of (name, type, linkname, data) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, link, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def seed_inputs() -> list[bytes]:
    """Uncompressed tar archives to start from: a valid SavedModel, links, long names."""
    model = [
        ("saved_model.pb", tarfile.REGTYPE, "", b"pb" * 40),
        ("variables", tarfile.DIRTYPE, "", None),
        ("variables/variables.index", tarfile.REGTYPE, "", bytes(range(64))),
    ]
    return [
        _tar(model, tarfile.PAX_FORMAT),
        _tar(model, tarfile.GNU_FORMAT),
        _tar([*model, ("l", tarfile.SYMTYPE, "../outside", None)], tarfile.PAX_FORMAT),
        _tar([*model, ("h", tarfile.LNKTYPE, "saved_model.pb", None)], tarfile.USTAR_FORMAT),
        _tar([("d" * 150 + "/" + "f" * 150, tarfile.REGTYPE, "", b"x")], tarfile.GNU_FORMAT),
        _tar([("../outside/f", tarfile.REGTYPE, "", b"evil")], tarfile.PAX_FORMAT),
    ]


#: what the plain loop inserts: bytes that tar headers are made of
TOKENS = [b"0", b"1", b"2", b"7", b"/", b"..", b"\x00", b"\xff", b"5", b"L", b"K", b"x", b"g", b"S"]


def main(argv: list[str] | None = None) -> None:
    """Fuzz with atheris (libFuzzer flags in argv); `--plain N` runs the plain loop."""
    harness.main(
        "fuzz_extract", load, test_one_input, seed_inputs, argv,
        instrument=("catalogue",), tokens=TOKENS,
    )  # fmt: skip


if __name__ == "__main__":
    main()
