"""zoo pull: verified, resumable downloads installed atomically (real HTTP on loopback)."""

from __future__ import annotations

import http.server
import random
import threading
from pathlib import Path

import pytest

from tests.helpers import zoo
from training import pretrained


def _fake_saved_model(path: Path) -> Path:
    """A directory shaped like a SavedModel version (pretrained.py never parses it)."""
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(random.Random(0).randbytes(20_000))  # incompressible
    (path / "variables" / "variables.index").write_bytes(bytes(range(256)) * 40)
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves one payload; honours Range; can cut the first response short."""

    payload = b""
    cut_first_at: int | None = None
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802
        type(self).requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}"
            )
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first_at is not None:
            self.wfile.write(body[: type(self).cut_first_at])
            type(self).cut_first_at = None
            self.wfile.flush()
            self.connection.shutdown(2)  # connection drops mid-body
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def artifact(tmp_path):
    digest = pretrained.pack(_fake_saved_model(tmp_path / "src" / "1"), tmp_path / "model.tar.gz")
    return tmp_path / "model.tar.gz", digest


@pytest.fixture
def http_server(artifact):
    path, _ = artifact
    _Handler.payload = path.read_bytes()
    _Handler.cut_first_at = None
    _Handler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model.tar.gz"
    server.shutdown()


def test_pull_installs_next_version_and_reuses_cache(http_server, artifact, tmp_path):
    _, digest = artifact
    base, cache = tmp_path / "models" / "m", tmp_path / "cache"
    first = pretrained.pull(http_server, base, digest, cache)
    assert first == base / "1" and (first / "saved_model.pb").exists()
    assert (first / "variables" / "variables.index").read_bytes() == bytes(range(256)) * 40
    second = pretrained.pull(http_server, base, digest, cache)
    assert second == base / "2"
    assert len(_Handler.requests) == 1  # the second pull came from the verified cache
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]


def test_wrong_hash_leaves_nothing(http_server, tmp_path):
    base, cache = tmp_path / "models" / "m", tmp_path / "cache"
    with pytest.raises(pretrained.PullError, match="sha256 mismatch"):
        pretrained.pull(http_server, base, "0" * 64, cache)
    assert not base.exists() or not list(base.iterdir())
    assert not list(cache.iterdir())


def test_interrupted_download_errors_then_resumes(http_server, artifact, tmp_path):
    _, digest = artifact
    base, cache = tmp_path / "models" / "m", tmp_path / "cache"
    _Handler.cut_first_at = 3000
    with pytest.raises(pretrained.PullError, match="interrupted|failed"):
        pretrained.pull(http_server, base, digest, cache)
    assert not base.exists() or not [p for p in base.iterdir() if p.name.isdigit()]
    assert (cache / f"{digest}.part").stat().st_size == 3000
    path = pretrained.pull(http_server, base, digest, cache)
    assert path == base / "1"
    assert _Handler.requests[-1] == "bytes=3000-"  # resumed, not restarted


def test_corrupt_archive_and_non_savedmodel_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b this is not gzip data")
    digest = pretrained.sha256_of(corrupt)
    base = tmp_path / "models" / "m"
    with pytest.raises(pretrained.PullError, match="corrupt"):
        pretrained.pull(str(corrupt), base, digest, tmp_path / "cache")
    assert not [p for p in base.iterdir()]
    with pytest.raises(pretrained.PullError, match="not a SavedModel"):
        pretrained.pack(tmp_path, tmp_path / "x.tar.gz")
    with pytest.raises(pretrained.PullError, match="no published artifact"):
        pretrained.pull("no-such-model", base)


def test_cli_pack_and_pull(artifact, tmp_path):
    _, digest = artifact
    packed = zoo("pack", str(tmp_path / "src" / "1"), str(tmp_path / "again.tar.gz")).stdout
    assert packed.split()[0] == digest  # packing is deterministic for the same files
    out = zoo("pull", str(tmp_path / "again.tar.gz"), "--sha256", digest,
              "--to", str(tmp_path / "models" / "m"), "--cache", str(tmp_path / "c")).stdout  # fmt: skip
    assert "installed" in out and (tmp_path / "models" / "m" / "1" / "saved_model.pb").exists()
    bad = zoo("pull", str(tmp_path / "again.tar.gz"), "--sha256", "f" * 64,
              "--to", str(tmp_path / "models" / "m"), check=False)  # fmt: skip
    assert bad.returncode == 2 and "sha256 mismatch" in bad.stderr
