"""The source side of the server: model config files and version discovery on storage.

Mirrors TF Serving's `FileSystemStoragePathSource`: a model lives in `base_path/<int64 version>/`
(non-numeric names are ignored, `00000123` is version 123; the rules live in `serving.layout`),
and the model's version policy (`latest {num_versions}`, `all {}`, `specific {versions}`)
picks the aspired versions.
Unlike TF Serving, a version directory is only offered once it looks complete (it has a
`saved_model.pb`/`.pbtxt` and nothing in it changed for `settle_seconds`), so a half-copied
version is never loaded.

Storage errors are confined to their model. TF Serving's source fails the whole poll, for
every model, when one base path cannot be listed (file_system_storage_path_source.cc
PollFileSystemForConfig), and logs it again on every poll; here `scan` raises a
`StorageError` ("base path /x: Too many levels of symbolic links") for that model only, and
the manager logs it once. An absent base path is no error, as in TF Serving: the model
simply has no versions until one appears. A version entry that cannot be read (a dangling
or looping symlink, a dangling `saved_model.pb`, an unreadable file in the tree) is skipped
with a reason in `Scan.skipped`, for the manager to log once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import layout
from serving.errors import ServingError, invalid

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


class StorageError(ServingError):
    """A base path that exists but cannot be listed: INVALID_ARGUMENT "base path P: reason"."""

    def __init__(self, base_path: str | Path, reason: str):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, f"base path {base_path}: {reason}")


def os_reason(e: OSError) -> str:
    """The readable part of an OSError ("Too many levels of symbolic links")."""
    return e.strerror or str(e)


@dataclass(frozen=True)
class Scan:
    """One look at a base path."""

    #: complete, settled version directories, oldest first
    versions: list[VersionDir]
    #: complete ones still changing, with the seconds until they count as settled
    pending: list[tuple[VersionDir, float]] = field(default_factory=list)
    #: "version V: reason" for each version entry that cannot be read
    skipped: list[str] = field(default_factory=list)
    #: the base path does not exist (yet)
    missing: bool = False


def _tree_fingerprint(path: Path) -> tuple[tuple, float]:
    """(sorted (relpath, size, mtime) of every file, newest ctime in the tree).

    Raises the OSError of the first entry that cannot be listed or stat'ed.
    """

    def fail(e: OSError) -> None:
        raise e

    entries = []
    newest = os.stat(path).st_ctime
    for root, _dirs, files in os.walk(path, onerror=fail):
        newest = max(newest, os.stat(root).st_ctime)
        for f in files:
            st = os.stat(os.path.join(root, f))
            entries.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime))
            newest = max(newest, st.st_ctime)
    return tuple(sorted(entries)), newest


def _unreadable(e: OSError) -> str:
    """Why an entry that exists cannot be read; a broken symlink is named as such."""
    name = e.filename if isinstance(e.filename, str) else None
    if name and isinstance(e, FileNotFoundError) and os.path.islink(name):
        return f"{name} is a dangling symbolic link"
    return f"{name}: {os_reason(e)}" if name else os_reason(e)


def _vanished(e: OSError) -> bool:
    """Whether `e` says an entry was removed while we looked (a race, not a problem)."""
    name = e.filename if isinstance(e.filename, str) else None
    return isinstance(e, FileNotFoundError) and not (name and os.path.lexists(name))


def _has_saved_model(version_dir: Path) -> bool:
    """Whether the version holds `saved_model.pb(txt)`; OSError when one is a broken link."""
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        candidate = version_dir / name
        try:
            os.lstat(candidate)  # PermissionError for a directory we may not look into
        except FileNotFoundError:
            continue
        os.stat(candidate)  # raises for a dangling or looping symlink
        return True
    return False


def _entries(base_path: str | Path) -> list[tuple[int, Path]] | None:
    """`layout.numbered_entries`, None when the base path is absent, StorageError when it
    cannot be listed."""
    try:
        return layout.numbered_entries(base_path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(base_path, os_reason(e)) from None
    except ValueError as e:  # a NUL byte in the path
        raise StorageError(base_path, str(e)) from None


def scan(base_path: str | Path, settle_seconds: float = 0.5) -> Scan:
    """The version directories under `base_path`, sorted into complete-and-settled, still
    changing, and unreadable ones. Raises StorageError when the base path exists but cannot
    be listed (symlink loop, permission, a file, an over-long name)."""
    entries = _entries(base_path)
    if entries is None:
        return Scan([], missing=True)
    result = Scan([])
    now = time.time()
    for version, child in entries:
        try:
            if not layout.is_dir(child):
                os.stat(child)  # a plain file is ignored; a broken link raises
                continue
            if not _has_saved_model(child):
                continue  # still being copied
            fingerprint, newest = _tree_fingerprint(child)
        except OSError as e:
            if not _vanished(e):
                result.skipped.append(f"version {version}: {_unreadable(e)}")
            continue
        vdir = VersionDir(version, child, fingerprint)
        wait = settle_seconds - (now - newest)
        if wait > 0:
            result.pending.append((vdir, wait))
        else:
            result.versions.append(vdir)
    return result


def list_versions(base_path: str | Path, settle_seconds: float = 0.5) -> list[VersionDir]:
    """Complete version directories under base_path, oldest first (`scan(...).versions`).

    A directory counts once it holds a saved_model.pb(.pbtxt) and nothing in it was created or
    changed during the last `settle_seconds` (a copy in progress keeps touching ctimes).
    """
    return scan(base_path, settle_seconds).versions


def check_base_path(base_path: str | Path) -> None:
    """Raise StorageError when `base_path` exists but cannot be listed (absent is fine)."""
    _entries(base_path)


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
