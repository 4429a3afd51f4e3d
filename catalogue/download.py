"""One transfer of one source into a `.part` file: resumable, with clean errors.

A partly received file is kept, and the next transfer (from the same source or another
mirror: the bytes are identified by the sha256, not by the server) continues it with an
HTTP Range request. Every failure (HTTP status, refused connection, timeout, a transfer
cut mid-way, chunked or not) raises `PullError` with a one-line reason; the caller decides
whether another source is tried.

A transfer is bounded in size and time. When the expected size is known (the manifest's),
a Content-Length above it is refused before any byte is read, and a body that runs past it
is cut one byte after it (the partial file is deleted: a source that sends too much is not
resumed). Every transfer has an overall deadline, checked after each read (so it can be
overrun by at most one per-read socket timeout): `deadline=` seconds, else
$TFZOO_PULL_TIMEOUT, else `default_deadline` of the bytes still to come (two minutes plus
four seconds per MiB, i.e. an average of at least 256 KiB/s; one hour when the size is
unknown). The bytes received before the deadline stay in the `.part` file for a resume.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from catalogue.errors import PullError
from catalogue.progress import Progress

CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")

#: Overrides the deadline of every download (seconds), like `zoo pull --timeout`.
DEADLINE_ENV = "TFZOO_PULL_TIMEOUT"
#: The least time a download is given, whatever its size (seconds).
MIN_DEADLINE = 120.0
#: The slowest average rate the default deadline allows (bytes per second).
MIN_RATE = 256 << 10
#: The default deadline when the size is unknown until the transfer ends (seconds).
UNKNOWN_SIZE_DEADLINE = 3600.0


def default_deadline(nbytes: int | None) -> float:
    """Seconds a download of `nbytes` bytes may take by default (see the module's doc)."""
    if nbytes is None:
        return UNKNOWN_SIZE_DEADLINE
    return MIN_DEADLINE + nbytes / MIN_RATE


def deadline_from_env() -> float | None:
    """$TFZOO_PULL_TIMEOUT in seconds, None when unset; PullError when not a positive number."""
    value = os.environ.get(DEADLINE_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise PullError(f"${DEADLINE_ENV} must be a positive number of seconds, not {value!r}")
    return seconds


class _Deadline:
    """The overall deadline of one transfer, started before it connects."""

    def __init__(self, started: float, seconds: float):
        self.seconds, self.end = seconds, started + seconds

    def check(self, received: int) -> None:
        """PullError once the deadline has passed."""
        if time.monotonic() > self.end:
            raise PullError(
                f"transfer exceeded its deadline of {self.seconds:g} s after {received:,} "
                f"bytes (zoo pull --timeout or ${DEADLINE_ENV} sets it)"
            )


def is_network(location: str) -> bool:
    """Whether `location` is an http(s) URL (anything else is a local path or file: URL)."""
    return location.startswith(("http://", "https://"))


def local_path(location: str) -> Path:
    """The file a `file://` URL or a plain path names."""
    return Path(location.removeprefix("file://"))


def copy_local(location: str, part: Path, size: int | None = None) -> None:
    """Copy a local file into `part` (from the start: a local copy needs no resume); a file
    longer than the expected `size` is refused without copying it."""
    path = local_path(location)
    if not path.is_file():
        raise PullError(f"not found: {path}")
    try:
        if size is not None and path.stat().st_size > size:
            raise PullError(
                f"{path} holds {path.stat().st_size:,} bytes, more than the manifest's {size:,}"
            )
        shutil.copyfile(path, part)
    except OSError as err:
        raise PullError(f"cannot read {path}: {err.strerror or err}") from None


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "tfzoo-pull"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def _resume_offset(response, offset: int) -> int:
    """Where the response body starts in the file: `offset` for a matching 206, else 0."""
    if not offset or response.status != 206:
        return 0  # the server sent the whole file
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != offset:
        raise PullError(
            f"the server answered the range request for byte {offset} with "
            f"{response.headers.get('Content-Range')!r}"
        )
    return offset


def _content_length(response) -> int | None:
    """The response's Content-Length as an int, None when absent or malformed."""
    value = response.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


def _refuse_declared(start: int, declared: int | None, size: int | None) -> None:
    """PullError when the response declares more bytes than the expected `size`."""
    if size is not None and declared is not None and start + declared > size:
        raise PullError(
            f"the server declares {start + declared:,} bytes, more than the manifest's {size:,}"
        )


def _cut(received: int, err: Exception) -> PullError:
    """The error of a transfer that broke off after `received` bytes."""
    return PullError(f"transfer cut after {received} bytes ({type(err).__name__}: {err})")


def _receive(response, f, limit: int | None, clock: _Deadline, bar: Progress) -> int:
    """Copy the body into `f` as it arrives, at most `limit` bytes (_Oversize at one more)
    and within `clock`'s deadline; returns the bytes written."""
    received = 0
    while True:
        want = CHUNK if limit is None else min(CHUNK, limit + 1 - received)
        try:
            block = response.read1(want)  # as it arrives
        except (http.client.HTTPException, OSError) as err:
            raise _cut(received, err) from None
        if not block:
            return received
        if limit is not None and received + len(block) > limit:
            raise _Oversize
        f.write(block)
        received += len(block)
        bar.update(len(block))
        clock.check(received)


class _Oversize(Exception):
    """The body ran past the expected size (turned into a PullError by `download`)."""


def download(
    url: str,
    part: Path,
    *,
    size: int | None = None,
    timeout: float = 30.0,
    progress: bool | None = None,
    deadline: float | None = None,
) -> None:
    """Receive `url` into `part`, continuing `part`'s bytes when the server allows.

    `size` (from the manifest, when known) skips a transfer that is already complete,
    restarts one whose partial file is too long, and caps the transfer: a server that
    declares or sends more is refused (and its bytes deleted). `timeout` bounds each read,
    `deadline` the whole transfer (seconds; see the module's doc for the default). Raises
    PullError; the bytes received before any other failure stay in `part` for the next
    attempt.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # complete: the caller verifies the hash
    started = time.monotonic()
    seconds = deadline if deadline is not None else deadline_from_env()
    received, length = 0, None
    try:
        with _open(url, offset, min(timeout, seconds or timeout)) as response:
            start = _resume_offset(response, offset)
            length = _content_length(response)
            _refuse_declared(start, length, size)
            limit = None if size is None else size - start  # the body's most bytes
            expected = length if limit is None else limit
            clock = _Deadline(started, seconds or default_deadline(expected))
            clock.check(0)
            total = size or (length + start if length is not None else None)
            bar = Progress(url.rsplit("/", 1)[-1], total, done=start, enabled=progress)
            try:
                with open(part, "r+b" if start else "wb") as f:
                    f.seek(start)
                    f.truncate()
                    received = _receive(response, f, limit, clock, bar)
            finally:
                bar.close()
    except _Oversize:
        part.unlink(missing_ok=True)
        raise PullError(f"the server sent more than the manifest's {size:,} bytes") from None
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return  # nothing left to send: the caller verifies the hash
        raise PullError(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise PullError(f"cannot connect: {err.reason}") from None
    except (http.client.HTTPException, OSError) as err:
        raise _cut(0, err) from None
    if length is not None and received < length:
        raise PullError(f"transfer cut after {received} of {length} bytes")
