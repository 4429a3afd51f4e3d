"""The source side of the server: model config files and version discovery on storage.

Mirrors TF Serving's `FileSystemStoragePathSource`: a model lives in `base_path/<int64 version>/`
(non-numeric names are ignored, `00000123` is version 123; the rules live in `serving.layout`),
and the model's version policy (`latest {num_versions}`, `all {}`, `specific {versions}`)
picks the aspired versions.
Unlike TF Serving, a version directory is only offered once it looks complete (it has a
`saved_model.pb`/`.pbtxt` and nothing in it changed for `settle_seconds`), so a half-copied
version is never loaded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import layout
from serving.errors import invalid

ModelConfig = model_server_config_pb2.ModelConfig
ModelServerConfig = model_server_config_pb2.ModelServerConfig


@dataclass(frozen=True)
class VersionDir:
    """One version directory found on storage."""

    version: int
    path: Path
    fingerprint: tuple


def parse_model_server_config(text: str) -> ModelServerConfig:
    """Parse a text-format `ModelServerConfig`, with a clear error on bad syntax."""
    try:
        config = text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as e:
        raise invalid(f"Invalid model config file: {e}") from None
    validate_config(config)
    return config


def validate_config(config: ModelServerConfig) -> None:
    """Check what TF Serving checks: a model_config_list, unique names, tensorflow platform."""
    if config.WhichOneof("config") != "model_config_list":
        raise invalid("ModelServerConfig must contain a model_config_list")
    names = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise invalid("Every model config needs a name")
        if model.name in names:
            raise invalid(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
        if not model.base_path:
            raise invalid(f"Model {model.name} has no base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise invalid(
                f"Model {model.name}: unsupported model_platform {model.model_platform!r} "
                "(only 'tensorflow' is served)"
            )


def single_model_config(name: str, base_path: str) -> ModelServerConfig:
    """The config equivalent of `--model_name NAME --model_base_path PATH`."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config


def _tree_fingerprint(path: Path) -> tuple[tuple, float]:
    """(sorted (relpath, size, mtime) of every file, newest ctime in the tree)."""
    entries = []
    newest = os.stat(path).st_ctime
    for root, _dirs, files in os.walk(path):
        newest = max(newest, os.stat(root).st_ctime)
        for f in files:
            st = os.stat(os.path.join(root, f))
            entries.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime))
            newest = max(newest, st.st_ctime)
    return tuple(sorted(entries)), newest


def list_versions(base_path: str | Path, settle_seconds: float = 0.5) -> list[VersionDir]:
    """Complete version directories under base_path, oldest first.

    A directory counts once it holds a saved_model.pb(.pbtxt) and nothing in it was created or
    changed during the last `settle_seconds` (a copy in progress keeps touching ctimes).
    """
    found = []
    now = time.time()
    for version, child in layout.version_dirs(base_path):
        if not ((child / "saved_model.pb").exists() or (child / "saved_model.pbtxt").exists()):
            continue
        try:
            fingerprint, newest = _tree_fingerprint(child)
        except FileNotFoundError:  # removed while we looked
            continue
        if now - newest < settle_seconds:
            continue
        found.append(VersionDir(version, child, fingerprint))
    return found


def aspired_versions(model: ModelConfig, available: list[VersionDir]) -> list[VersionDir]:
    """Apply the model's version policy to the versions found on storage."""
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return list(available)
    if kind == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in available if v.version in wanted]
    num = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return available[-num:]
