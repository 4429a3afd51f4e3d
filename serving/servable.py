"""The loader: one loaded SavedModel version, its signatures, and how to run them.

Every SavedModel is imported into its own graph and TF1 session, the way TF Serving's C++
server runs them, and signatures run by tensor name through a C-level callable
(`CallableOptions`). A callable costs far less per call than a TF2 signature function called
eagerly (no structured-argument binding, no EagerTensor round trip): measured here, about
0.5-1 ms of a ~3 ms CIFAR convnet request. Callables skip the Python-side shape check of
`Session.run`, so a legacy TF1 request is never rejected on a shape its graph accepts (TF
Serving's own tests send `x` of shape [1] to a signature declared [-1, 1]).

TF2 SavedModels (they carry an object graph) run the same way when the import restores every
variable their graph reads. Keras 3 models saved without their variables tracked do not
("Could not find variable ..." at the first call, keras #20095): those, and any TF2 model the
session import refuses, load with `tf.saved_model.load` and run their signature functions
eagerly. So does a TF2 model that declares a generating signature (`serving.cost`): its
loop runs as long as asked, and only a function call can be cancelled when the client
cancels or leaves.
Closing a version drops the session / loaded object, so reloads keep memory flat.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.saved_model import loader_impl

from serving import aio, card, cost, deadline
from serving.errors import ServingError, error_summary, invalid

log = logging.getLogger("serving.servable")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def dtype_name(dtype_enum: int) -> str:
    """'DT_FLOAT' for types_pb2.DT_FLOAT."""
    return types_pb2.DataType.Name(dtype_enum)


def numpy_dtype(dtype_enum: int) -> np.dtype:
    """The numpy dtype used for a TensorFlow dtype (object for strings)."""
    return np.dtype(tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype)


def shape_of(info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    """Declared shape ([-1 for unknown dims]) or None for unknown rank."""
    if info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in info.tensor_shape.dim]


def describe(tensors: dict[str, meta_graph_pb2.TensorInfo]) -> str:
    """'x: DT_FLOAT [-1,1], y: DT_STRING [?]' for error messages."""
    parts = []
    for name in sorted(tensors):
        shape = shape_of(tensors[name])
        shape_txt = "unknown rank" if shape is None else "[" + ",".join(map(str, shape)) + "]"
        parts.append(f"{name}: {dtype_name(tensors[name].dtype)} {shape_txt}")
    return ", ".join(parts)


def shape_compatible(declared: list[int] | None, actual: tuple[int, ...]) -> bool:
    """Whether an array shape matches a declared signature shape."""
    if declared is None:
        return True
    if len(declared) != len(actual):
        return False
    return all(d == -1 or d == a for d, a in zip(declared, actual, strict=True))


@dataclass
class Signature:
    """One signature of a loaded version."""

    name: str
    proto: meta_graph_pb2.SignatureDef

    @property
    def method_name(self) -> str:
        return self.proto.method_name

    @property
    def inputs(self) -> dict[str, meta_graph_pb2.TensorInfo]:
        return dict(self.proto.inputs)

    @property
    def outputs(self) -> dict[str, meta_graph_pb2.TensorInfo]:
        return dict(self.proto.outputs)

    def spec_text(self) -> str:
        """Human-readable expected inputs, for error messages."""
        return f"signature '{self.name}' expects inputs {{{describe(self.inputs)}}}"


def _variables_read_by_signatures(graph: tf.Graph, meta_graph) -> list[tf.Tensor]:
    """The resource-variable handles that the signatures' outputs depend on."""
    stack = [
        graph.as_graph_element(info.name, allow_operation=True)
        for key, sig in meta_graph.signature_def.items()
        if not key.startswith("__")  # __saved_model_init_op: the loader runs it itself
        for info in sig.outputs.values()
    ]
    stack = [t if isinstance(t, tf.Operation) else t.op for t in stack]
    seen: set[str] = set()
    handles = []
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type == "VarHandleOp":
            handles.append(op.outputs[0])
            continue
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return handles


class Servable:
    """A SavedModel version loaded in its own TF session."""

    def __init__(
        self,
        name: str,
        version: int,
        path: str | Path,
        session_config=None,
        tags: tuple[str, ...] = ("serve",),
    ):
        self.name = name
        self.version = version
        self.path = Path(path)
        self.tags = tuple(tags)  # --saved_model_tags: the MetaGraph whose tags are exactly these
        saved_model = loader_impl.parse_saved_model(str(self.path))
        self.costs = cost.read_costs(self.path)  # what its signatures' requests cost
        self.card = card.read_card(self.path)  # the published artifact's facts, if any
        meta_graph = next(
            (m for m in saved_model.meta_graphs if set(m.meta_info_def.tags) == set(self.tags)),
            None,
        )
        if meta_graph is None:
            found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
            raise ValueError(
                f"{self.path} has no MetaGraph tagged {sorted(self.tags)} (it has {found})"
            )
        self.is_tf2 = len(meta_graph.object_graph_def.nodes) > 0
        self._graph = self._session = self._loaded = None
        if self.is_tf2 and any(c.generates for c in self.costs.values()):
            # A generator runs for as long as it is asked to, and a session run cannot be
            # cancelled from outside; a TF2 function call can: such a model runs its
            # signature functions, so that a client who cancels or leaves stops the loop.
            self._loaded = tf.saved_model.load(str(self.path), tags=list(self.tags))
        else:
            try:
                meta_graph = self._load_session(session_config)
            except Exception as e:
                if not self.is_tf2:
                    raise
                log.info("%s runs its TF2 signature functions eagerly: %s", self.path, e)
                self._loaded = tf.saved_model.load(str(self.path), tags=list(self.tags))
        self.meta_graph = meta_graph
        self.signatures = {k: Signature(k, v) for k, v in meta_graph.signature_def.items()}
        self._callables: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.batching = None  # batching.BatchingOptions when --enable_batching
        self.batchers: dict[str, object] = {}  # signature name -> batching.BatchQueue, lazily

    @property
    def runtime(self) -> str:
        """'session' (graph + C callables) or 'eager' (TF2 signature functions)."""
        return "eager" if self._loaded is not None else "session"

    def _load_session(self, session_config) -> meta_graph_pb2.MetaGraphDef:
        """Import the SavedModel into a new graph and session; raise if any variable its
        graph reads was not restored (then the session would fail at the first request)."""
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config)
        try:
            with graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(
                    session, list(self.tags), str(self.path)
                )
                handles = _variables_read_by_signatures(graph, meta_graph)
                if handles:
                    checks = [tf.raw_ops.VarIsInitializedOp(resource=h) for h in handles]
                    done = session.run(checks)
                    missing = [h.op.name for h, ok in zip(handles, done, strict=True) if not ok]
                    if missing:
                        raise ValueError(f"variables not restored: {missing[:5]}")
        except Exception:
            session.close()
            raise
        self._graph, self._session = graph, session
        return meta_graph

    def signature(self, name: str) -> Signature:
        """Signature by name ('' means serving_default); FAILED_PRECONDITION if unknown."""
        name = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(name)
        if sig is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature name: "{name}" not found in signature def '
                f"(available: {', '.join(sorted(self.signatures))})",
            )
        return sig

    def _callable(self, sig: Signature, feed_names: tuple, fetch_names: tuple, timeout_ms: int):
        key = (sig.name, feed_names, fetch_names, timeout_ms)
        fn = self._callables.get(key)
        if fn is None:
            with self._lock:
                fn = self._callables.get(key)
                if fn is None:
                    options = config_pb2.CallableOptions(
                        feed=[sig.proto.inputs[n].name for n in feed_names],
                        fetch=[sig.proto.outputs[n].name for n in fetch_names],
                    )
                    if timeout_ms > 0:  # the session enforces it (DeadlineExceededError)
                        options.run_options.timeout_in_ms = timeout_ms
                    fn = self._session._make_callable_from_options(options)
                    self._callables[key] = fn
        return fn

    def run_direct(
        self, sig: Signature, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """Run the graph on already validated inputs; graph errors become clear messages.

        Runs under the calling request's deadline (serving.deadline), if it has one.
        """
        limit = deadline.current()
        if limit is not None and limit.remaining() <= 0:
            raise limit.error()
        if self._loaded is not None:
            return self._run_eager(sig, inputs, output_names, limit)
        feed_names = tuple(sorted(inputs))
        fn = self._callable(sig, feed_names, output_names, limit.timeout_ms if limit else 0)
        try:
            values = fn(*[inputs[n] for n in feed_names])
        except tf.errors.DeadlineExceededError:
            if limit is None:
                raise
            raise limit.error() from None
        except tf.errors.OpError as e:
            raise self._explain(sig, inputs, e) from None
        return dict(zip(output_names, values, strict=True))

    def _run_eager(
        self,
        sig: Signature,
        inputs: dict[str, np.ndarray],
        output_names: tuple[str, ...],
        limit: deadline.Deadline | None,
    ) -> dict[str, np.ndarray]:
        fn = self._loaded.signatures.get(sig.name)
        if fn is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Signature {sig.name} is not callable in this SavedModel",
            )
        try:
            with deadline.cancel_at(limit):
                result = fn(**{k: tf.convert_to_tensor(v) for k, v in inputs.items()})
                return {n: result[n].numpy() for n in output_names}
        except tf.errors.OpError as e:
            # judged by the clock: a failing function also cancels its manager itself
            if limit is not None and limit.remaining() <= 0:
                raise limit.error() from None
            raise self._explain(sig, inputs, e) from None
        except (TypeError, ValueError) as e:  # the function's input_signature refused it
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise self._explain(sig, inputs, None, first) from None

    def _batcher(self, sig: Signature):
        """The signature's batch queue (made on first use); None when batching is off or
        the version is closing."""
        if self.batching is None:
            return None
        batcher = self.batchers.get(sig.name)
        if batcher is None:
            from serving.batching import BatchQueue

            with self._lock:
                if self._closed:
                    return None
                batcher = self.batchers.get(sig.name)
                if batcher is None:
                    batcher = self.batchers[sig.name] = BatchQueue(self, sig, self.batching)
        return batcher

    def run(
        self, sig: Signature, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """Run a signature, through its batch queue when batching is on."""
        batcher = self._batcher(sig)
        if batcher is None:
            return self.run_direct(sig, inputs, output_names)
        return batcher.submit(sig, inputs, output_names)

    async def run_async(
        self, sig: Signature, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """`run` for a caller on an event loop: a request waiting for its batch holds no
        thread; a run outside batching takes one of the front end's workers."""
        batcher = self._batcher(sig)
        if batcher is None:
            return await aio.blocking(self.run_direct, sig, inputs, output_names)
        return await batcher.submit_async(sig, inputs, output_names)

    def _explain(
        self, sig: Signature, inputs: dict[str, np.ndarray], error, first_line: str = ""
    ) -> ServingError:
        """Turn a graph error into a message naming what the signature expects."""
        if error is not None:
            first_line = error_summary(error.message or str(error)) or type(error).__name__
        mismatched = [
            f"'{n}' has shape {list(a.shape)} but {describe({n: sig.proto.inputs[n]})}"
            for n, a in inputs.items()
            if not shape_compatible(shape_of(sig.proto.inputs[n]), a.shape)
        ]
        code = grpc.StatusCode.INVALID_ARGUMENT
        if isinstance(error, tf.errors.ResourceExhaustedError):
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
        elif (
            error is not None
            and not isinstance(error, tf.errors.InvalidArgumentError)
            and not mismatched
        ):
            code = grpc.StatusCode.INTERNAL
        hint = ("; input " + "; ".join(mismatched)) if mismatched else ""
        return ServingError(code, f"{first_line}{hint}. {sig.spec_text()}")

    def close(self) -> None:
        """Stop batch threads and free the session (and its memory)."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
        for batcher in self.batchers.values():
            batcher.close()
        self._callables.clear()
        if self._session is not None:
            self._session.close()
        self._graph = self._session = self._loaded = None


def check_dtype(sig: Signature, name: str, array: np.ndarray) -> np.ndarray:
    """Validate/convert one input to its declared dtype, with a clear message if impossible."""
    info = sig.proto.inputs[name]
    want = numpy_dtype(info.dtype)
    if array.dtype == want:
        return array
    if want.kind == "O" and array.dtype.kind in "SU":
        return array.astype(object)
    raise invalid(f"Input '{name}' has dtype {np.dtype(array.dtype).name} but {sig.spec_text()}")
