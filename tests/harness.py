"""One end-to-end harness for every model family (in the spirit of keras-hub's run_task_test).

A family's test module subclasses `FamilyEndToEnd`, gives the run of its tiny preset and a
request for one of its signatures as fixtures, and inherits the steps every family passes:

1. the tiny preset trains on a slice of real data and its loss falls;
2. the export (`zoo export`'s two steps in `training.export`) writes a SavedModel that,
   loaded in a process of its own importing neither `zoo`, `training` nor any Keras module
   beyond those `import tensorflow` itself loads (one per test process, `FreshLoader`, which
   loads every export it is sent), answers exactly as the export module it was saved from
   (which runs the Keras model) does in this process, both through `tf.saved_model.load`
   and through a TF1 session as stock TF Serving loads it;
3. `zoo serve` serves it, and gRPC Predict and REST :predict give those same answers.

The export and the server are shared: `export_tiny_run` exports a run once (the family's own
tests may call it for the same directory), and the class-scoped `served` fixture is the
running server, for a family's own checks of what only its signatures do over the wire: one
server per test process (`SharedServer`, the session fixture `zoo_server`), every family's
export added to it as a model of its own.

"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.helpers import subprocess_env

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    before = set(sys.modules)  # importing TensorFlow (TF 2.21) loads parts of Keras itself
    for line in sys.stdin:  # one export per line: its answers, written to `out_file`
        path, signature, request_file, out_file = json.loads(line)
        with open(request_file, "rb") as f:
            names = json.loads(f.readline())
            protos = [tensor_pb2.TensorProto.FromString(bytes.fromhex(line.strip().decode()))
                      for line in f]
        inputs = {n: tf.make_ndarray(p) for n, p in zip(names, protos)}
        loaded = tf.saved_model.load(path)
        eager = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        # the way stock TF Serving runs it: the graph and its restore op in a TF1 session
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
            sig = meta.signature_def[signature]
            fetched = session.run(
                {k: v.name for k, v in sig.outputs.items()},
                {sig.inputs[k].name: v for k, v in inputs.items()},
            )
        # since TensorFlow's import, over every export this process has loaded
        keras_loaded = sorted(m for m in set(sys.modules) - before if m.split(".")[0] == "keras")
        ours = sorted(m for m in ("zoo", "training", "tfzoo") if m in sys.modules)
        out = {"imported": ours + keras_loaded}
        out["eager"] = {k: tf.make_tensor_proto(v.numpy()).SerializeToString().hex()
                        for k, v in eager.items()}
        out["session"] = {k: tf.make_tensor_proto(v).SerializeToString().hex()
                          for k, v in fetched.items()}
        with open(out_file, "w") as f:
            json.dump(out, f)
        print("done", flush=True)
    """
)


class FreshLoader:
    """A process of its own that imports TensorFlow and nothing of this repository (nor any
    Keras module beyond those `import tensorflow` loads), and loads each export it is sent in
    turn: one per test process (`FreshLoader.shared()`), so that TensorFlow is imported once
    rather than once per export. What it reports as imported counts every export so far."""

    _shared: FreshLoader | None = None

    def __init__(self):
        import tempfile

        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FRESH_PROCESS],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, env=subprocess_env(), cwd="/",
        )  # fmt: skip

    @classmethod
    def shared(cls) -> FreshLoader:
        """This test process's loader, started on first use (and again if it died)."""
        if cls._shared is None or cls._shared.proc.poll() is not None:
            import atexit

            cls._shared = cls()
            atexit.register(cls._shared.proc.kill)
        return cls._shared

    def answer(self, request: list[str], timeout: float = 300) -> None:
        """Send one [path, signature, request file, out file]; returns once it is written."""
        import select

        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "done":
            self.proc.kill()
            self.stderr.seek(0)
            raise AssertionError(
                f"the fresh loader failed on {request}:\n{self.stderr.read()[-3000:]}"
            )


def assert_same_outputs(got: dict[str, Any], expected: dict[str, Any], atol: float, where: str):
    """Equal keys; strings and integers equal, floats within `atol`."""
    assert sorted(got) == sorted(expected), where
    for key, want in expected.items():
        a, b = np.asarray(got[key]), np.asarray(want)
        assert a.shape == b.shape, f"{where}/{key}: shape {a.shape} != {b.shape}"
        if b.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, atol=atol, rtol=0, err_msg=f"{where}/{key}")
        else:
            assert a.tolist() == b.tolist(), f"{where}/{key}"


def train_tiny(family: str, data_dir: Path | str, run_dir: Path, **kwargs: Any):
    """Train `family`'s tiny preset in-process: (run dir, metrics)."""
    from training import train

    kwargs.setdefault("verbose", 0)
    metrics = train.run(family, "tiny", run_dir, str(data_dir), **kwargs)
    return run_dir, metrics


#: the export module each `export_tiny_run` version directory was saved from, in this process
_SAVED_FROM: dict[Path, Any] = {}


def export_tiny_run(run_dir: Path, family: str) -> Path:
    """`<base>/1`: `run_dir` exported once (later calls reuse it) as `zoo export` exports it,
    `training.export.run`'s two steps in this process, keeping the module it saved for
    `in_process_answers` (the CLI `zoo export` itself: tests/training/test_cifar_convnet.py)."""
    from training import export

    base = run_dir.parent / "e2e_models" / family
    version = base / "1"
    if not (version / "saved_model.pb").is_file():
        module = export.export_module(run_dir)
        assert export.write_saved_model(module, base, family, version=1) == version
        _SAVED_FROM[version] = module
    return version


class SharedServer:
    """One `zoo serve` for a test process's end-to-end tests that only read from it (the
    session fixture `zoo_server`): it starts with no model, and `serve` adds each export
    with a gRPC HandleReloadConfigRequest listing every model added so far, as a client of
    TF Serving's ModelService would; the reply comes once the new model has loaded."""

    def __init__(self, server, models: dict[str, str] | None = None):
        self.server = server
        self.models = models or {}

    @classmethod
    def start(cls, root: Path) -> SharedServer:
        from tests.server_process import start_server

        config = root / "models.config"
        config.write_text("model_config_list {}\n")
        return cls(start_server(f"--model_config_file={config}", entry=("-m", "tfzoo", "serve")))

    def serve(self, name: str, base_path: Path):
        """The running server (a `tests.server_process.Server`), serving the versions under
        `base_path` as model `name`. A name served from another base path before (another
        run of the family) is taken out of the config first, then added back with this one:
        its versions are numbered alike, and a reload keeps a loaded version it still lists."""
        assert self.server.proc.poll() is None, self.server.log()
        if self.models.get(name) == str(base_path):
            return self.server
        if self.models.pop(name, None) is not None:
            self._reload()
        self.models[name] = str(base_path)
        self._reload()
        return self.server

    def _reload(self) -> None:
        """HandleReloadConfigRequest with `models`; returns once the new ones have loaded."""
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        request = model_management_pb2.ReloadConfigRequest()
        request.config.model_config_list.SetInParent()  # a list, if an empty one
        for model, path in self.models.items():
            request.config.model_config_list.config.add(
                name=model, base_path=path, model_platform="tensorflow"
            )
        with self.server.channel() as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            reply = stub.HandleReloadConfigRequest(request, timeout=300)
        assert reply.status.error_code == 0, f"{reply.status.error_message}\n{self.server.log()}"

    def stop(self) -> int:
        return self.server.stop()


def assert_known_rows_kept(
    parent_dir: Path, child_dir: Path, grown: dict[str, str]
) -> tuple[dict, dict]:
    """A fine-tuning run (`child_dir`, at learning rate 0) against its parent: every known
    vocabulary entry keeps its id, each layer in `grown` (layer name -> the asset it grows
    with: a list of entries, or their count) keeps its known rows/columns bit-identical,
    and every other weight is bit-identical, except in the layers the recipe re-initialised
    (not compared). Returns (parent assets, child assets)."""
    from training.export import load_trained
    from training.recipe import get_recipe

    parent, parent_info = load_trained(parent_dir)
    child, child_info = load_trained(child_dir)
    recipe = get_recipe(child_info["model"])
    fresh = recipe.reinitialized_layers(
        child,
        child_info["config"],
        parent_info["config"],
        child_info["assets"],
        parent_info["assets"],
    )
    old, new = parent_info["assets"], child_info["assets"]
    sizes = {k: v if isinstance(v, int) else len(v) for k, v in new.items() if k in grown.values()}
    for key in set(grown.values()):
        if not isinstance(new[key], int):
            assert new[key][: len(old[key])] == old[key], key  # known entries keep their ids
    for before, after in zip(parent.layers, child.layers, strict=True):
        if after.name in fresh:
            continue
        for a, b in zip(before.weights, after.weights, strict=True):
            a, b = a.numpy(), b.numpy()
            if a.shape != b.shape:  # grown: the known entries' slice, then fresh rows
                assert after.name in grown, after.name
                assert sizes[grown[after.name]] in b.shape, (after.name, b.shape)
                b = b[tuple(slice(0, n) for n in a.shape)]
            assert np.array_equal(a, b), after.name
    return old, new


def in_process_answers(version_dir: Path, signature: str, inputs: dict[str, Any]) -> dict:
    """What the export module that `export_tiny_run` saved as `version_dir` answers in this
    process, running the Keras model: its signature's function, traced again here (the
    save's trace is keyed to the save context), but on the module already built."""
    import tensorflow as tf

    function = getattr(_SAVED_FROM[version_dir], signature).get_concrete_function()
    out = function(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def fresh_process_answers(version_dir: Path, signature: str, inputs: dict, tmp: Path) -> dict:
    """Answers of the SavedModel loaded in a process of its own with TensorFlow only
    (`FreshLoader`)."""
    import tensorflow as tf

    request = tmp / "request.txt"
    with request.open("wb") as f:
        f.write(json.dumps(list(inputs)).encode() + b"\n")
        for value in inputs.values():
            f.write(tf.make_tensor_proto(value).SerializeToString().hex().encode() + b"\n")
    out_file = tmp / "answers.json"
    FreshLoader.shared().answer([str(version_dir), signature, str(request), str(out_file)])
    out = json.loads(out_file.read_text())
    from tensorflow.core.framework import tensor_pb2

    def parse(protos: dict) -> dict:
        return {
            k: tf.make_ndarray(tensor_pb2.TensorProto.FromString(bytes.fromhex(v)))
            for k, v in protos.items()
        }

    return {
        "imported": out["imported"],
        "eager": parse(out["eager"]),
        "session": parse(out["session"]),
    }


def grpc_answers(server, model: str, signature: str, inputs: dict[str, Any]) -> dict:
    """A gRPC Predict of `signature` on the served `model`: {output name: array}."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with server.channel() as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 120)
    return {k: tf.make_ndarray(v) for k, v in reply.outputs.items()}


def rest_instances(inputs: dict[str, Any]) -> list:
    """TF Serving's row format for `inputs`: bytes as {"b64": ...}; a lone input unnamed."""

    def encode(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"b64": base64.b64encode(value).decode()}
        if isinstance(value, list):
            return [encode(v) for v in value]
        return value

    columns = {k: np.asarray(v, dtype=object).tolist() for k, v in inputs.items()}
    rows = len(next(iter(columns.values())))
    if len(columns) == 1:
        (values,) = columns.values()
        return [encode(v) for v in values]
    return [{k: encode(v[i]) for k, v in columns.items()} for i in range(rows)]


def rest_answers(payload: dict, outputs: list[str]) -> dict[str, np.ndarray]:
    """The REST row-format `predictions` turned back into columns (strings as bytes)."""
    predictions = payload["predictions"]

    def decode(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    if len(outputs) == 1 and not isinstance(predictions[0], dict):
        return {outputs[0]: np.array([decode(p) for p in predictions], dtype=object)}
    return {k: np.array([decode(p[k]) for p in predictions], dtype=object) for k in outputs}


def png_of_side(side: int) -> bytes:
    """A real one-colour greyscale PNG of side x side pixels (a few KB), deflated row by row."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    deflate = zlib.compressobj(9)
    row = b"\x00" * (1 + side)
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def oversize_inputs(signature_def, declared) -> dict[str, Any]:
    """REST columnar inputs for a signature that cost more than the server's default limits
    allow, built from its request-cost declaration (serving.cost): 2,000 rows of 600 bytes of
    text or 300 tokens, or one 12,000 x 12,000 image; count inputs at 0 (the defaults)."""
    from tensorflow.core.framework import types_pb2

    inputs: dict[str, Any] = {}
    for name, info in signature_def.inputs.items():
        spec = declared.inputs.get(name)
        rank = len(info.tensor_shape.dim)
        if spec is not None and spec.kind == "text":
            row = " ".join(["ab"] * 200)
            inputs[name] = [row] * 2000 if rank == 1 else [["ab"] * 300] * 2000
        elif spec is not None and spec.kind == "tokens":
            token = "ab" if info.dtype == types_pb2.DT_STRING else 1
            inputs[name] = [[token] * 300] * 2000
        elif spec is not None and spec.kind == "image":
            inputs[name] = [{"b64": base64.b64encode(png_of_side(12000)).decode()}]
        else:
            inputs[name] = 0 if rank == 0 else [0]
    return inputs


class FamilyEndToEnd:
    """Inherited end-to-end tests for one family.

    The family's test module provides two fixtures, shared with its own tests:
    `tiny_run` -> (run dir, metrics) of its tiny preset trained on real data (`train_tiny`),
    and `request_inputs` -> {input name: batch} for `signature`.

    The subclass may add tests of its own that use the class fixtures `exported`, `expected`
    and `served`. Inside the class, `exported` is this class-scoped fixture, so a family's
    module-scoped fixture that needs the export calls `export_tiny_run` (same directory)
    instead of requesting `exported`.

    Attributes:
        family: the registry name.
        signature: the signature the checks call.
        loss_drop: the last epoch's loss must be below `loss_drop` x the first one's.
        atol: tolerance for float outputs between Keras, the SavedModel and the server.
    """

    family: ClassVar[str]
    signature: ClassVar[str] = "serving_default"
    loss_drop: ClassVar[float] = 1.0
    atol: ClassVar[float] = 1e-5

    @pytest.fixture(scope="class")
    def exported(self, tiny_run) -> Path:
        """`<base>/1`: the tiny run exported by `zoo export`."""
        return export_tiny_run(tiny_run[0], self.family)

    @pytest.fixture(scope="class")
    def expected(self, exported, request_inputs) -> dict[str, np.ndarray]:
        """The export module's answers, computed in this process with the Keras model."""
        return in_process_answers(exported, self.signature, request_inputs)

    @pytest.fixture(scope="class")
    def served(self, exported, zoo_server):
        """`zoo serve` serving the export as model `family` (a `tests.server_process.Server`):
        this test process's one server (`zoo_server`), which the other families share."""
        return zoo_server.serve(self.family, exported.parent)

    def test_tiny_trains_and_loss_falls(self, tiny_run):
        _, metrics = tiny_run
        losses = [epoch["loss"] for epoch in metrics["history"]]
        assert len(losses) >= 2 and np.isfinite(losses).all(), losses
        assert losses[-1] < losses[0] * self.loss_drop, losses

    def test_export_answers_as_keras_in_a_fresh_process(
        self, exported, expected, request_inputs, tmp_path
    ):
        from serving.layout import WARMUP_PATH

        assert (exported / WARMUP_PATH).is_file()
        out = fresh_process_answers(exported, self.signature, request_inputs, tmp_path)
        assert out["imported"] == []
        assert_same_outputs(out["eager"], expected, self.atol, "tf.saved_model.load")
        assert_same_outputs(out["session"], expected, self.atol, "TF1 session")

    def test_declares_request_costs_and_oversize_is_refused(self, exported, served):
        """Every signature declares its request costs; what costs more than the server's
        default limits is refused (400 naming the limit) before the model runs."""
        import re

        from tensorflow.core.framework import types_pb2
        from tensorflow.python.saved_model import loader_impl

        from serving.cost import read_costs

        costs = read_costs(exported)
        meta = loader_impl.parse_saved_model(str(exported)).meta_graphs[0]
        signatures = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
        assert sorted(costs) == sorted(signatures)
        for name, sig in signatures.items():
            assert set(costs[name].inputs) <= set(sig.inputs), name
            for input_name, info in sig.inputs.items():
                if info.dtype == types_pb2.DT_STRING:  # every string input says what it is
                    assert costs[name].inputs[input_name].kind in ("text", "tokens", "image")
        inputs = oversize_inputs(signatures[self.signature], costs[self.signature])
        body = {"signature_name": self.signature, "inputs": inputs}
        status, payload = served.http("POST", f"/v1/models/{self.family}:predict", body)
        assert status == 400, payload
        assert re.search(r"over the server's limit of \d+ \(--max_\w+\)", payload["error"])

    def test_served_over_grpc_and_rest(self, served, expected, request_inputs):
        grpc_out = grpc_answers(served, self.family, self.signature, request_inputs)
        assert_same_outputs(grpc_out, expected, self.atol, "gRPC")

        body = {"signature_name": self.signature, "instances": rest_instances(request_inputs)}
        status, payload = served.http("POST", f"/v1/models/{self.family}:predict", body)
        assert status == 200, payload
        rest_out = rest_answers(payload, list(expected))
        for key, want in expected.items():
            got = rest_out[key]
            assert got.shape == want.shape, f"REST/{key}: shape {got.shape} != {want.shape}"
            if want.dtype.kind in "fc":
                np.testing.assert_allclose(got.astype(float), want, atol=self.atol, rtol=0)
            else:
                assert got.tolist() == want.tolist(), f"REST/{key}"


@dataclass(frozen=True)
class PreparedCase:
    """A family's tiny run on prepared arrays (`tests/training/test_prepared_training.py`
    finds it as `PREPARED_CASE` in `tests/training/test_<family>.py`): `data(tmp, shared)`
    -> its --data-dir, `--set` overrides for `zoo prepare` and `zoo train --data`, and a
    request for `signature` (or a function of the shared data folder that makes one)."""

    data: Callable[[Path, Path], Path]
    request: dict[str, Any] | Callable[[Path], dict[str, Any]]
    prepare: tuple[str, ...] = ()
    train: tuple[str, ...] = ()
    signature: str = "serving_default"
    atol: float = 1e-5


def need(path: Path) -> Path:
    """`path` in the shared data, or the test skips (the data is absent on this machine)."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path
