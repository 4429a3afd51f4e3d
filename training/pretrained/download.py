"""One transfer of one source into a `.part` file: resumable, with clean errors.

A partly received file is kept, and the next transfer (from the same source or another
mirror: the bytes are identified by the sha256, not by the server) continues it with an
HTTP Range request. Every failure (HTTP status, refused connection, timeout, a transfer
cut mid-way, chunked or not) raises `PullError` with a one-line reason; the caller decides
whether another source is tried.
"""

from __future__ import annotations

import http.client
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from training.pretrained.errors import PullError
from training.pretrained.progress import Progress

CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def is_network(location: str) -> bool:
    """Whether `location` is an http(s) URL (anything else is a local path or file: URL)."""
    return location.startswith(("http://", "https://"))


def local_path(location: str) -> Path:
    """The file a `file://` URL or a plain path names."""
    return Path(location.removeprefix("file://"))


def copy_local(location: str, part: Path) -> None:
    """Copy a local file into `part` (from the start: a local copy needs no resume)."""
    path = local_path(location)
    if not path.is_file():
        raise PullError(f"not found: {path}")
    try:
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


def download(
    url: str,
    part: Path,
    *,
    size: int | None = None,
    timeout: float = 30.0,
    progress: bool | None = None,
) -> None:
    """Receive `url` into `part`, continuing `part`'s bytes when the server allows.

    `size` (from the manifest, when known) skips a transfer that is already complete and
    restarts one whose partial file is too long. Raises PullError; the bytes received
    before a failure stay in `part` for the next attempt.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # complete: the caller verifies the hash
    received, length = 0, None
    try:
        with _open(url, offset, timeout) as response:
            start = _resume_offset(response, offset)
            length = response.headers.get("Content-Length")
            total = size or (int(length) + start if length else None)
            bar = Progress(url.rsplit("/", 1)[-1], total, done=start, enabled=progress)
            try:
                with open(part, "r+b" if start else "wb") as f:
                    f.seek(start)
                    f.truncate()
                    for block in iter(lambda: response.read1(CHUNK), b""):  # as it arrives
                        f.write(block)
                        received += len(block)
                        bar.update(len(block))
            finally:
                bar.close()
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return  # nothing left to send: the caller verifies the hash
        raise PullError(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise PullError(f"cannot connect: {err.reason}") from None
    except (http.client.HTTPException, OSError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise PullError(f"transfer cut after {received} bytes ({reason})") from None
    if length is not None and received < int(length):
        raise PullError(f"transfer cut after {received} of {length} bytes")
