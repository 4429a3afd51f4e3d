"""The manager: which versions are loaded, availability-preserving swaps, handles, status.

Like TF Serving's AspiredVersionsManager + AvailabilityPreservingPolicy: the repository says
which versions are aspired; new versions are loaded (and warmed up) first, and an old version
is unloaded only once an aspired version is AVAILABLE, so a failed or half-copied new version
leaves the serving one in place (the failure shows in the model status). Request handlers get
a servable through `acquire()`, a context manager that pins the version so an unload waits for
in-flight requests to finish before it closes the session.

As in TF Serving, a failed load is retried `max_num_load_retries` times, `load_retry_interval`
apart, staying LOADING meanwhile (core/loader_harness.cc LoaderHarness::Load, util/retrier.cc);
a config whose new models do not become available is answered with an error
(model_servers/server_core.cc WaitUntilModelsAvailable); and a model removed by a config
reload keeps reporting its versions as END (the ServableStateMonitor never forgets them).
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


def servable_id(name: str, version: int) -> str:
    """TF Serving's ServableId::DebugString()."""
    return f"{{name: {name} version: {version}}}"


class Manager:
    """Owns every loaded servable; thread-safe."""

    def __init__(
        self,
        loader: Loader,
        settle_seconds: float = 0.5,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        allow_version_labels_for_unavailable_models: bool = False,
    ):
        self._loader = loader
        self._settle = settle_seconds
        self._retries = max(0, max_num_load_retries)
        self._retry_interval = load_retry_interval_seconds
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._models: dict[str, ModelEntry] = {}
        # models removed by a config reload: their versions, all END, for GetModelStatus
        self._retired: dict[str, dict[int, VersionEntry]] = {}
        self._started = False  # a first config has been applied
        self._lock = threading.Condition()  # guards _models and entry states/refs
        self._sync_lock = threading.Lock()  # one reconcile (poll or reload) at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- configuration -------------------------------------------------------------------
    def set_config(self, config: repository.ModelServerConfig) -> None:
        """Replace the whole model list (initial load or HandleReloadConfigRequest).

        Raises UNKNOWN "N model(s) did not become available: {...}" when a model new to this
        config fails to load (after its retries), like TF Serving's ServerCore::ReloadConfig;
        the rest of the config is applied all the same, and the other models keep serving.
        """
        repository.validate_config(config)
        wanted = {m.name: m for m in config.model_config_list.config}
        with self._sync_lock:
            first = not self._started
            self._started = True
            with self._lock:
                new = [n for n in wanted if n not in self._models]
                for name, cfg in wanted.items():
                    if name in self._models:
                        self._models[name].config = cfg
                    else:
                        self._models[name] = ModelEntry(cfg)
                        self._retired.pop(name, None)
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
            failed = self._failed_new_models(new)
            if failed:
                what = "servable(s)" if first else "model(s)"
                raise ServingError(
                    grpc.StatusCode.UNKNOWN,
                    f"{len(failed)} {what} did not become available: {{{''.join(failed)}}}",
                )

    def _failed_new_models(self, names: list[str]) -> list[str]:
        """'{name: m version: v} due to error: ...}, ' for each new model whose aspired
        versions all failed (a model with no version on storage yet is not a failure)."""
        failed = []
        with self._lock:
            for name in names:
                model = self._models.get(name)
                if model is None or not model.versions:
                    continue
                entries = list(model.versions.values())
                if any(e.state == AVAILABLE for e in entries):
                    continue
                latest = max(entries, key=lambda e: e.version)
                if latest.error is None:
                    continue
                error = f"{latest.error.code.name}: {latest.error.message}"
                failed.append(f"{{{servable_id(name, latest.version)} due to error: {error}}}, ")
        return failed

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

    def _still_wanted(self, name: str, model: ModelEntry) -> bool:
        """Whether retrying a load still makes sense (TF Serving's should_retry: the version
        is still aspired; here: the server runs and the model is still configured)."""
        with self._lock:
            return not self._stop.is_set() and self._models.get(name) is model

    def _load(self, name: str, model: ModelEntry, vdir: repository.VersionDir) -> None:
        entry = VersionEntry(vdir.version, LOADING, fingerprint=vdir.fingerprint)
        with self._lock:
            model.versions[vdir.version] = entry
        description = f"Loading servable: {servable_id(name, vdir.version)}"
        log.info("%s from %s", description, vdir.path)
        attempt = 0
        while True:
            try:
                servable = self._loader(name, vdir.version, str(vdir.path))
                break
            except Exception as e:  # any load failure is reported in the status, not raised
                message = f"Failed to load version {vdir.version} of model {name}: {e}"
                del e
                release_memory()  # a half-loaded graph is garbage now
                log.error("%s failed: %s", description, message)
                attempt += 1
                if attempt > self._retries or not self._still_wanted(name, model):
                    if attempt > self._retries:
                        log.info(
                            "Retrying of %s exhausted max_num_retries: %d",
                            description,
                            self._retries,
                        )
                    with self._lock:
                        entry.state = END
                        entry.error = ServingError(grpc.StatusCode.UNKNOWN, message)
                    return
                if self._retry_interval > 0:
                    self._stop.wait(self._retry_interval)
                log.info("Retrying of %s retry: %d", description, attempt)
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
            model = self._models.pop(name, None)
            if model is not None and model.versions:
                for e in model.versions.values():
                    if e.state != END:  # never loaded: a load in progress was abandoned
                        e.state = END
                self._retired[name] = model.versions

    def _apply_labels(self, name: str) -> None:
        with self._lock:
            model = self._models[name]
            labels = dict(model.config.version_labels)
            for label, version in labels.items():
                entry = model.versions.get(version)
                if self._allow_unavailable_labels and model.labels.get(label, version) == version:
                    continue  # server_core.cc UpdateModelVersionLabelMap: a new label is allowed
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
            raise invalid("ModelSpec has no name specified.")  # server_core.cc
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
            versions = model.versions if model is not None else self._retired.get(name, {})
            if not versions:
                raise not_found(f"Could not find any versions of model {name}")
            if version is not None:
                if version not in versions:
                    raise not_found(f"Could not find version {version} of model {name}")
                entries = [versions[version]]
            else:
                entries = sorted(versions.values(), key=lambda e: -e.version)
            return [VersionEntry(e.version, e.state, None, e.error, e.fingerprint) for e in entries]

    def model_names(self) -> list[str]:
        """Configured model names."""
        with self._lock:
            return list(self._models)

    def ready(self, name: str | None = None, version: int | None = None) -> bool:
        """Whether a configured model (every configured model when name is None) has an
        AVAILABLE version (that version, when given): the Open Inference Protocol's readiness."""
        with self._lock:
            names = list(self._models) if name is None else [name]
            for n in names:
                model = self._models.get(n)
                if model is None:
                    return False
                states = {v: e.state for v, e in model.versions.items()}
                if version is not None:
                    if states.get(version) != AVAILABLE:
                        return False
                elif AVAILABLE not in states.values():
                    return False
            return True

    def stop(self) -> None:
        """Stop polling and unload everything."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        with self._sync_lock:
            for name in list(self._models):
                self._unload_model(name)
