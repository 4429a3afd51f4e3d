"""Get one artifact into the cache, verified: from the cache, else from its sources in order.

Sources are tried in order: the repository's own copy, then each mirror. A source that
answers 404, cuts the transfer or delivers bytes with the wrong sha256 is reported and the
next one is tried; bytes received before a cut are kept, and the next source continues
them (a range request) instead of starting over. A resumed file that fails verification is
discarded and that source is tried once more from the start. The hash is checked before
the archive enters the cache, so nothing unverified is ever unpacked.

Each transfer is capped at the manifest's size when it is known, and has an overall
deadline (`deadline=` seconds, else `download`'s default); see `download`.

`TFZOO_OFFLINE=1` (or `offline=True`) skips every network source: only the cache and local
files are used. Concurrent fetches of one artifact take the cache's lock: the first
downloads, the others wait and reuse its file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catalogue.archive import sha256_of
from catalogue.cache import Cache, check_sha256
from catalogue.download import copy_local, download, is_network
from catalogue.errors import PullError
from serving.layout import replace_file

Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    """The default `log`: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


def offline_from_env() -> bool:
    """Whether $TFZOO_OFFLINE asks never to touch the network."""
    return os.environ.get("TFZOO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Source:
    """One place an artifact can come from: a URL or a local path, and how to name it."""

    location: str
    label: str

    @property
    def network(self) -> bool:
        """Whether using this source needs the network."""
        return is_network(self.location)


@dataclass(frozen=True)
class Fetched:
    """A verified archive in the cache and where it came from ("cache" when it was there)."""

    path: Path
    served_by: str


def _transfer(
    source: Source, part: Path, size: int | None, progress: bool | None, deadline: float | None
) -> None:
    if source.network:
        download(source.location, part, size=size, progress=progress, deadline=deadline)
    else:
        copy_local(source.location, part, size)


def _from_sources(
    sources: list[Source],
    sha256: str,
    cache: Cache,
    size: int | None,
    log: Log,
    progress: bool | None,
    note: str = "",
    deadline: float | None = None,
) -> Fetched:
    part, failures = cache.part(sha256), []
    for index, source in enumerate(sources):
        then = "; trying the next source" if index + 1 < len(sources) else ""
        for _attempt in range(2):
            resumed = part.exists() and part.stat().st_size > 0
            try:
                _transfer(source, part, size, progress, deadline)
            except PullError as err:
                failures.append(f"{source.label}: {err}")
                log(f"{failures[-1]}{then}")
                break
            actual = sha256_of(part)
            if actual == sha256:
                replace_file(part, cache.archive(sha256))
                return Fetched(cache.archive(sha256), source.label)
            part.unlink()
            if not (resumed and source.network):
                failures.append(f"{source.label}: wrong sha256 {actual[:12]}")
                log(f"{failures[-1]}, expected {sha256[:12]}{then}")
                break
            log(f"{source.label}: the resumed file does not verify; downloading it again")
    hint = "; run the same command again to resume" if part.exists() else ""
    raise PullError(
        f"no source delivered artifact {sha256[:12]} ({'; '.join(failures)}){note}{hint}"
    )


def fetch(
    sources: list[Source],
    sha256: str,
    cache: Cache | None = None,
    *,
    size: int | None = None,
    offline: bool | None = None,
    log: Log = log_to_stderr,
    progress: bool | None = None,
    deadline: float | None = None,
) -> Fetched:
    """The verified archive with `sha256` in the cache, fetched from `sources` if needed.

    `deadline` bounds each transfer (seconds; default: `download`'s, from the size)."""
    cache = cache or Cache()
    sha256 = check_sha256(sha256)
    hit = cache.verified(sha256)
    if hit is not None:
        return Fetched(hit, "cache")
    offline = offline_from_env() if offline is None else offline

    def waiting() -> None:
        log(f"waiting for another pull of artifact {sha256[:12]} to finish")

    with cache.lock(sha256, on_wait=waiting):
        hit = cache.verified(sha256)  # a concurrent pull may have fetched it meanwhile
        if hit is not None:
            return Fetched(hit, "cache")
        usable = [s for s in sources if not (offline and s.network)]
        skipped = len(sources) - len(usable)
        note = f" (TFZOO_OFFLINE=1: {skipped} network sources skipped)" if skipped else ""
        note = note or ("" if sources else " (give a mirror: --mirror URL or TFZOO_MIRROR)")
        if not usable:
            raise PullError(
                f"artifact {sha256[:12]} is not in the cache {cache.root} "
                f"and no source is available{note}"
            )
        return _from_sources(usable, sha256, cache, size, log, progress, note, deadline)
