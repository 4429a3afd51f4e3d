"""The manager: which versions are loaded, availability-preserving swaps, handles, status.

Like TF Serving's AspiredVersionsManager + AvailabilityPreservingPolicy: the repository says
which versions are aspired; new versions are loaded (and warmed up) first, and an old version
is unloaded only once an aspired version is AVAILABLE, so a failed or half-copied new version
leaves the serving one in place (the failure shows in the model status). Request handlers get
a servable through `acquire()`, a context manager that pins the version so an unload waits for
in-flight requests to finish before it closes the session.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from serving import repository
from serving.errors import ServingError, invalid, not_found
from serving.servable import Servable

log = logging.getLogger("serving.manager")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionEntry:
    """State of one version of one model."""

    version: int
    state: str = START
    servable: Servable | None = None
    error: ServingError | None = None
    fingerprint: tuple | None = None
    refs: int = 0


@dataclass
class ModelEntry:
    """A configured model: its config, versions and labels."""

    config: repository.ModelConfig
    versions: dict[int, VersionEntry] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


Loader = Callable[[str, int, str], Servable]


def _malloc_trim() -> Callable[[], None]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    return lambda: trim(0)


_trim = _malloc_trim()


def release_memory() -> None:
    """Free an unloaded version now: collect the reference cycles of TF objects (a loaded
    SavedModel and its functions, a session's graph) instead of waiting for a generation-2
    collection that a steady server may not trigger for a long time, then return freed heap
    pages to the OS (glibc malloc_trim) so RSS reflects it."""
    gc.collect()
    _trim()


class Manager:
    """Owns every loaded servable; thread-safe."""

    def __init__(self, loader: Loader, settle_seconds: float = 0.5):
        self._loader = loader
        self._settle = settle_seconds
        self._models: dict[str, ModelEntry] = {}
        self._lock = threading.Condition()  # guards _models and entry states/refs
        self._sync_lock = threading.Lock()  # one reconcile (poll or reload) at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- configuration -------------------------------------------------------------------
    def set_config(self, config: repository.ModelServerConfig) -> None:
        """Replace the whole model list (initial load or HandleReloadConfigRequest)."""
        repository.validate_config(config)
        wanted = {m.name: m for m in config.model_config_list.config}
        with self._sync_lock:
            with self._lock:
                for name, cfg in wanted.items():
                    if name in self._models:
                        self._models[name].config = cfg
                    else:
                        self._models[name] = ModelEntry(cfg)
                removed = [n for n in self._models if n not in wanted]
            for name in removed:
                self._unload_model(name)
            errors = []
            for name in wanted:
                self._sync_model(name)
                try:
                    self._apply_labels(name)
                except ServingError as e:
                    errors.append(e)
            if errors:
                raise errors[0]

    def poll_once(self) -> None:
        """Look at storage once and load/unload what changed, for every model."""
        with self._sync_lock:
            for name in list(self._models):
                try:
                    self._sync_model(name)
                except Exception:  # never let one model's storage problem stop polling
                    log.exception("polling model %s failed", name)

    def start_polling(self, interval_seconds: float) -> None:
        """Poll storage every interval (TF Serving's --file_system_poll_wait_seconds)."""
        if interval_seconds <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                self.poll_once()

        self._poller = threading.Thread(target=loop, name="fs-poll", daemon=True)
        self._poller.start()

    # ---- reconcile -----------------------------------------------------------------------
    def _sync_model(self, name: str) -> None:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return
            cfg = model.config
        found = repository.list_versions(cfg.base_path, self._settle)
        aspired = repository.aspired_versions(cfg, found)
        for vdir in aspired:
            entry = model.versions.get(vdir.version)
            if entry is not None and entry.state in (AVAILABLE, LOADING):
                continue
            if (
                entry is not None
                and entry.error is not None
                and entry.fingerprint == vdir.fingerprint
            ):
                continue  # failed before and unchanged since: don't retry on every poll
            self._load(name, model, vdir)
        aspired_set = {v.version for v in aspired}
        with self._lock:
            keep_old = aspired_set and not any(
                model.versions.get(v) and model.versions[v].state == AVAILABLE for v in aspired_set
            )
            to_unload = [
                e
                for v, e in model.versions.items()
                if e.state == AVAILABLE and v not in aspired_set and not keep_old
            ]
            for e in to_unload:
                e.state = UNLOADING
        for e in to_unload:
            self._finish_unload(e)

    def _load(self, name: str, model: ModelEntry, vdir: repository.VersionDir) -> None:
        entry = VersionEntry(vdir.version, LOADING, fingerprint=vdir.fingerprint)
        with self._lock:
            model.versions[vdir.version] = entry
        log.info("Loading servable: {name: %s version: %d} from %s", name, vdir.version, vdir.path)
        try:
            servable = self._loader(name, vdir.version, str(vdir.path))
        except Exception as e:  # any load failure is reported in the status, not raised
            message = f"Failed to load version {vdir.version} of model {name}: {e}"
            log.error(message)
            with self._lock:
                entry.state = END
                entry.error = ServingError(grpc.StatusCode.UNKNOWN, message)
            del e
            release_memory()  # a half-loaded graph is garbage now
            return
        with self._lock:
            entry.servable = servable
            entry.state = AVAILABLE
        log.info("Successfully loaded servable version {name: %s version: %d}", name, vdir.version)

    def _finish_unload(self, entry: VersionEntry) -> None:
        with self._lock:
            while entry.refs > 0:
                self._lock.wait()
            servable, entry.servable = entry.servable, None
        if servable is not None:
            servable.close()
            del servable
            release_memory()
        with self._lock:
            entry.state = END
        log.info("Unloaded version %d", entry.version)

    def _unload_model(self, name: str) -> None:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return
            entries = [e for e in model.versions.values() if e.state == AVAILABLE]
            for e in entries:
                e.state = UNLOADING
        for e in entries:
            self._finish_unload(e)
        with self._lock:
            self._models.pop(name, None)

    def _apply_labels(self, name: str) -> None:
        with self._lock:
            model = self._models[name]
            labels = dict(model.config.version_labels)
            for version in labels.values():
                entry = model.versions.get(version)
                if entry is None or entry.state != AVAILABLE:
                    raise ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {name}, "
                        "which is not currently available for inference",
                    )
            model.labels = labels

    # ---- request side --------------------------------------------------------------------
    def resolve(self, name: str, version: int | None, label: str | None) -> VersionEntry:
        """The AVAILABLE entry a model spec points to (call with self._lock held)."""
        model = self._models.get(name)
        if label:
            if model is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            if label not in model.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = model.labels[label]
        if version is None:
            available = (
                []
                if model is None
                else [e for e in model.versions.values() if e.state == AVAILABLE]
            )
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return max(available, key=lambda e: e.version)
        entry = None if model is None else model.versions.get(version)
        if entry is None or entry.state != AVAILABLE:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return entry

    @contextlib.contextmanager
    def acquire(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        """Pin and yield the servable for a model spec; unloads wait for the release."""
        if not name:
            raise invalid("Missing ModelSpec: model name is empty")
        with self._lock:
            entry = self.resolve(name, version, label)
            entry.refs += 1
            servable = entry.servable
        try:
            yield servable
        finally:
            with self._lock:
                entry.refs -= 1
                if entry.refs == 0:
                    self._lock.notify_all()

    def status(self, name: str, version: int | None = None) -> list[VersionEntry]:
        """Snapshot of version states for GetModelStatus (newest first)."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise not_found(f"Could not find any versions of model {name}")
            if version is not None:
                if version not in model.versions:
                    raise not_found(f"Could not find version {version} of model {name}")
                entries = [model.versions[version]]
            else:
                entries = sorted(model.versions.values(), key=lambda e: -e.version)
            return [VersionEntry(e.version, e.state, None, e.error, e.fingerprint) for e in entries]

    def model_names(self) -> list[str]:
        """Configured model names."""
        with self._lock:
            return list(self._models)

    def stop(self) -> None:
        """Stop polling and unload everything."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        with self._sync_lock:
            for name in list(self._models):
                self._unload_model(name)
