"""`zoo pull`, `zoo finetune NAME` and `load_model`: from a reference to a verified artifact.

A reference is a published name (`cifar_convnet/paper`, `cifar_convnet/paper@2`), resolved
in the manifest, or an archive's URL or path with its sha256. A published artifact's sources
are, in order: the file in the manifest's folder (the repository's `pretrained/`), then
each mirror (`--mirror` flags first, then $TFZOO_MIRROR, comma-separated) at the same
relative path. The output names the source that served the file, or the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalogue.cache import Cache, check_sha256
from catalogue.errors import PullError
from catalogue.fetch import Fetched, Log, Source, fetch, log_to_stderr
from catalogue.install import card_facts, install
from catalogue.manifest import Manifest, Release


def mirrors_from_env() -> list[str]:
    """The mirrors $TFZOO_MIRROR lists (comma-separated base URLs or folders)."""
    return [m.strip() for m in os.environ.get("TFZOO_MIRROR", "").split(",") if m.strip()]


@dataclass(frozen=True)
class Target:
    """What to fetch: its hash, size when known, sources, and its release when published."""

    label: str
    sha256: str
    sources: list[Source]
    size: int | None = None
    release: Release | None = None


def published_sources(release: Release, directory: Path, mirrors: list[str]) -> list[Source]:
    """The repository's copy of a release (when it holds the file), then each mirror's."""
    local = directory / release.file
    sources = [Source(str(local), f"{directory} (local)")] if local.is_file() else []
    for mirror in mirrors:
        sources.append(Source(f"{mirror.rstrip('/')}/{release.file}", f"mirror {mirror}"))
    return sources


def resolve(
    reference: str,
    sha256: str | None = None,
    mirrors: list[str] | None = None,
    manifest: Manifest | None = None,
) -> Target:
    """The fetch target of a published name, or of an archive URL / path with `sha256`."""
    if "://" in reference or reference.endswith((".tar.gz", ".tgz")) or Path(reference).is_file():
        if not sha256:
            raise PullError(
                "--sha256 is required for a URL or file: artifacts are verified "
                "before they are used"
            )
        return Target(reference, check_sha256(sha256), [Source(reference, reference)])
    manifest = manifest or Manifest()
    release = manifest.resolve(reference)
    if sha256 and check_sha256(sha256) != release.sha256:
        raise PullError(
            f"--sha256 {sha256[:12]} differs from the manifest's {release.sha256[:12]} "
            f"for {release.reference}"
        )
    all_mirrors = [*(mirrors or []), *mirrors_from_env()]
    sources = published_sources(release, manifest.directory, all_mirrors)
    return Target(release.reference, release.sha256, sources, release.size, release)


def fetch_reference(
    reference: str,
    sha256: str | None = None,
    cache: str | Path | Cache | None = None,
    *,
    mirrors: list[str] | None = None,
    log: Log = log_to_stderr,
    progress: bool | None = None,
    deadline: float | None = None,
) -> tuple[Target, Fetched]:
    """Resolve `reference` and get its verified archive into the cache; reports which source
    served it, and the licence when the data's licence restricts use. `deadline` bounds
    each transfer (seconds; default from the size, see `download`)."""
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    target = resolve(reference, sha256, mirrors)
    fetched = fetch(
        target.sources,
        target.sha256,
        cache,
        size=target.size,
        log=log,
        progress=progress,
        deadline=deadline,
    )
    origin = "the cache" if fetched.served_by == "cache" else fetched.served_by
    log(f"{target.label}: sha256 {target.sha256[:12]} verified, served by {origin}")
    release = target.release
    if release is not None and release.restricted:
        log(
            f"licence of {release.name} (trained on {release.dataset}): {release.licence}; "
            "its use is restricted accordingly"
        )
    return target, fetched


def pull(
    reference: str,
    to: str | Path,
    sha256: str | None = None,
    cache: str | Path | None = None,
    version: int | None = None,
    *,
    mirrors: list[str] | None = None,
    log: Log = log_to_stderr,
    progress: bool | None = None,
    deadline: float | None = None,
) -> Path:
    """Fetch (or reuse from the cache), verify and install an artifact as the next version
    under `to` (a model base path); returns the version directory."""
    cache_ = Cache(cache)
    target, fetched = fetch_reference(
        reference, sha256, cache_, mirrors=mirrors, log=log, progress=progress, deadline=deadline
    )
    return install_fetched(target, fetched, to, version, cache_)


def install_fetched(
    target: Target, fetched, to: str | Path, version: int | None, cache: Cache
) -> Path:
    """Install what `fetch_reference` fetched as the next version under `to`, with the
    release's card when it is a published release; returns the version directory."""
    card = card_facts(target.release) if target.release is not None else None
    return install(fetched.path, target.sha256, to, version, cache, card=card)


def run_dir_for(
    reference: str,
    cache: str | Path | None = None,
    *,
    mirrors: list[str] | None = None,
    log: Log = log_to_stderr,
    progress: bool | None = None,
) -> tuple[Path, Target]:
    """The run directory of a published run artifact, unpacked in the cache (fetched and
    verified first if needed): what fine-tuning and `load_model` start from."""
    cache_ = Cache(cache)
    target, _ = fetch_reference(
        reference, None, cache_, mirrors=mirrors, log=log, progress=progress
    )
    return cache_.unpacked(target.sha256), target


def parent_record(target: Target) -> dict[str, Any]:
    """What a fine-tuned run records of the artifact it started from."""
    record: dict[str, Any] = {"name": target.label, "sha256": target.sha256}
    if target.release is not None:
        record.update(name=target.release.name, version=target.release.version)
    return record


def load_model(
    reference: str | Path,
    cache: str | Path | None = None,
    *,
    mirrors: list[str] | None = None,
    log: Log = log_to_stderr,
):
    """A published artifact (or a run directory) as a Keras model, like keras-hub's
    `from_preset`: returns `(keras.Model, run_info)`.

    The model is rebuilt from the artifact's config and assets and its weights are loaded
    strictly (float16 weights come back as float32); it is not compiled. `run_info` is the
    artifact's run.json with an `artifact` record (name, version, sha256) when published.

        model, info = load_model("cifar_convnet/paper")
        model.predict(images)  # or compile and fit: fine-tuning
    """
    from training.sources import load_trained  # Keras only: any backend

    if Path(reference).is_dir():
        return load_trained(reference)
    run_dir, target = run_dir_for(str(reference), cache, mirrors=mirrors, log=log)
    model, run_info = load_trained(run_dir)
    return model, {**run_info, "artifact": parent_record(target)}
