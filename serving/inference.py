"""Predict / Classify / Regress / MultiInference on one servable (protocol-neutral).

The semantics follow TF Serving's predict_util / classifier / regressor: exact input names,
output_filter, `inputs` -> `classes`/`scores` or `outputs` for classify/regress. On top of TF
Serving, every failure names the signature's expected inputs, dtypes and shapes.
"""

from __future__ import annotations

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, inference_pb2, input_pb2, regression_pb2

from serving import cost
from serving.errors import ServingError, invalid
from serving.servable import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    Servable,
    Signature,
    check_dtype,
)


def _set_text(names) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def validate_inputs(sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exact input names (TF Serving's message) and declared dtypes."""
    expected = set(sig.proto.inputs)
    sent = set(inputs)
    if sent != expected:
        raise invalid(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({_set_text(sent)}) != len({_set_text(expected)}). "
            f"Sent extra: {_set_text(sent - expected)}. "
            f"Missing but required: {_set_text(expected - sent)}. {sig.spec_text()}"
        )
    return {name: check_dtype(sig, name, np.asarray(a)) for name, a in inputs.items()}


def output_names(sig: Signature, output_filter) -> tuple[str, ...]:
    """All outputs (sorted) or the validated output_filter."""
    if not output_filter:
        return tuple(sorted(sig.proto.outputs))
    seen = []
    for name in output_filter:
        if name not in sig.proto.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {name} Outputs expected to be "
                f"in the set {_set_text(sig.proto.outputs)}."
            )
        if name in seen:
            raise invalid(f"duplicate output tensor alias: {name}")
        seen.append(name)
    return tuple(seen)


def prepare(
    servable: Servable, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()
) -> tuple[Signature, dict[str, np.ndarray], tuple[str, ...]]:
    """Everything Predict checks before it runs: the signature, its inputs (names, dtypes,
    cost) and the outputs asked for."""
    sig = servable.signature(signature_name)
    inputs = validate_inputs(sig, inputs)
    outputs = output_names(sig, output_filter)
    cost.check(inputs, servable.costs.get(sig.name))
    return sig, inputs, outputs


def predict(
    servable: Servable, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()
) -> tuple[Signature, dict[str, np.ndarray]]:
    """Run any signature on named input arrays."""
    sig, inputs, outputs = prepare(servable, signature_name, inputs, output_filter)
    return sig, servable.run(sig, inputs, outputs)


def _example_signature(servable: Servable, name: str, method: str) -> Signature:
    name = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(name)
    if sig is None:
        raise invalid(f"No signature was found with the name: {name}")
    inputs = sig.proto.inputs
    # TF2/Keras exports always say .../predict; accept them when they take serialized Examples.
    example_like = (
        sig.method_name == PREDICT_METHOD
        and list(inputs) == ["inputs"]
        and inputs["inputs"].dtype == types_pb2.DT_STRING
    )
    if sig.method_name != method and not example_like:
        raise invalid(
            f"Expected {method.split('/')[-1]} signature method_name to be {method}. "
            f"Was: {sig.method_name}"
        )
    if "inputs" not in inputs or len(inputs) != 1:
        raise invalid(f"Signature {name} must have exactly one input named 'inputs'")
    return sig


def serialized_examples(input_proto: input_pb2.Input) -> np.ndarray:
    """Serialized tf.Examples of an Input (context merged into each example)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = list(input_proto.example_list.examples)
    elif kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context
        examples = []
        for ex in input_proto.example_list_with_context.examples:
            merged = type(ex)()
            merged.CopyFrom(ctx)
            merged.MergeFrom(ex)
            examples.append(merged)
    else:
        examples = []
    if not examples:
        raise invalid("Invalid argument: Input is empty.")
    return np.array([e.SerializeToString() for e in examples], dtype=object)


def count_examples(input_proto: input_pb2.Input) -> int:
    """How many tf.Examples an Input holds (TF Serving's NumInputExamples)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return len(input_proto.example_list.examples)
    if kind == "example_list_with_context":
        return len(input_proto.example_list_with_context.examples)
    return 0


def _as_rows(array: np.ndarray, name: str, n: int) -> np.ndarray:
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[0] != n:
        raise invalid(
            f"Expected output Tensor '{name}' of shape [batch_size, num_classes] with batch_size "
            f"{n} but got {list(array.shape)}"
        )
    return array


def classify(
    servable: Servable, request: classification_pb2.ClassificationRequest
) -> tuple[Signature, classification_pb2.ClassificationResult]:
    """TF Serving's Classify: Examples -> (label, score) lists."""
    sig = _example_signature(servable, request.model_spec.signature_name, CLASSIFY_METHOD)
    examples = serialized_examples(request.input)
    wanted = tuple(n for n in ("classes", "scores") if n in sig.proto.outputs)
    if not wanted:
        raise invalid(f"Classification signature {sig.name} has neither 'classes' nor 'scores'")
    out = servable.run(sig, {"inputs": examples}, wanted)
    n = len(examples)
    classes = _as_rows(out["classes"], "classes", n) if "classes" in out else None
    scores = _as_rows(out["scores"], "scores", n) if "scores" in out else None
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise invalid(
            f"Tensors class and score should match in shape: {list(classes.shape)} vs "
            f"{list(scores.shape)}"
        )
    result = classification_pb2.ClassificationResult()
    k = (classes if classes is not None else scores).shape[1]
    for i in range(n):
        row = result.classifications.add()
        for j in range(k):
            c = row.classes.add()
            if classes is not None:
                label = classes[i, j]
                c.label = (
                    label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                )
            if scores is not None:
                c.score = float(scores[i, j])
    return sig, result


def regress(
    servable: Servable, request: regression_pb2.RegressionRequest
) -> tuple[Signature, regression_pb2.RegressionResult]:
    """TF Serving's Regress: Examples -> one float each."""
    sig = _example_signature(servable, request.model_spec.signature_name, REGRESS_METHOD)
    if "outputs" not in sig.proto.outputs:
        raise invalid(f"Regression signature {sig.name} has no output named 'outputs'")
    examples = serialized_examples(request.input)
    values = servable.run(sig, {"inputs": examples}, ("outputs",))["outputs"]
    values = _as_rows(values, "outputs", len(examples))
    if values.shape[1] != 1:
        raise invalid(
            f"Expected output Tensor shape to be [batch_size] or [batch_size, 1] but got {list(values.shape)}"
        )
    result = regression_pb2.RegressionResult()
    for v in values[:, 0]:
        result.regressions.add(value=float(v))
    return sig, result


def multi_inference(
    servable: Servable, request: inference_pb2.MultiInferenceRequest
) -> inference_pb2.MultiInferenceResponse:
    """Several classify/regress tasks over the same Examples of one model version."""
    if not request.tasks:
        raise invalid("Tasks must be non-empty")
    response = inference_pb2.MultiInferenceResponse()
    seen = set()
    for task in request.tasks:
        spec = task.model_spec
        if spec.name != request.tasks[0].model_spec.name:
            raise invalid(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        sig_name = spec.signature_name or DEFAULT_SIGNATURE
        if sig_name in seen:
            raise invalid(f"Duplicate evaluation of signature: {sig_name}")
        seen.add(sig_name)
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            req = classification_pb2.ClassificationRequest(model_spec=spec, input=request.input)
            sig, res = classify(servable, req)
            result.classification_result.CopyFrom(res)
        elif task.method_name == REGRESS_METHOD:
            req = regression_pb2.RegressionRequest(model_spec=spec, input=request.input)
            sig, res = regress(servable, req)
            result.regression_result.CopyFrom(res)
        else:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Unsupported signature method_name: {task.method_name}",
            )
        result.model_spec.name = spec.name
        result.model_spec.version.value = servable.version
        result.model_spec.signature_name = sig.name
    return response
