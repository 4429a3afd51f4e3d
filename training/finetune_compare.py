"""Fine-tuning against its two baselines, on one slice of new data, for the same steps.

For each task the zoo fine-tunes (`COMPARISONS`), one published artifact meets data it was
not trained on, cut from `../shared/data`, and three runs of `train.run` share the config,
the data, the batch size and the number of epochs:

    pretrained  the artifact adapted to the new data (a new head, new vocabulary rows, as
                `zoo finetune` builds it) and not trained at all;
    scratch     the same model trained from its initializers;
    finetuned   the artifact's weights trained, as `zoo finetune` does.

Each run is scored by the recipe's own evaluation on the slice's held-out part. The tests
check that fine-tuning beats both baselines at a small size; `benchmarks/finetune.py`
reports the figures at a larger one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARMS = ("pretrained", "scratch", "finetuned")


def imagenette_slice(shared_data: Path, work_dir: Path, size: int) -> Path:
    """Imagenette's ten classes (new to the CIFAR convnet): `size` training images per
    class and `size // 2` validation images, as a folder of symlinks."""
    from training.data.image_folder import linked_subset

    source, root = shared_data / "imagenette", work_dir / "imagenette"
    linked_subset(source, root, size, splits=("train",))
    return linked_subset(source, root, max(size // 2, 2), splits=("val",))


def ewt_xpos_slice(shared_data: Path, work_dir: Path, size: int) -> Path:
    """EWT dev sentences the tagger never trained on: the first `size` to fine-tune on,
    the last 400 to score (XPOS, a tag set the UPOS artifact has no head for)."""
    text = (shared_data / "ud_english_ewt" / "en_ewt-ud-dev.conllu").read_text(encoding="utf-8")
    sentences = [block for block in text.split("\n\n") if block.strip()]
    if size > len(sentences) - 400:
        raise ValueError(f"at most {len(sentences) - 400} EWT dev sentences to train on")
    root = work_dir / "ewt_xpos"
    root.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", sentences[:size]), ("dev", sentences[-400:])):
        (root / f"slice-{name}.conllu").write_text("\n\n".join(part) + "\n\n", encoding="utf-8")
    return root


def multi30k_slice(shared_data: Path, work_dir: Path, size: int) -> Path:
    """Multi30k validation pairs, which the translator never trained on: the first `size`
    to fine-tune on, the last 400 to score."""
    root = work_dir / "multi30k"
    root.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        lines = (shared_data / "multi30k" / f"val.{lang}").read_text(encoding="utf-8")
        lines = lines.splitlines()
        if size > len(lines) - 400:
            raise ValueError(f"at most {len(lines) - 400} Multi30k val pairs to train on")
        (root / f"train.{lang}").write_text("\n".join(lines[:size]) + "\n", encoding="utf-8")
        (root / f"val.{lang}").write_text("\n".join(lines[-400:]) + "\n", encoding="utf-8")
    return root


def german_text_slice(shared_data: Path, work_dir: Path, size: int) -> Path:
    """German captions (umlauts and ß, which Shakespeare lacks): the first `size` lines of
    Multi30k's train.de as one text; its last 10% is the validation text."""
    lines = (shared_data / "multi30k" / "train.de").read_text(encoding="utf-8").splitlines()
    path = work_dir / "german.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines[:size]) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Comparison:
    """One task's comparison: the artifact, the new data, the settings and the score.

    Attributes:
        artifact: the published artifact fine-tuning starts from.
        make_slice: (shared data folder, work folder, size) -> the `--data-dir` of the runs.
        metric: the key of the recipe's evaluation that scores a run.
        higher_is_better: the metric's direction.
        overrides: settings shared by the three runs (rates, evaluation sizes); `size`
            steps for the iteration-based GPT are set by `run_comparison`.
    """

    artifact: str
    make_slice: Callable[[Path, Path, int], Path]
    metric: str
    higher_is_better: bool
    overrides: dict[str, Any] = field(default_factory=dict)


COMPARISONS: dict[str, Comparison] = {
    "images": Comparison(
        "cifar_convnet/paper", imagenette_slice, "accuracy", True, {"learning_rate": 5e-4}
    ),
    "tagging": Comparison(
        "tagger/default", ewt_xpos_slice, "xpos_accuracy", True, {"tagset": "xpos"}
    ),
    "translation": Comparison(
        "seq2seq/default",
        multi30k_slice,
        "bleu",
        True,
        # seq2seq/default@2 was trained without smoothing or warm-up (the preset has both
        # since): its fine-tune keeps its objective, at a low constant rate
        {
            "learning_rate": 5e-4,
            "eval_limit": 200,
            "beam_size": 1,
            "label_smoothing": 0.0,
            "warmup_epochs": 0,
        },  # fmt: skip
    ),
    "language_model": Comparison(
        "gpt/baby",
        german_text_slice,
        "val_loss",
        False,
        {"learning_rate": 1e-3, "warmup_iters": 10, "eval_iters": 10},
    ),
}


def run_comparison(
    task: str,
    parent_dir: Path,
    shared_data: Path,
    work_dir: Path,
    *,
    size: int,
    epochs: int,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    jit_compile: bool | str = "auto",
) -> dict[str, dict[str, Any]]:
    """The three runs of one task's comparison; arm -> the run's metrics.

    `parent_dir` is the artifact's run directory (`catalogue.run_dir_for`). `steps` sets
    the iteration-based GPT's `max_iters` (the other tasks train `epochs` passes over the
    slice). `jit_compile` is `train.run`'s (False: no XLA, cheaper for a few steps).
    """
    from training import checkpoints, train
    from training.recipe import get_recipe

    comparison = COMPARISONS[task]
    data_dir = str(comparison.make_slice(shared_data, work_dir / "data", size))
    parent_info = checkpoints.read_json(parent_dir / "run.json")
    model = parent_info["model"]
    settings = {
        **get_recipe(model).finetune_overrides(parent_info["config"], data_dir),
        **comparison.overrides,
        **(overrides or {}),
    }
    if steps is not None:
        settings["max_iters"] = int(steps)
    results = {}
    for arm in ARMS:
        results[arm] = train.run(
            model,
            preset=parent_info["preset"],
            model_dir=work_dir / arm,
            data_dir=data_dir,
            epochs=0 if arm == "pretrained" else epochs,
            overrides={**settings, "epochs": epochs},
            parent=None if arm == "scratch" else parent_dir,
            jit_compile=jit_compile,
            verbose=0,
        )
    return results


def score(task: str, results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Arm -> the comparison's metric."""
    metric = COMPARISONS[task].metric
    return {arm: float(results[arm][metric]) for arm in ARMS}


def finetuning_wins(task: str, scores: dict[str, float]) -> bool:
    """Whether the fine-tuned run beats both baselines on the task's metric."""
    sign = 1.0 if COMPARISONS[task].higher_is_better else -1.0
    best_baseline = max(sign * scores["pretrained"], sign * scores["scratch"])
    return sign * scores["finetuned"] > best_baseline
