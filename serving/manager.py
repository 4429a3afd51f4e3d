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
A new model's versions that are still settling (see `serving.repository`) are waited for,
up to SETTLE_WAIT_SECONDS, so that a reload answers their load errors as TF Serving's
(which loads at once) does.

Loads run in parallel as TF Serving's do: the first config's models with
`num_initial_load_threads` threads (ServerCore's option, 4 x CPUs by default: a server waits
for its slowest initial model, not for their sum), later ones (polls, config reloads) with
`num_load_threads` (0: one at a time, in the calling thread, TF Serving's default), and
unloads with `num_unload_threads` (likewise). The unit of work is a model: its versions load
one after the other, and a model is made AVAILABLE, retried, or reported as failed exactly as
when loads run one at a time; a config call still returns only when every load it started has
ended.

Storage problems stay with their model and are logged once, not on every poll: a base path
that cannot be listed (symlink loop, permission, a file) leaves the model without versions at
startup (GetModelStatus: NOT_FOUND with the reason) and keeps a loaded model's versions
serving when it happens later; unreadable version entries are skipped. A config reload is
checked first: when a base path it adds (a new model, or a model's new base path) cannot be
listed, it is refused with INVALID_ARGUMENT and nothing changes (TF Serving would accept it,
then fail every poll, logging the error each time, and wait forever for the model).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import grpc

from serving import repository
from serving.errors import ServingError, invalid, not_found
from serving.servable import Servable

log = logging.getLogger("serving.manager")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"

#: How long a config waits for a new model's versions that are still being written to settle.
SETTLE_WAIT_SECONDS = 30.0
#: ServerCore::Options::num_initial_load_threads: the first config's models load in parallel.
INITIAL_LOAD_THREADS = 4 * (os.cpu_count() or 1)


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
    #: why the base path cannot be listed now (logged when it first happened)
    storage_error: str | None = None
    #: storage conditions already logged (skipped versions, an absent base path)
    reported: set[str] = field(default_factory=set)


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
        num_load_threads: int = 0,
        num_unload_threads: int = 0,
        num_initial_load_threads: int = INITIAL_LOAD_THREADS,
    ):
        self._loader = loader
        self._load_threads = max(0, num_load_threads)
        self._unload_threads = max(0, num_unload_threads)
        self._initial_load_threads = max(0, num_initial_load_threads)
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
        self._poll_errors: dict[str, str] = {}  # model -> last unexpected poll error logged

    # ---- configuration -------------------------------------------------------------------
    def set_config(self, config: repository.ModelServerConfig) -> None:
        """Replace the whole model list (initial load or HandleReloadConfigRequest).

        A reload adding a base path that cannot be listed is refused first (INVALID_ARGUMENT,
        nothing changes); the initial config is applied all the same, the models concerned
        staying without versions. Raises UNKNOWN "N model(s) did not become available: {...}"
        when a model new to this config fails to load (after its retries), like TF Serving's
        ServerCore::ReloadConfig; the rest of the config is applied all the same, and the
        other models keep serving.
        """
        repository.validate_config(config)
        wanted = {m.name: m for m in config.model_config_list.config}
        with self._sync_lock:
            first = not self._started
            if not first:
                with self._lock:
                    known = {n: m.config.base_path for n, m in self._models.items()}
                _check_storage(config, known)
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
            _each(removed, self._unload_model, self._unload_threads, self._stop)
            _each(
                wanted,
                lambda name: self._sync_model(
                    name, settle_wait=SETTLE_WAIT_SECONDS if name in new else 0
                ),
                self._initial_load_threads if first else self._load_threads,
                self._stop,
            )
            errors = []
            for name in wanted:
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
        """Look at storage once and load/unload what changed, for every model: every model's
        storage is listed first, then the models with versions to load are reconciled, with
        `num_load_threads` threads, and the others in this thread."""
        with self._sync_lock:
            plans = {}
            for name in list(self._models):
                plan = self._polled(name, lambda name=name: self._plan(name))
                if plan is not None:
                    plans[name] = plan
            loading = [name for name, plan in plans.items() if self._to_load(*plan)]
            _each(
                loading,
                lambda name: self._polled(name, lambda: self._reconcile(name, *plans[name])),
                self._load_threads,
                self._stop,
            )
            for name, plan in plans.items():
                if name not in loading:
                    self._polled(name, lambda name=name, plan=plan: self._reconcile(name, *plan))

    def _polled(self, name: str, step: Callable):
        """`step()` for one model during a poll: an unexpected error is logged (once while
        its message stays the same), never raised, so one model's problem cannot stop
        polling; returns what `step` returned (None after an error)."""
        try:
            result = step()
        except Exception as e:
            message = f"{type(e).__name__}: {e}"
            if self._poll_errors.get(name) != message:  # once, not every poll
                self._poll_errors[name] = message
                log.exception("polling model %s failed", name)
            return None
        self._poll_errors.pop(name, None)
        return result

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
    def _sync_model(self, name: str, settle_wait: float = 0) -> None:
        """Load the model's aspired versions and unload the others; waits up to
        `settle_wait` seconds for aspired versions still being written."""
        plan = self._plan(name, settle_wait)
        if plan is not None:
            self._reconcile(name, *plan)

    def _plan(
        self, name: str, settle_wait: float = 0
    ) -> tuple[ModelEntry, list[repository.VersionDir]] | None:
        """(the model, its aspired versions on storage), or None when the model is gone or
        its base path cannot be listed (then what is loaded stays)."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return None
            cfg = model.config
        found = self._scan(name, model, cfg, settle_wait)
        if found is None:
            return None
        return model, repository.aspired_versions(cfg, found)

    @staticmethod
    def _to_load(
        model: ModelEntry, aspired: list[repository.VersionDir]
    ) -> list[repository.VersionDir]:
        """The aspired versions that are neither loaded, loading, nor failed unchanged."""
        todo = []
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
            todo.append(vdir)
        return todo

    def _reconcile(
        self, name: str, model: ModelEntry, aspired: list[repository.VersionDir]
    ) -> None:
        """Load the aspired versions that need it, then unload the versions no longer
        aspired once an aspired one is AVAILABLE (availability preserving)."""
        for vdir in self._to_load(model, aspired):
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
        _each(to_unload, self._finish_unload, self._unload_threads, self._stop)

    def _scan(
        self, name: str, model: ModelEntry, cfg: repository.ModelConfig, settle_wait: float
    ) -> list[repository.VersionDir] | None:
        """The settled versions on storage (None when the base path cannot be listed),
        after waiting up to `settle_wait` s for aspired ones still settling; logs new
        storage problems once."""
        deadline = time.monotonic() + settle_wait
        while True:
            try:
                found = repository.scan(cfg.base_path, self._settle)
            except repository.StorageError as e:
                if model.storage_error != e.message:
                    log.error("Model %s: %s; it gets no new versions", name, e.message)
                model.storage_error = e.message
                return None
            wait = _settle_wait(cfg, found)
            if wait is None or time.monotonic() + wait > deadline or self._stop.wait(wait):
                break
        if model.storage_error is not None:
            log.info("Model %s: base path %s can be listed again", name, cfg.base_path)
            model.storage_error = None
        self._report(name, model, found, cfg.base_path)
        return found.versions

    @staticmethod
    def _report(name: str, model: ModelEntry, found: repository.Scan, base_path: str) -> None:
        """Log each storage condition of the model once, while it lasts."""
        conditions = {f"skipping {reason}" for reason in found.skipped}
        if found.missing:  # TF Serving's message, which it logs on every poll
            conditions.add(f"Could not find base path {base_path} for servable {name}")
        for condition in sorted(conditions - model.reported):
            log.warning("Model %s: %s", name, condition)
        model.reported = conditions

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
        _each(entries, self._finish_unload, self._unload_threads, self._stop)
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
                reason = (
                    "" if model is None or not model.storage_error else f": {model.storage_error}"
                )
                raise not_found(f"Could not find any versions of model {name}{reason}")
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
            _each(list(self._models), self._unload_model, self._unload_threads, self._stop)


def _each(items: Iterable, work: Callable, threads: int, stop: threading.Event) -> None:
    """`work(item)` for every item: in this thread, one after the other, when `threads` is
    0 or 1 or there is at most one item (the first error is raised at once, as a plain loop
    would); else on up to `threads` threads at once, returning when every call has ended and
    then raising the first error in the items' order. Interrupted while waiting (Ctrl-C
    during the initial loads), it drops the calls not started yet and sets `stop` (a failed
    load is not retried), and lets the interruption through."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        for item in items:
            work(item)
        return
    pool = ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="manager")
    try:
        futures = [pool.submit(work, item) for item in items]
        wait(futures)
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    for future in futures:
        future.result()


def _settle_wait(cfg: repository.ModelConfig, found: repository.Scan) -> float | None:
    """Seconds until the aspired versions still settling have settled (None when none is)."""
    if not found.pending:
        return None
    pending = {vdir.version: wait for vdir, wait in found.pending}
    candidates = sorted(
        found.versions + [vdir for vdir, _ in found.pending], key=lambda v: v.version
    )
    waits = [
        pending[v.version]
        for v in repository.aspired_versions(cfg, candidates)
        if v.version in pending
    ]
    return max(waits) if waits else None


def _check_storage(config: repository.ModelServerConfig, known: dict[str, str]) -> None:
    """INVALID_ARGUMENT naming every base path of `config` that cannot be listed, except
    those of models configured with that base path already (`known`: name -> base path),
    whose storage problem stays confined to them as before the reload."""
    problems = []
    for model in config.model_config_list.config:
        if known.get(model.name) == model.base_path:
            continue
        try:
            repository.check_base_path(model.base_path)
        except repository.StorageError as e:
            problems.append(f"model {model.name}: {e.message}")
    if problems:
        raise invalid("; ".join(problems))
