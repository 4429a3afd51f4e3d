"""Provenance from the framework: run.json's `training` record (backend, devices, dtype
policy, seconds, command per start or resume) as TensorFlow reports it on this machine,
and the card's "trained on" line built from that record alone."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from catalogue.card import trained_on
from tests.helpers import small_image_folder, zoo_in_process
from training import provenance

NAME = "cifar_convnet/provenance"
TRAIN = ["train", "cifar_convnet", "--preset", "tiny", "--steps-per-epoch", "2", "--verbose", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """A tiny cifar_convnet run: one epoch, then resumed for a second with another command
    line, then published, each by the `zoo` command's `main` in this process (where the
    tests compare with what TensorFlow reports). Returns (run.json after the first start,
    after the resume, the card, the two commands)."""
    root = tmp_path_factory.mktemp("provenance")
    data = small_image_folder(shared_data / "cifar10", root / "data", per_class=8)
    run = root / "run"
    first = [*TRAIN, "--epochs", "1", "--data-dir", str(data), "--model-dir", str(run)]
    zoo_in_process(*first)
    started = json.loads((run / "run.json").read_text())
    second = [*TRAIN, "--epochs", "2", "--data-dir", str(data), "--model-dir", str(run)]
    zoo_in_process(*second)
    resumed = json.loads((run / "run.json").read_text())
    zoo_in_process("publish", str(run), NAME, "--out", str(root / "pub"))
    (card,) = (root / "pub").glob("*.md")
    commands = ("zoo " + " ".join(first), "zoo " + " ".join(second))
    return started, resumed, card.read_text(), commands


def _tensorflow_devices() -> Counter:
    import tensorflow as tf

    return Counter(d.device_type for d in tf.config.list_logical_devices())


def test_run_json_records_what_tensorflow_reports(trained):
    started, _, _, (command, _) = trained
    record = started["training"]
    (segment,) = record["segments"]
    environment = segment["environment"]
    assert environment["backend"] == "tensorflow"
    assert environment["precision_policy"] == "float32"  # the tiny preset's model
    reported = Counter({d["kind"]: 0 for d in environment["devices"]})
    for device in environment["devices"]:
        reported[device["kind"]] += device["count"]
    assert reported == _tensorflow_devices()  # kinds and counts as TF lists them here
    assert reported["CPU"] >= 1
    assert set(environment["framework_versions"]) == {"keras", "tensorflow"}
    assert segment["epochs"] == [0, 1] and segment["replicas"] >= 1
    assert segment["seconds"] > 0 and record["seconds"] == segment["seconds"]
    assert segment["command"] == command == started["command"]


def test_resume_adds_a_segment_and_sums_the_seconds(trained):
    started, resumed, _, (first, second) = trained
    segments = resumed["training"]["segments"]
    assert segments[0] == started["training"]["segments"][0]  # the first start's, kept
    assert [s["epochs"] for s in segments] == [[0, 1], [1, 2]]
    assert [s["command"] for s in segments] == [first, second]
    assert resumed["command"] == first  # the run's command stays the one that started it
    assert segments[1]["seconds"] > 0
    assert resumed["training"]["seconds"] == pytest.approx(sum(s["seconds"] for s in segments))
    assert segments[1]["environment"] == segments[0]["environment"]


def test_card_says_what_the_run_recorded(trained):
    _, resumed, card, _ = trained
    (row,) = [line for line in card.splitlines() if line.startswith("| trained on |")]
    assert row == f"| trained on | {trained_on(resumed['training'])} |"
    assert "Keras backend tensorflow, dtype policy float32" in row
    assert "in 2 segments" in row
    if not _tensorflow_devices()["GPU"]:
        assert f"| trained on | {_tensorflow_devices()['CPU']} x CPU, " in row
        assert "GPU" not in card and "NVIDIA" not in card and "H200" not in card


# ------------------------------------------------------------ the record and the card line


def _environment(kind: str, name: str | None, policy: str = "float32") -> dict:
    return {
        "backend": "jax",
        "devices": [{"kind": kind, "name": name, "count": 1}],
        "precision_policy": policy,
        "framework_versions": {"keras": "3", "jax": "0"},
    }


def _record(environment: dict | None, epochs: int = 3, seconds: float = 41.6) -> dict:
    """A `training` record of one segment, as `zoo train` keeps it."""
    record = provenance.start_segment(None, command="zoo train ...", first_epoch=0,
                                      environment=environment)  # fmt: skip
    provenance.end_epoch(record, epochs, seconds)
    return record


def test_a_run_without_a_recorded_environment_names_no_machine():
    record = _record(None)
    (segment,) = record["segments"]
    assert segment["environment"] is None and segment["epochs"] == [0, 3]
    assert record["seconds"] == pytest.approx(41.6)
    assert trained_on(record) is None  # the card leaves the line out


def test_a_jax_run_is_described_by_what_jax_reported():
    environment = _environment("GPU", "NVIDIA H100 80GB HBM3", "mixed_bfloat16")
    assert trained_on(_record(environment)) == (
        "1 x GPU (NVIDIA H100 80GB HBM3), Keras backend jax, dtype policy mixed_bfloat16; "
        "42 s of training"
    )
    cpu = _record(_environment("CPU", "cpu"))
    assert trained_on(cpu) == "1 x CPU, Keras backend jax, dtype policy float32; 42 s of training"


def test_segments_on_two_machines_are_both_named_and_unrecorded_epochs_hide_the_line():
    record = provenance.start_segment(
        None, command="a", first_epoch=0, environment=_environment("GPU", "G")
    )
    provenance.end_epoch(record, 2, 10.0)
    record = provenance.start_segment(
        record, command="b", first_epoch=2, environment=_environment("CPU", "cpu")
    )
    provenance.end_epoch(record, 3, 5.0)
    assert record["seconds"] == 15.0
    assert trained_on(record) == (
        "1 x GPU (G), Keras backend jax, dtype policy float32; then 1 x CPU, Keras backend "
        "jax, dtype policy float32; 15 s of training in 2 segments"
    )
    # a run started before the record existed, resumed at epoch 4: epochs 0-4 are unknown
    legacy = provenance.start_segment(
        None, command="c", first_epoch=4, environment=_environment("CPU", "cpu")
    )
    assert [s["epochs"] for s in legacy["segments"]] == [[0, 4], [4, 4]]
    assert legacy["segments"][0]["environment"] is None and legacy["seconds"] is None
    assert trained_on(legacy) is None
    assert trained_on(None) is None and trained_on({"segments": []}) is None
