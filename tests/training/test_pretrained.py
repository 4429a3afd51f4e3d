"""Pretrained artifacts end to end, over real HTTP on loopback: publish, pull, cache, mirrors,
offline use, concurrent pulls, fine-tuning from an artifact, and a fast, quiet `zoo list`.

The artifact is made here from a tiny cifar_convnet run (3 training steps on a folder of
CIFAR-10 images); the tests that need it skip when ../shared/data is absent.
"""

from __future__ import annotations

import http.server
import json
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import catalogue
from catalogue import Manifest, PublishError, PullError, Release, Source, prebuilt
from catalogue.headline import format_metric
from catalogue.manifest import MANIFEST
from serving.card import CARD_PATH
from tests.helpers import REPO_ROOT, small_image_folder, subprocess_env, zoo, zoo_in_process

NAME = "cifar_convnet/tiny"
#: Start-up lines `zoo` commands must not print on a machine without a GPU.
NOISE = re.compile(r"cuInit|cudart_stub|absl::InitializeLog|cpu_feature_guard|oneDNN")


# ------------------------------------------------------------------ a loopback mirror


class Mirror:
    """An HTTP server on a loopback port over one folder, with a behaviour per URL prefix.

    `/good/F` serves F (honouring Range); `/missing/F` answers 404; `/cut/F` cuts the first
    response of each file after `cut_at` body bytes (Content-Length declared); `/chunked/F`
    does the same with chunked transfer encoding; `/corrupt/F` serves F with one byte
    flipped; `/slow/F` serves F over about `slow_seconds`. It counts accepted connections
    and records every request as (mode, file, Range header).
    """

    def __init__(self, root: Path, cut_at: int = 4000, slow_seconds: float = 1.5):
        self.root, self.cut_at, self.slow_seconds = root, cut_at, slow_seconds
        self.connections = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self._cut_done: set[tuple[str, str]] = set()
        mirror = self

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                mirror.connections += 1
                return super().get_request()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                mirror.serve(self)

            def log_message(self, *args):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, mode: str) -> str:
        """The base URL of one behaviour, e.g. `http://127.0.0.1:PORT/good`."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{mode}"

    def gets(self, mode: str | None = None) -> list[tuple[str, str, str | None]]:
        """The requests recorded, all or of one mode."""
        return [r for r in self.requests if mode is None or r[0] == mode]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        _, mode, name = handler.path.split("/", 2)
        ranged = handler.headers.get("Range")
        self.requests.append((mode, name, ranged))
        path = self.root / name
        if mode == "missing" or not path.is_file():
            handler.send_error(404)
            return
        payload = bytearray(path.read_bytes())
        if mode == "corrupt":
            payload[len(payload) // 2] ^= 0x01
        start = int(ranged.split("=")[1].rstrip("-")) if ranged else 0
        body = bytes(payload[start:])
        cut = mode in ("cut", "chunked") and (mode, name) not in self._cut_done
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        if mode == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if cut:
            self._cut_done.add((mode, name))
            if mode == "chunked":
                handler.wfile.write(f"{len(body):x}\r\n".encode())
            handler.wfile.write(body[: self.cut_at])
            handler.wfile.flush()
            handler.connection.shutdown(2)  # the connection drops mid-body
            return
        if mode == "chunked":
            handler.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        elif mode == "slow":
            pieces = 30
            step = max(1, len(body) // pieces + 1)
            for i in range(0, len(body), step):
                handler.wfile.write(body[i : i + step])
                handler.wfile.flush()
                time.sleep(self.slow_seconds / pieces)
        else:
            handler.wfile.write(body)


# ------------------------------------------------------------------ artifacts


def _fake_saved_model(path: Path) -> Path:
    """A directory shaped like a SavedModel version (the pull machinery never parses it)."""
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(random.Random(0).randbytes(20_000))  # incompressible
    (path / "variables" / "variables.index").write_bytes(bytes(range(256)) * 40)
    return path


@pytest.fixture
def saved_model_artifact(tmp_path) -> tuple[Path, str]:
    source = _fake_saved_model(tmp_path / "src" / "1")
    return tmp_path / "model.tar.gz", catalogue.pack(source, tmp_path / "model.tar.gz")


@pytest.fixture(scope="module")
def published(tmp_path_factory, shared_data):
    """A tiny cifar_convnet run trained and published (float16) with the CLI (its `main`, in
    this process: the tests that need a fresh `zoo` process run their own).

    Returns (published folder with the archive, catalogue folder holding only the manifest
    and the card, so pulls by name must use a mirror, the release, the data folder).
    """
    root = tmp_path_factory.mktemp("published")
    data = small_image_folder(shared_data / "cifar10", root / "data", per_class=8)
    run = root / "run"
    zoo_in_process("train", "cifar_convnet", "--preset", "tiny", "--epochs", "1",
                   "--steps-per-epoch", "3", "--data-dir", str(data), "--model-dir", str(run),
                   "--verbose", "0")  # fmt: skip
    assert json.loads((run / "run.json").read_text())["command"].startswith("zoo train ")
    out = zoo_in_process("publish", str(run), NAME, "--half", "--out", str(root / "pub")).stdout
    assert f"published {NAME}@1" in out
    catalog = root / "catalog"
    catalog.mkdir()
    release = Manifest(root / "pub").resolve(NAME)
    for name in (MANIFEST, release.card):
        (catalog / name).write_bytes((root / "pub" / name).read_bytes())
    return root / "pub", catalog, release, data, run


@pytest.fixture
def mirror(published):
    server = Mirror(published[0])
    yield server
    server.stop()


@pytest.fixture
def env(published, tmp_path, monkeypatch):
    """The catalogue and a fresh cache, for the CLI (returned) and the API (set here)."""
    values = {"TFZOO_PRETRAINED": str(published[1]), "TFZOO_CACHE": str(tmp_path / "cache")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TFZOO_OFFLINE", raising=False)
    monkeypatch.delenv("TFZOO_MIRROR", raising=False)
    return values


# ------------------------------------------------------------------ publish and catalogue


def test_publish_writes_artifact_card_and_manifest(published):
    pub, _, release, _, _ = published
    assert release.weights_dtype == "float16" and release.dataset == "cifar10"
    assert not release.restricted and release.parameters > 1000
    archive = pub / release.file
    assert archive.stat().st_size == release.size
    assert catalogue.sha256_of(archive) == release.sha256
    assert prebuilt.archive_carries_export(archive)  # `zoo pull` installs it: no export
    card = (pub / release.card).read_text()
    for fact in (release.sha256, "zoo train cifar_convnet --preset tiny", "float16",
                 "no formal licence", "Intended use", f"{release.parameters:,}"):  # fmt: skip
        assert fact in card
    # where it trained, as the framework reported it (training.provenance): this CPU
    assert "| trained on | 1 x CPU, Keras backend tensorflow" in card
    assert "GPU" not in card.split("| trained on |")[1].split("\n")[0]
    out = zoo("card", NAME, TFZOO_PRETRAINED=str(pub)).stdout
    assert out == card
    assert not [p for p in pub.iterdir() if p.name.startswith(".")]  # no staging left over


def test_the_card_says_when_a_run_was_published_before_it_ended(tmp_path):
    """A run still training (no metrics.json yet) is published from its newest checkpoint,
    and the card's checkpoint line says how many epochs its command asks for."""
    from catalogue.publish import _checkpoint

    command = "zoo train gpt --preset shakespeare_char --set epochs=40 --model-dir runs/g"
    info = {"config": {"epochs": 40}, "training": {"segments": [{"command": command}]}}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "run.json").write_text(json.dumps(info))
    for epoch in (7, 8):
        (tmp_path / "checkpoints" / f"ckpt-{epoch:04d}.weights.h5").write_bytes(b"")
    path, epoch, note = _checkpoint(tmp_path)
    assert (path.name, epoch) == ("ckpt-0008.weights.h5", 8)
    assert (
        note
        == "the last epoch (8); published before its run ended (its command asks for 40 epochs)"
    )
    info["training"]["segments"].append({"command": command + " --epochs 60"})  # resumed
    (tmp_path / "run.json").write_text(json.dumps(info))
    assert _checkpoint(tmp_path)[2].endswith("(its command asks for 60 epochs)")
    (tmp_path / "metrics.json").write_text("{}")  # the run ended
    assert _checkpoint(tmp_path)[2] == "the last epoch (8)"


def test_an_artifact_published_again_keeps_its_checkpoint_line(tmp_path):
    """An unpacked artifact (one checkpoint, metrics measured on it) published again, as a
    new export of the same weights, says which epoch of its run they are, not "the last"."""
    from catalogue.publish import _checkpoint

    segment = {"command": "zoo train captioner", "epochs": [0, 30]}
    info = {"config": {"checkpoint_monitor": "val_loss"}, "training": {"segments": [segment]}}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "run.json").write_text(json.dumps(info))
    (tmp_path / "checkpoints" / "ckpt-0017.weights.h5").write_bytes(b"")
    (tmp_path / "metrics.json").write_text(json.dumps({"measured_on": "this artifact"}))
    assert _checkpoint(tmp_path)[1:] == (17, "the best epoch by val_loss (epoch 17 of 30)")
    (tmp_path / "metrics.json").write_text("{}")  # a run's own metrics: its last epoch
    assert _checkpoint(tmp_path)[2] == "the last epoch (17)"


def test_one_variant_of_a_family_is_served_under_the_family_name(tmp_path):
    """`zoo publish --as-family` records, in the manifest, which of a family's artifacts
    `make serve` serves as `gpt`; the others stay served (and pullable) as `gpt-<variant>`.
    The choice survives a reload, and naming an artifact the manifest lacks is refused."""
    from catalogue.manifest import Manifest, Release

    manifest = Manifest(tmp_path)
    for name in ("gpt/baby", "gpt/shakespeare_char", "tagger/default"):
        manifest.add(Release(name=name, version=1, file=f"{name.replace('/', '-')}.tar.gz",
                             sha256="0" * 64, size=1, metric={}, dataset="d", licence="l",
                             restricted=False, card="c.md", parameters=1))  # fmt: skip
    assert manifest.serving_names()["gpt/baby"] == "gpt-baby"
    manifest.serve_as_family("gpt/shakespeare_char")
    manifest.save()
    assert Manifest(tmp_path).serving_names() == {
        "gpt/baby": "gpt-baby", "gpt/shakespeare_char": "gpt", "tagger/default": "tagger"
    }  # fmt: skip
    with pytest.raises(catalogue.PullError, match="no published artifact named 'gpt/big'"):
        manifest.serve_as_family("gpt/big")
    manifest.data["served"] = ["gpt/baby"]  # a hand-edited manifest: refused, not a crash
    with pytest.raises(catalogue.PullError, match='"served" must map family names'):
        manifest.serving_names()


def _answers(run: Path, data: Path) -> list[tuple[Path, bool]]:
    """Each test image of the image folder `data`, and whether the run's model classifies it
    right: counted here from the model's own predictions."""
    import numpy as np

    from training import export
    from training.data.images import decode_image

    model, info = export.load_trained(run)
    names = info["assets"]["class_names"]
    images = [(names.index(d.name), p) for d in sorted((data / "test").iterdir())
              for p in sorted(d.iterdir())]  # fmt: skip
    pixels = np.stack([decode_image(p.read_bytes(), 32).numpy() for _, p in images])
    predicted = model(pixels.astype("float32"), training=False).numpy().argmax(-1)
    return [(p, int(k) == label) for (label, p), k in zip(images, predicted, strict=True)]


def _with_right_answers_twice(data: Path, answers, out: Path) -> Path:
    """A copy of the image folder `data` (symlinks) whose test split holds every image the
    model gets right twice: the same model scores strictly higher on it."""
    for link in data.rglob("*"):
        if link.is_symlink():
            copy = out / link.relative_to(data)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.symlink_to(link.resolve())
    for image, right in answers:
        if right:
            (out / image.relative_to(data)).with_name(f"again-{image.name}").symlink_to(
                image.resolve()
            )
    return out


def test_publish_replaces_only_when_the_metric_improves(published, tmp_path):
    """Real evaluations (publish's own, of the staged artifact): on the run's test images,
    then on a folder where the images it gets right count twice, which must improve."""
    _, _, _, data, run = published
    out = tmp_path / "pub"
    answers = _answers(run, data)
    right, total = sum(r for _, r in answers), len(answers)
    assert total == 80 and 0 < right < total, right  # else no folder scores higher
    better = _with_right_answers_twice(data, answers, tmp_path / "better")

    first = catalogue.publish(run, NAME, out=out, data_dir=str(data), log=print)
    assert first.version == 1 and (out / first.file).is_file()
    assert first.metric["value"] == pytest.approx(right / total, abs=1e-6)  # counted here
    before = (out / MANIFEST).read_bytes()
    with pytest.raises(PublishError, match="does not improve"):
        catalogue.publish(run, NAME, out=out, data_dir=str(data), log=print)
    assert (out / MANIFEST).read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, first.file, first.card])
    second = catalogue.publish(run, NAME, out=out, data_dir=str(better), log=print)
    assert second.metric["value"] == pytest.approx(2 * right / (total + right), abs=1e-6)
    assert second.version == 2 and not (out / first.file).exists()  # replaced
    assert [r.version for r in Manifest(out).releases(NAME)] == [1, 2]  # the record stays
    # publishing the same run twice gives the same bytes: artifacts are reproducible (the
    # first publish again, elsewhere: the same name, version, data and so card)
    twice = catalogue.publish(run, NAME, out=tmp_path / "o2", data_dir=str(data))
    assert (twice.version, twice.file) == (first.version, first.file)
    assert twice.sha256 == first.sha256
    with pytest.raises(PublishError, match="trained cifar_convnet"):
        catalogue.publish(run, "gpt/tiny", out=out, data_dir=str(data))


def test_zoo_list_is_fast_quiet_and_never_imports_tensorflow(published):
    """`zoo list` is fast because it imports nothing but the standard library and the
    project's own modules (no TensorFlow, Keras, NumPy or any other installed package):
    checked on the modules it loads, not on a clock (the time is printed, for the log)."""
    code = (
        "import sys, time; before = set(sys.modules); start = time.perf_counter(); "
        "from tfzoo.cli import main; main(['list']); "
        "print('seconds', time.perf_counter() - start); "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print('heavy', sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'})); "
        "own = {'catalogue', 'serving', 'tfzoo', 'training', 'zoo'}; "
        "print('installed', sorted(new - set(sys.stdlib_module_names) - own))"
    )
    env = subprocess_env(TFZOO_PRETRAINED=str(published[0]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, check=True)  # fmt: skip
    assert "heavy []" in proc.stdout
    assert "installed []" in proc.stdout, proc.stdout
    assert "cifar_convnet" in proc.stdout and f"pretrained: {NAME}@1" in proc.stdout
    assert "accuracy" in proc.stdout
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "tfzoo", "list"], capture_output=True,
                         text=True, env=env, cwd=REPO_ROOT, check=True)  # fmt: skip
    print(f"zoo list: {time.perf_counter() - start:.2f} s in a fresh interpreter")
    assert cli.stderr == ""


def test_static_catalogue_matches_the_registry():
    from zoo import catalog, registry

    static = {f.name: f for f in catalog.families()}
    assert sorted(static) == registry.names()
    for name, info in static.items():
        spec = registry.get(name)
        assert (info.task, info.description, info.default_preset) == (
            spec.task, spec.description, spec.default_preset
        )  # fmt: skip
        assert info.presets == tuple(spec.presets)


# ------------------------------------------------------------------ pulls over HTTP


def test_pull_by_name_installs_a_model_that_answers(published, mirror, env, tmp_path):
    import numpy as np
    import tensorflow as tf

    _, _, release, data, _ = published
    base = tmp_path / "models" / "cifar_convnet"
    start = time.perf_counter()
    proc = zoo("pull", f"{NAME}@1", "--to", str(base), "--mirror", mirror.url("good"), **env)
    print(f"zoo pull {NAME} from a loopback mirror: {time.perf_counter() - start:.1f} s")
    assert f"served by mirror {mirror.url('good')}" in proc.stdout
    assert f"installed {base / '1'}" in proc.stdout
    assert not NOISE.search(proc.stderr), proc.stderr
    assert len(mirror.gets("good")) == 1

    image = sorted((data / "test" / "cat").iterdir())[0].read_bytes()
    pixels = tf.cast(tf.io.decode_jpeg(image, channels=3), tf.float32)[None]
    model, run_info = catalogue.load_model(NAME, log=print)
    assert run_info["artifact"] == {"name": NAME, "version": 1, "sha256": release.sha256}
    expected = model(pixels, training=False).numpy()
    # what `zoo train` resolves a config's source with (e.g. the captioner's encoder_init)
    from tfzoo.cli import load_source

    resolved = load_source(NAME)(pixels, training=False).numpy()
    np.testing.assert_allclose(resolved, expected, rtol=1e-6, atol=1e-7)
    served = tf.saved_model.load(str(base / "1"))
    probabilities = served.signatures["predict_pixels"](pixels=pixels)["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    answer = served.signatures["serving_default"](image_bytes=tf.constant([image]))
    assert int(answer["class_ids"][0, 0]) == int(np.argmax(expected[0]))
    assert answer["classes"][0, 0].numpy().decode() in run_info["assets"]["class_names"]
    # the version carries its card, the release's facts (what the web page shows)
    card = json.loads((base / "1" / CARD_PATH).read_text())
    assert card["artifact"] == f"{NAME}@1"
    assert card["metric"] == format_metric(release.metric)
    assert (card["dataset"], card["licence"]) == (release.dataset, release.licence)
    assert (card["size"], card["parameters"]) == (release.size, release.parameters)
    assert not [p.name for p in base.iterdir() if p.name.startswith(".")]  # no staging left


def test_cut_transfer_resumes_then_verifies(published, mirror, env, tmp_path):
    _, _, release, _, _ = published
    for mode in ("cut", "chunked"):  # with Content-Length, and chunked (IncompleteRead)
        cache = tmp_path / f"cache-{mode}"
        proc = zoo("pull", NAME, "--to", str(tmp_path / mode), "--mirror", mirror.url(mode),
                   "--cache", str(cache), check=False, **env)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and "run the same command again" in proc.stderr
        assert "transfer cut" in proc.stderr
        part = cache / "artifacts" / f"{release.sha256}.part"
        assert part.stat().st_size == mirror.cut_at
        assert not (tmp_path / mode).exists()
        run_dir, _ = catalogue.run_dir_for(NAME, cache, mirrors=[mirror.url(mode)], log=print)
        assert mirror.gets(mode)[-1][2] == f"bytes={mirror.cut_at}-"  # resumed, not restarted
        assert (run_dir / "run.json").is_file() and not part.exists()
        assert catalogue.sha256_of(cache / "artifacts" / f"{release.sha256}.tar.gz") == (
            release.sha256
        )


def test_flipped_byte_is_refused_and_the_destination_untouched(published, mirror, env, tmp_path):
    base = tmp_path / "models" / "m"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"the version being served")
    with pytest.raises(PullError, match="wrong sha256"):
        catalogue.pull(NAME, base, mirrors=[mirror.url("corrupt")], log=print)
    assert [p.name for p in base.iterdir()] == ["1"]
    assert (base / "1" / "saved_model.pb").read_bytes() == b"the version being served"
    cache = Path(env["TFZOO_CACHE"]) / "artifacts"
    assert not [p for p in cache.iterdir() if p.suffix in (".gz", ".part")]
    assert not (Path(env["TFZOO_CACHE"]) / "runs").exists()  # nothing was unpacked


def test_mirrors_are_tried_in_order_and_the_serving_one_is_named(published, mirror, env):
    _, _, release, _, _ = published
    said: list[str] = []
    order = ["missing", "cut", "corrupt", "good"]
    target, fetched = catalogue.fetch_reference(
        NAME, mirrors=[mirror.url(m) for m in order], log=said.append
    )
    assert fetched.served_by == f"mirror {mirror.url('good')}"
    assert said[-1].endswith(f"served by mirror {mirror.url('good')}")
    failures = [line for line in said if "trying the next source" in line]
    assert [line.split(": ")[0] for line in failures] == [
        f"mirror {mirror.url(m)}" for m in order[:3]
    ]  # fmt: skip
    assert "404" in failures[0] and "cut" in failures[1] and "sha256" in failures[2]
    # the corrupt mirror continued the cut transfer, failed, and was retried from byte 0
    assert [r[2] for r in mirror.gets("corrupt")] == [f"bytes={mirror.cut_at}-", None]
    assert catalogue.sha256_of(fetched.path) == release.sha256


def test_cache_serves_a_second_pull_and_offline_use_makes_no_connection(
    published, mirror, env, tmp_path, monkeypatch
):
    base = tmp_path / "models" / "m"
    first = catalogue.pull(NAME, base, mirrors=[mirror.url("good")], log=print)
    assert first == base / "1" and (first / "saved_model.pb").is_file()
    mirror.stop()  # the server is gone: the second pull must come from the cache
    said: list[str] = []
    second = catalogue.pull(NAME, base, mirrors=[mirror.url("good")], log=said.append)
    assert second == base / "2" and "served by the cache" in said[-1]

    fresh = Mirror(published[0])
    try:
        monkeypatch.setenv("TFZOO_OFFLINE", "1")
        run_dir, _ = catalogue.run_dir_for(NAME, mirrors=[fresh.url("good")], log=print)
        assert (run_dir / "run.json").is_file()
        with pytest.raises(PullError, match="TFZOO_OFFLINE"):  # a cold cache, offline
            catalogue.run_dir_for(NAME, tmp_path / "cold", mirrors=[fresh.url("good")])
        assert fresh.connections == 0
        monkeypatch.delenv("TFZOO_OFFLINE")
        with pytest.raises(PullError, match="give a mirror"):  # the catalogue has no file
            catalogue.run_dir_for(NAME, tmp_path / "cold")
    finally:
        fresh.stop()


def test_concurrent_pulls_download_once_and_both_install(published, env, tmp_path):
    server = Mirror(published[0], slow_seconds=3.0)
    base = tmp_path / "models" / "m"
    args = [sys.executable, "-m", "tfzoo", "pull", NAME, "--to", str(base),
            "--mirror", server.url("slow")]  # fmt: skip

    def start() -> subprocess.Popen:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=subprocess_env(**env), cwd=REPO_ROOT)  # fmt: skip

    try:
        procs = [start()]
        deadline = time.monotonic() + 60
        while not server.gets("slow") and time.monotonic() < deadline:
            time.sleep(0.02)  # the first pull is downloading (for 3 s): start the second
        procs.append(start())
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        server.stop()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert len(server.gets("slow")) == 1  # one download
    said = "".join(out for out, _ in outputs)
    assert said.count("served by mirror") == 1 and said.count("served by the cache") == 1
    assert "waiting for another pull" in said
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    for version in ("1", "2"):
        assert (base / version / "saved_model.pb").is_file()
        assert (base / version / "variables" / "variables.index").is_file()


def test_finetune_from_a_pulled_artifact_at_learning_rate_zero(published, mirror, env, tmp_path):
    import numpy as np

    from training.export import load_trained

    _, _, release, data, _ = published
    three = small_image_folder(
        data, tmp_path / "three", per_class=4, classes=["cat", "dog", "ship"]
    )
    run = tmp_path / "finetuned"
    proc = zoo("finetune", NAME, "--data-dir", str(three), "--model-dir", str(run),
               "--epochs", "1", "--steps-per-epoch", "2", "--set", "learning_rate=0",
               "--verbose", "0", "--mirror", mirror.url("good"), **env)  # fmt: skip
    fresh = re.search(r"re-initialised: ([^;\n]*)", proc.stdout).group(1).split(", ")
    assert not NOISE.search(proc.stderr), proc.stderr
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["parent"] == {"name": NAME, "version": 1, "sha256": release.sha256}
    assert run_info["command"].startswith(f"zoo finetune {NAME}")
    parent, _ = catalogue.load_model(NAME, log=print)
    child, _ = load_trained(run)
    compared = 0
    for old, new in zip(parent.layers, child.layers, strict=True):
        if new.name in fresh:
            continue
        for a, b in zip(old.weights, new.weights, strict=True):
            assert np.array_equal(a.numpy(), b.numpy()), new.name  # bit-identical
            compared += 1
    assert compared >= 8 and fresh and fresh != [""]


# ------------------------------------------------------------------ no data needed


def test_restricted_licence_is_printed_on_pull(saved_model_artifact, tmp_path, monkeypatch):
    archive, digest = saved_model_artifact
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "tagger-x-v1.tar.gz").write_bytes(archive.read_bytes())
    manifest = Manifest(catalog)
    manifest.add(Release(
        name="tagger/x", version=1, file="tagger-x-v1.tar.gz", sha256=digest,
        size=archive.stat().st_size, metric={"name": "upos_accuracy", "value": 0.9,
        "higher_is_better": True, "percent": True}, dataset="ud_english_ewt",
        licence="CC BY-SA 4.0 (share-alike)", restricted=True, card="tagger-x-v1.md",
        parameters=1,
    ))  # fmt: skip
    manifest.save()
    monkeypatch.setenv("TFZOO_PRETRAINED", str(catalog))
    said: list[str] = []
    path = catalogue.pull("tagger/x", tmp_path / "m", cache=tmp_path / "c", log=said.append)
    assert (path / "saved_model.pb").is_file()
    assert any("CC BY-SA 4.0" in line and "restricted" in line for line in said)
    assert f"served by {catalog} (local)" in said[-2]


def test_pull_by_url_installs_next_version_and_reuses_cache(saved_model_artifact, tmp_path):
    archive, digest = saved_model_artifact
    server = Mirror(archive.parent)
    try:
        base, cache = tmp_path / "models" / "m", tmp_path / "cache"
        url = f"{server.url('good')}/{archive.name}"
        first = catalogue.pull(url, base, digest, cache, log=print)
        assert first == base / "1" and (first / "saved_model.pb").exists()
        assert not (first / CARD_PATH).exists()  # an unpublished URL has no card to carry
        assert (first / "variables" / "variables.index").read_bytes() == bytes(range(256)) * 40
        assert catalogue.pull(url, base, digest, cache, log=print) == base / "2"
        assert len(server.gets()) == 1  # the second pull came from the verified cache
        with pytest.raises(PullError, match="wrong sha256"):
            catalogue.pull(url, base, "0" * 64, tmp_path / "c2", log=print)
        assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    finally:
        server.stop()


def test_corrupt_archive_and_unknown_names_are_refused(tmp_path, monkeypatch):
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b this is not gzip data")
    digest = catalogue.sha256_of(corrupt)
    base = tmp_path / "models" / "m"
    with pytest.raises(PullError, match="corrupt"):
        catalogue.pull(str(corrupt), base, digest, tmp_path / "cache", log=print)
    assert not base.exists() or not list(base.iterdir())
    with pytest.raises(PullError, match="neither a SavedModel"):
        catalogue.pack(tmp_path, tmp_path / "x.tar.gz")
    monkeypatch.setenv("TFZOO_PRETRAINED", str(tmp_path))
    with pytest.raises(PullError, match="no published artifact"):
        catalogue.pull("no/such-model", base, log=print)
    with pytest.raises(PullError, match="--sha256 is required"):
        catalogue.pull(str(corrupt), base, log=print)


def test_cli_pack_and_pull(saved_model_artifact, tmp_path):
    _, digest = saved_model_artifact
    packed = zoo("pack", str(tmp_path / "src" / "1"), str(tmp_path / "again.tar.gz")).stdout
    assert packed.split()[0] == digest  # packing is deterministic for the same files
    out = zoo("pull", str(tmp_path / "again.tar.gz"), "--sha256", digest,
              "--to", str(tmp_path / "models" / "m"), "--cache", str(tmp_path / "c")).stdout  # fmt: skip
    assert "installed" in out and (tmp_path / "models" / "m" / "1" / "saved_model.pb").exists()
    bad = zoo("pull", str(tmp_path / "again.tar.gz"), "--sha256", "f" * 64,
              "--to", str(tmp_path / "models" / "m"), check=False)  # fmt: skip
    assert bad.returncode == 2 and "wrong sha256" in bad.stderr
    assert bad.stderr.count("\n") == 1 and not NOISE.search(bad.stderr)


def test_fetch_offline_skips_network_sources(tmp_path):
    said: list[str] = []
    with pytest.raises(PullError, match="TFZOO_OFFLINE"):
        catalogue.fetch([Source("http://127.0.0.1:9/x.tar.gz", "mirror")], "a" * 64,
                         catalogue.Cache(tmp_path), offline=True, log=said.append)  # fmt: skip
    assert said == []


def test_make_serve_installs_the_catalogue_without_training(published, env, tmp_path, monkeypatch):
    """`make serve`'s bootstrap: every published artifact becomes a served model version,
    once; models.config lists it."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from catalogue import bootstrap
    from catalogue.manifest import serving_names

    monkeypatch.setenv("TFZOO_PRETRAINED", str(published[0]))  # the archive beside its manifest
    models = tmp_path / "models"
    installed = bootstrap.install_catalogue(models, log=print)
    assert sorted(installed) == ["cifar_convnet"]
    assert (installed["cifar_convnet"] / "saved_model.pb").is_file()
    assert bootstrap.install_catalogue(models, log=print) == {}  # already there
    config = text_format.Parse(
        bootstrap.write_config(models).read_text(), model_server_config_pb2.ModelServerConfig()
    )
    assert [c.name for c in config.model_config_list.config] == ["cifar_convnet"]
    assert serving_names(["gpt/baby", "gpt/big", "tagger/default"]) == {
        "gpt/baby": "gpt-baby", "gpt/big": "gpt-big", "tagger/default": "tagger"
    }  # fmt: skip
    chosen = {"gpt": "gpt/big"}  # `zoo publish --as-family`
    assert serving_names(["gpt/baby", "gpt/big", "tagger/default"], chosen) == {
        "gpt/baby": "gpt-baby", "gpt/big": "gpt", "tagger/default": "tagger"
    }  # fmt: skip


def test_weights_already_in_float16_are_counted_as_float16(tmp_path):
    """An artifact's checkpoint is already float16: published again, its card must say so
    (`half_arrays` counts the arrays stored as float16, converted or not)."""
    import h5py
    import numpy as np

    from catalogue.weights import weights_only

    source = tmp_path / "in.weights.h5"
    with h5py.File(source, "w") as f:
        f["layers/dense/vars/0"] = np.ones((2, 3), np.float16)
        f["layers/dense/vars/1"] = np.ones(3, np.float32)
        f["optimizer/vars/0"] = np.ones(3, np.float32)
    kept = weights_only(source, tmp_path / "full.weights.h5")
    assert (kept.parameters, kept.arrays, kept.half_arrays) == (9, 2, 1)
    halved = weights_only(source, tmp_path / "half.weights.h5", half=True)
    assert (halved.parameters, halved.arrays, halved.half_arrays) == (9, 2, 2)
    with h5py.File(tmp_path / "half.weights.h5") as f:
        assert f["layers/dense/vars/1"].dtype == np.float16 and "optimizer" not in f
