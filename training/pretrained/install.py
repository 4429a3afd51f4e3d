"""Install a verified artifact as the next SavedModel version of a model base path.

A SavedModel artifact is unpacked straight into `<base>/<version>/`; a run artifact is
unpacked into the cache, and its prebuilt SavedModel installed from there when it carries one
(`prebuilt`: a copy, the weights written back, a sha256 check; no TensorFlow), else it is
exported with `training.export` (its recipe's serving signatures). Either way the version
directory appears in one rename when complete (`serving.layout.staged_directory`), so a
server polling the base path never sees a partial version, and a failure leaves the base
path as it was. Installs into one base path hold a lock, so concurrent pulls get consecutive
versions instead of racing for one.
"""

from __future__ import annotations

from pathlib import Path

from serving.layout import next_version
from training.pretrained import prebuilt
from training.pretrained.archive import RUN, SAVED_MODEL, archive_kind, directory_kind, unpack
from training.pretrained.cache import Cache
from training.pretrained.errors import PullError


def _export(run_dir: Path, base_path: Path, version: int) -> Path:
    from training import export  # TensorFlow: only when a run artifact is installed

    return export.run(run_dir, base_path, version=version)


def install(
    archive: str | Path,
    sha256: str,
    base_path: str | Path,
    version: int | None = None,
    cache: Cache | None = None,
) -> Path:
    """Install the verified `archive` (content hash `sha256`) into `<base_path>/<version>/`
    (the next free version when None); returns the version directory."""
    cache, base_path = cache or Cache(), Path(base_path)
    run_dir = cache.run_dir(sha256)  # unpacked by an earlier pull: no pass over the archive
    if directory_kind(run_dir) != RUN:
        run_dir = None if archive_kind(archive) == SAVED_MODEL else cache.unpacked(sha256)
    with cache.install_lock(base_path):
        number = next_version(base_path) if version is None else version
        final = base_path / str(number)
        try:
            if run_dir is None:
                return unpack(archive, final)
            if prebuilt.carries_export(run_dir):
                return prebuilt.install_export(run_dir, final)
            return _export(run_dir, base_path, number)
        except FileExistsError as err:
            raise PullError(str(err)) from None
