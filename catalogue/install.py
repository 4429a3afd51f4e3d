"""Install a verified artifact as the next SavedModel version of a model base path.

A SavedModel artifact is unpacked straight into `<base>/<version>/`; a run artifact is
unpacked into the cache, and its prebuilt SavedModel installed from there when it carries one
(`prebuilt`: a copy, the weights written back, a sha256 check; no TensorFlow), else it is
exported with `training.export` (its recipe's serving signatures). Either way the version
directory appears in one rename when complete (`serving.layout.staged_directory`), so a
server polling the base path never sees a partial version, and a failure leaves the base
path as it was. Installs into one base path hold a lock, so concurrent pulls get consecutive
versions instead of racing for one.

A published release's card facts (`card_facts`) go into the version as
`serving.card.CARD_PATH` before that rename, so a version never appears without its card.
"""

from __future__ import annotations

from pathlib import Path

from catalogue import prebuilt
from catalogue.archive import RUN, SAVED_MODEL, archive_kind, directory_kind, unpack
from catalogue.cache import Cache
from catalogue.errors import PullError
from catalogue.headline import format_metric
from catalogue.manifest import Release
from serving.card import CARD_PATH
from serving.layout import next_version, staged_directory, write_json_atomic

#: The artifact's tree inside the version's staging directory, before it is hoisted.
_INNER = ".zoo-install"


def _export(run_dir: Path, to: Path, model_name: str) -> Path:
    from training import export  # TensorFlow: only when a run artifact is installed

    return export.run(run_dir, to.parent, version=int(to.name), model_name=model_name)


def card_facts(release: Release) -> dict[str, str | int | bool]:
    """The flat card a served version carries (`serving.card`), from its manifest record."""
    return {
        "artifact": release.reference,
        "family": release.family,
        "metric": format_metric(release.metric),
        "dataset": release.dataset,
        "licence": release.licence,
        "restricted": release.restricted,
        "parameters": release.parameters,
        "size": release.size,
        "weights_dtype": release.weights_dtype,
    }


def install(
    archive: str | Path,
    sha256: str,
    base_path: str | Path,
    version: int | None = None,
    cache: Cache | None = None,
    card: dict | None = None,
) -> Path:
    """Install the verified `archive` (content hash `sha256`) into `<base_path>/<version>/`
    (the next free version when None), with `card` (`card_facts`) as its model card when
    given; returns the version directory."""
    cache, base_path = cache or Cache(), Path(base_path)
    run_dir = cache.run_dir(sha256)  # unpacked by an earlier pull: no pass over the archive
    if directory_kind(run_dir) != RUN:
        run_dir = None if archive_kind(archive) == SAVED_MODEL else cache.unpacked(sha256)
    with cache.install_lock(base_path):
        number = next_version(base_path) if version is None else version
        final = base_path / str(number)
        try:
            # Each route below writes its tree atomically into the staging directory, which
            # gains the card and then becomes the version in one rename.
            with staged_directory(final) as staging:
                inner = staging / _INNER
                if run_dir is None:
                    unpack(archive, inner)
                elif prebuilt.carries_export(run_dir):
                    prebuilt.install_export(run_dir, inner)
                else:
                    _export(run_dir, staging / "1", base_path.name)
                    inner = staging / "1"
                for entry in list(inner.iterdir()):
                    entry.rename(staging / entry.name)
                inner.rmdir()
                if card:
                    (staging / CARD_PATH).parent.mkdir(exist_ok=True)
                    write_json_atomic(staging / CARD_PATH, card)
            return final
        except FileExistsError as err:
            raise PullError(str(err)) from None
