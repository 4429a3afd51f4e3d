"""`make serve` on a fresh clone: the shipped catalogue (`pretrained/`) is installed without
training and served, and every shipped family answers a real request correctly over REST.

Each family in the catalogue needs a check below (a real input and what a trained model
must answer); a family published without one fails `test_every_shipped_family_is_checked`.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, subprocess_env
from tests.server_process import start_server
from training.bootstrap import serving_names
from training.pretrained import Manifest
from training.pretrained.manifest import REPO_PRETRAINED

CATALOGUE = Manifest(REPO_PRETRAINED)
SERVED = serving_names(CATALOGUE.names())  # artifact name -> served model name


def _predict(server, model: str, instances: list) -> list:
    status, body = server.http("POST", f"/v1/models/{model}:predict", {"instances": instances})
    assert status == 200, body
    return body["predictions"]


def check_cifar_convnet(server, model: str, data: Path) -> None:
    """Five test images of each of three classes: most come back as their class."""
    right = total = 0
    for label in ("cat", "ship", "truck"):
        for path in sorted((data / "cifar10" / "test" / label).iterdir())[:5]:
            image = {"b64": base64.b64encode(path.read_bytes()).decode()}
            (answer,) = _predict(server, model, [image])
            right += answer["classes"][0] == label
            total += 1
    assert right >= 0.6 * total, f"{right}/{total} right"


def check_googlenet(server, model: str, data: Path) -> None:
    """Two val images of each Imagenette class, sent as JPEG bytes: most come back as their
    class's readable name."""
    from training.recipes.googlenet import WORDNET_NAMES

    right = total = 0
    for wnid, label in sorted(WORDNET_NAMES.items()):
        for path in sorted((data / "imagenette" / "val" / wnid).iterdir())[:2]:
            image = {"b64": base64.b64encode(path.read_bytes()).decode()}
            (answer,) = _predict(server, model, [image])
            right += answer["classes"][0] == label
            total += 1
    assert right >= 0.7 * total, f"{right}/{total} right"


def check_tagger(server, model: str, data: Path) -> None:
    """A plain sentence gets its universal POS tags."""
    (answer,) = _predict(server, model, ["The cat sat on the mat ."])
    assert answer["tokens"] == ["The", "cat", "sat", "on", "the", "mat", "."]
    assert answer["tags"] == ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]


def check_seq2seq(server, model: str, data: Path) -> None:
    """An English sentence in Multi30k's style comes back in German."""
    (answer,) = _predict(server, model, ["A man is riding a bicycle ."])
    words = set(re.findall(r"\w+", answer.lower()))
    assert {"mann", "fahrrad"} <= words, answer


def check_gpt(server, model: str, data: Path) -> None:
    """A play's speaker prompt continues in English words, at the preset's length."""
    (answer,) = _predict(server, model, ["ROMEO:\n"])
    assert len(answer) == 200, answer  # max_new_tokens characters
    words = re.findall(r"[a-z]+", answer.lower())
    common = {"the", "and", "i", "to", "of", "my", "you", "a", "that", "is", "not", "with"}
    assert sum(word in common for word in words) >= 5, answer


def check_captioner(server, model: str, data: Path) -> None:
    """Four Flickr8k validation photos, sent as JPEG bytes: each gets an English caption,
    and most share a content word with one of their five reference captions."""
    import csv

    references: dict[str, list[str]] = {}
    with open(data / "flickr8k" / "captions_val.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            references.setdefault(row["image"], []).append(row["caption"].lower())
    stop = {"a", "an", "the", "is", "are", "of", "in", "on", "and", "with", "to", "at", "its"}
    hits = 0
    images = sorted(references)[:4]
    for image in images:
        path = data / "flickr8k" / "images" / image
        (caption,) = _predict(
            server, model, [{"b64": base64.b64encode(path.read_bytes()).decode()}]
        )
        words = set(re.findall(r"[a-z]+", caption.lower())) - stop
        assert len(caption.split()) >= 3, caption
        known = set(re.findall(r"[a-z]+", " ".join(references[image]))) - stop
        hits += bool(words & known)
    assert hits >= 3, f"{hits}/{len(images)} captions share a content word with the references"


CHECKS: dict[str, Callable] = {
    "captioner": check_captioner,
    "cifar_convnet": check_cifar_convnet,
    "googlenet": check_googlenet,
    "tagger": check_tagger,
    "seq2seq": check_seq2seq,
    "gpt": check_gpt,
}


def test_every_shipped_family_is_checked():
    assert {name.split("/")[0] for name in SERVED} <= set(CHECKS)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`make serve`'s two steps, as the Makefile runs them, into a fresh models folder."""
    if not SERVED:
        pytest.skip("the catalogue is empty")
    root = tmp_path_factory.mktemp("make_serve")
    models = root / "models"
    command = [sys.executable, "-m", "training.bootstrap", "--models", str(models)]
    env = subprocess_env(TFZOO_CACHE=str(root / "cache"), TFZOO_OFFLINE="1")
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "train" not in proc.stdout.lower()
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == sorted(SERVED.values())
    server = start_server(f"--model_config_file={models / 'models.config'}")
    yield server
    assert server.stop() == 0, server.log()


@pytest.mark.parametrize("name", sorted(SERVED))
def test_shipped_model_answers_a_real_request(served, name, shared_data):
    family = name.split("/")[0]
    CHECKS[family](served, SERVED[name], shared_data)
