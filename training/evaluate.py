"""`zoo evaluate`: the task's standard metric of a trained run on its test (or val) split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training import checkpoints
from training.export import load_trained
from training.recipe import get_recipe


def run(
    model_dir: str | Path, data_dir: str | None = None, batch_size: int | None = None
) -> dict[str, Any]:
    """Evaluate the newest checkpoint of `model_dir`; returns the metrics dict."""
    model, run_info = load_trained(model_dir)
    recipe = get_recipe(run_info["model"])
    config = run_info["config"]
    data = recipe.load_data(
        config,
        data_dir,
        int(batch_size or recipe.default_batch_size(config)),
        training=False,
        assets=run_info["assets"],
    )
    recipe.compile(model, config, data, jit_compile="auto")
    checkpoints.build_optimizer_state(model)
    return recipe.evaluate(model, config, data)
