"""The container's entrypoint: the official `tensorflow/serving` image's environment, then
`zoo serve` with any extra flags passed through.

As in TF Serving's image (tensorflow_serving/tools/docker/tf_serving_entrypoint.sh):
`--port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME}
--model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"`. When MODEL_NAME is not set, every
model under MODEL_BASE_PATH (a folder with integer version folders) is served through a model
config file written at start, so the image serves the whole zoo it was built with. Flags given
to `docker run` come last and win; `--model_config_file` among them wins over the model flags,
as it does in TF Serving.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from serving.layout import version_dirs


def zoo_config(base: Path) -> str | None:
    """A ModelServerConfig listing every model folder under `base` (None when there is none)."""
    if not base.is_dir():
        return None
    models = sorted(p for p in base.iterdir() if p.is_dir() and version_dirs(p))
    if not models:
        return None
    entries = "".join(
        f'  config {{ name: "{p.name}" base_path: "{p.resolve()}" model_platform: "tensorflow" }}\n'
        for p in models
    )
    return f"model_config_list {{\n{entries}}}\n"


def command(env: Mapping[str, str], extra: list[str], config_dir: Path) -> list[str]:
    """The `python -m serving` arguments for this environment and these extra flags."""
    base = env.get("MODEL_BASE_PATH") or "/models"
    args = ["--port=8500", "--rest_api_port=8501"]
    name = env.get("MODEL_NAME", "")
    user_config = any(a.startswith("--model_config_file") for a in extra)
    if name or user_config:
        name = name or "model"
        args += [f"--model_name={name}", f"--model_base_path={base}/{name}"]
    else:
        text = zoo_config(Path(base))
        if text is None:  # nothing to list: the official image's default model name
            args += ["--model_name=model", f"--model_base_path={base}/model"]
        else:
            path = config_dir / "models.config"
            path.write_text(text)
            args.append(f"--model_config_file={path}")
    return args + list(extra)


def main() -> None:
    """Replace this process with the server."""
    config_dir = Path(tempfile.mkdtemp(prefix="zoo-serve-"))
    args = command(os.environ, sys.argv[1:], config_dir)
    os.execv(sys.executable, [sys.executable, "-m", "serving", *args])


if __name__ == "__main__":
    main()
