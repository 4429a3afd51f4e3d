"""tf.distribute strategies (Mirrored on 2 logical CPUs, MultiWorker on 2 processes) and
resuming a training run killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import REPO_ROOT, small_image_folder, subprocess_env


@pytest.fixture(scope="module")
def cifar_tiny_folder(shared_data, tmp_path_factory):
    return small_image_folder(shared_data / "cifar10", tmp_path_factory.mktemp("cifar"), 8)


def _train_script(run_dir, data_dir, strategy: str, split_cpu: int = 0, epochs: int = 1) -> str:
    return textwrap.dedent(
        f"""
        import json
        from training import strategy as st, train
        if {split_cpu}:
            st.split_cpu({split_cpu})
        m = train.run("cifar_convnet", "tiny", {str(run_dir)!r}, {str(data_dir)!r},
                      epochs={epochs}, strategy={strategy!r}, verbose=0)
        print("RESULT " + json.dumps({{k: m[k] for k in ("replicas", "strategy", "accuracy")}}))
        """
    )


def _result(stdout: str) -> dict:
    line = [x for x in stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_mirrored_strategy_on_two_logical_cpus(cifar_tiny_folder, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _train_script(tmp_path / "run", cifar_tiny_folder, "mirrored", 2)],
        capture_output=True, text=True, timeout=600, env=subprocess_env(), cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _result(proc.stdout)
    assert result["replicas"] == 2 and result["strategy"] == "MirroredStrategy"
    assert (tmp_path / "run" / "checkpoints" / "ckpt-0001.weights.h5").exists()


# MultiWorkerMirroredStrategy on two processes: tests/deploy/test_training_job.py runs the
# training Job's command as two workers beside a reference two-process `train.run`.


def test_killed_run_resumes_from_last_completed_epoch(cifar_tiny_folder, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "tfzoo", "train", "cifar_convnet", "--preset", "tiny",
        "--epochs", "40", "--batch-size", "4", "--data-dir", str(cifar_tiny_folder),
        "--model-dir", str(run_dir), "--verbose", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=subprocess_env(),
        cwd=REPO_ROOT, start_new_session=True,
    )  # fmt: skip
    ckpt_dir = run_dir / "checkpoints"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            done = [p.name for p in ckpt_dir.glob("ckpt-*.weights.h5")] if ckpt_dir.exists() else []
            if any(name >= "ckpt-0003" for name in done):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    from training import checkpoints

    killed_at = checkpoints.latest_checkpoint(ckpt_dir)[0]
    assert 3 <= killed_at < 40
    history_before = checkpoints.read_json(run_dir / "history.json")
    # each epoch's entry is written just before its checkpoint: at most one more
    assert [h["epoch"] for h in history_before][:killed_at] == list(range(1, killed_at + 1))
    assert len(history_before) - killed_at in (0, 1)

    resumed = subprocess.run(
        command[:8] + [str(killed_at + 2)] + command[9:], capture_output=True, text=True,
        env=subprocess_env(), cwd=REPO_ROOT, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from ckpt-{killed_at:04d}.weights.h5" in resumed.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == killed_at
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, killed_at + 3))
    # the optimizer state came back too: its step counter continued, not restarted
    steps_per_epoch = 80 // 4
    import h5py  # noqa: F401  (keras dependency, reads the checkpoint)

    assert _optimizer_iterations(checkpoints.latest_checkpoint(ckpt_dir)[1]) == (
        steps_per_epoch * (killed_at + 2)
    )


def _optimizer_iterations(path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        found = []
        f.visititems(
            lambda name, obj: found.append(obj[()]) if name.endswith("optimizer/vars/0") else None
        )
    return int(found[0])


def test_one_seed_starts_alike_and_is_kept_on_resume(cifar_tiny_folder, tmp_path):
    """Two runs with one seed draw the same initial weights (an epoch at learning rate 0 keeps
    them: one step of it is enough); another seed draws others; the seed is in run.json and
    a resumed run keeps it."""
    import numpy as np

    from training import checkpoints, train
    from training.export import load_trained

    def weights(name: str, seed: int | None, epochs: int = 1):
        train.run("cifar_convnet", "tiny", tmp_path / name, str(cifar_tiny_folder),
                  epochs=epochs, steps_per_epoch=1, seed=seed, overrides={"learning_rate": 0.0},
                  verbose=0)  # fmt: skip
        return load_trained(tmp_path / name)[0].get_weights()

    first, again, other = weights("a", 7), weights("b", 7), weights("c", 8)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(first, other, strict=True) if x.std())
    weights("a", 99, epochs=2)  # resumed from epoch 1: still seed 7
    assert checkpoints.read_json(tmp_path / "a" / "run.json")["seed"] == 7


def test_resume_point_forgets_an_epoch_whose_checkpoint_never_landed(tmp_path):
    """A kill between an epoch's history entry and its checkpoint: the entry is left out and
    the epoch runs again; a kill between a best checkpoint and its copy: the copy is redone."""
    from training import checkpoints, run_files

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for epoch in (1, 2):
        (ckpts / f"ckpt-{epoch:04d}.weights.h5").write_bytes(f"weights {epoch}".encode())
    (ckpts / checkpoints.BEST).write_bytes(b"weights 1")
    history = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0, "best": 1.0},
               {"epoch": 3, "loss": 0.5, "best": 1.0}]  # fmt: skip
    run_files.write_history(tmp_path, history)
    latest, kept = checkpoints.resume_point(tmp_path, repair=False)
    assert latest == (2, ckpts / "ckpt-0002.weights.h5")
    assert kept == history[:2]
    assert (ckpts / checkpoints.BEST).read_bytes() == b"weights 1"  # no repair asked
    checkpoints.resume_point(tmp_path)
    assert (ckpts / checkpoints.BEST).read_bytes() == b"weights 2"  # epoch 2 is the best
    assert checkpoints.resume_point(tmp_path / "none") == (None, [])
