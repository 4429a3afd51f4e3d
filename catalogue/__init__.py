"""Published model artifacts: publish, resolve, download, verify, cache, install, load.

An artifact is a minimal training run directory packed as a reproducible `.tar.gz`
(`archive`): run.json, one weights-only checkpoint (float16 when published with `--half`),
metrics.json and a generated card.md (`card`), plus the SavedModel `zoo pull` installs
(`prebuilt`). Unpacked, it is a run directory like any other:
`training.export.load_trained`, `zoo export` and fine-tuning read it unchanged. SavedModel
version directories can be packed and pulled too.

- `publish` (`zoo publish`): run directory -> artifact + card + manifest entry, in one step;
  the metric on the card is measured on the artifact itself.
- `manifest`: `pretrained/manifest.json`, the catalogue a name resolves in.
- `fetch` / `download` / `cache`: mirrors in order, resumable transfers, sha256 verification
  before anything is unpacked, a content-addressed cache that works offline, locks so that
  concurrent pulls download once.
- `install` (`zoo pull`): the verified artifact -> the next SavedModel version, atomically:
  its prebuilt SavedModel, its weights written back from the checkpoint and checked
  (`prebuilt`), or, for an artifact published without one, an export.
- `load_model`: an artifact as a Keras model, for predicting or fine-tuning.

Nothing here imports TensorFlow until a model is built (install, evaluate, load_model), so
`zoo list` and the download machinery stay fast.

The catalogue sits above `training`: it imports training (export, evaluate) to publish and
install runs, and training never imports it (a recipe that starts from published weights
gets them from a `load_source` its caller builds on `load_model`: `training.sources`).
"""

from catalogue.archive import RUN, SAVED_MODEL, archive_kind, pack, sha256_of
from catalogue.cache import Cache, default_cache
from catalogue.errors import PublishError, PullError
from catalogue.fetch import Source, fetch
from catalogue.install import install
from catalogue.manifest import Manifest, Release, pretrained_dir
from catalogue.publish import publish
from catalogue.pull import (
    fetch_reference,
    install_fetched,
    load_model,
    parent_record,
    pull,
    resolve,
    run_dir_for,
)

__all__ = [
    "RUN",
    "SAVED_MODEL",
    "Cache",
    "Manifest",
    "PublishError",
    "PullError",
    "Release",
    "Source",
    "default_cache",
    "archive_kind",
    "fetch",
    "fetch_reference",
    "install",
    "install_fetched",
    "load_model",
    "pack",
    "parent_record",
    "pretrained_dir",
    "publish",
    "pull",
    "resolve",
    "run_dir_for",
    "sha256_of",
]
