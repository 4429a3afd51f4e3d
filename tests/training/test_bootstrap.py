"""`make serve`'s first-run set-up: models.config lists every servable base path."""

from __future__ import annotations

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from catalogue import bootstrap


def test_config_lists_base_paths_with_versions(tmp_path):
    models = tmp_path / "models"
    (models / "cifar_convnet" / "3").mkdir(parents=True)
    (models / "gpt" / "1").mkdir(parents=True)
    (models / "empty").mkdir()
    (models / "half" / ".tmp-2-123").mkdir(parents=True)  # an export in progress
    path = bootstrap.write_config(models)
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c.base_path for c in config.model_config_list.config}
    assert entries == {
        "cifar_convnet": str((models / "cifar_convnet").resolve()),
        "gpt": str((models / "gpt").resolve()),
    }
    assert all(c.model_platform == "tensorflow" for c in config.model_config_list.config)
