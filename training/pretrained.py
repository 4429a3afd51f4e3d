"""Published model artifacts: pack, download (resumable), verify (sha256), cache, install.

An artifact is a `.tar.gz` of one SavedModel version directory. `pull` streams it into a
cache keyed by its sha256 (a `.part` file resumes with an HTTP Range request after an
interrupted download), checks the hash before anything is unpacked, unpacks into a
temporary directory beside the destination, checks it is a SavedModel, and renames it into
`<base_path>/<next version>/` (`serving.layout`'s staged directory). A failed download, a
wrong hash or a corrupt archive leaves the destination exactly as it was. Pure Python: no
TensorFlow needed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from serving.layout import next_version, replace_file, staged_directory, staged_file

CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """A published artifact: where it is and the sha256 it must have."""

    url: str
    sha256: str
    description: str = ""


#: Artifacts published for `zoo pull NAME`. Empty until the project hosts release files:
#: pull by URL (`zoo pull URL --sha256 HEX --to models/NAME`) meanwhile.
PUBLISHED: dict[str, Artifact] = {}


class PullError(RuntimeError):
    """A download, verification or unpacking failure (the destination is untouched)."""


def default_cache() -> Path:
    """$TFZOO_CACHE, else ~/.cache/tfzoo."""
    return Path(os.environ.get("TFZOO_CACHE", Path.home() / ".cache" / "tfzoo"))


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(version_dir: str | Path, out: str | Path) -> str:
    """Write a SavedModel version directory as a .tar.gz artifact; returns its sha256."""
    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").exists():
        raise PullError(f"{version_dir} is not a SavedModel directory (no saved_model.pb)")

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    # reproducible: the same files always give the same bytes (and sha256)
    with (
        staged_file(out) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(version_dir.rglob("*")):
            arcname = str(path.relative_to(version_dir))
            tar.add(path, arcname=arcname, recursive=False, filter=normalize)
    return sha256_of(out)


def _download(url: str, part: Path, timeout: float) -> None:
    """Stream `url` into `part`, resuming from its current size when the server allows."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = offset and getattr(response, "status", 200) == 206
            expected = response.headers.get("Content-Length")
            written = 0
            with open(part, "ab" if resumed else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    written += len(block)
            if expected is not None and written != int(expected):
                raise PullError(
                    f"download of {url} interrupted after {written} of {expected} bytes; "
                    "run the same command again to resume"
                )
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # already complete
            return
        raise PullError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        if isinstance(err, PullError):
            raise
        raise PullError(
            f"download of {url} failed: {err}; run the same command again to resume"
        ) from err


def fetch(url: str, sha256: str, cache: Path | None = None, timeout: float = 60.0) -> Path:
    """The verified artifact file in the cache, downloading it if needed."""
    cache = Path(cache or default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    sha256 = sha256.lower()
    final = cache / f"{sha256}.tar.gz"
    if final.exists() and sha256_of(final) == sha256:
        return final  # offline use of an earlier download
    local = Path(url[len("file://") :]) if url.startswith("file://") else Path(url)
    part = cache / f"{sha256}.part"
    if "://" not in url or url.startswith("file://"):
        if not local.exists():
            raise PullError(f"artifact not found: {local}")
        shutil.copyfile(local, part)
    else:
        _download(url, part, timeout)
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise PullError(f"sha256 mismatch for {url}: expected {sha256}, got {actual}")
    replace_file(part, final)
    return final


def install(archive: Path, base_path: str | Path, version: int | None = None) -> Path:
    """Unpack a verified artifact into `<base_path>/<version>/` atomically."""
    base_path = Path(base_path)
    final = base_path / str(next_version(base_path) if version is None else version)
    try:
        # unpacked under a non-numeric temporary name (not served), renamed when complete
        with staged_directory(final) as tmp:
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, EOFError, OSError) as err:
                raise PullError(f"corrupt artifact {archive}: {err}") from err
            if not (tmp / "saved_model.pb").exists():
                raise PullError(f"artifact {archive} holds no saved_model.pb")
    except FileExistsError as err:
        raise PullError(str(err)) from None
    return final


def pull(
    name_or_url: str,
    to: str | Path,
    sha256: str | None = None,
    cache: Path | None = None,
    version: int | None = None,
) -> Path:
    """Download (or reuse from cache), verify and install an artifact; returns the version dir."""
    if name_or_url in PUBLISHED:
        artifact = PUBLISHED[name_or_url]
        url, sha256 = artifact.url, sha256 or artifact.sha256
    elif "://" in name_or_url or Path(name_or_url).exists():
        url = name_or_url
    else:
        known = ", ".join(sorted(PUBLISHED)) or "none yet"
        raise PullError(f"no published artifact named {name_or_url!r} (published: {known}); "
                        "pass a URL or file with --sha256")  # fmt: skip
    if not sha256:
        raise PullError("--sha256 is required: artifacts are verified before they are used")
    return install(fetch(url, sha256, cache), to, version)
