"""deploy/training: the Kubernetes Indexed Job for multi-worker training.

The Job container's own command and environment, run as two local processes (completion
indexes 0 and 1, workers on loopback ports, the claim on a temporary folder), must train
to the same weights and optimizer state as a two-worker run started the way
tests/training/test_distribution_and_resume.py starts one (`train.run` under a hand-written
TF_CONFIG), both with TF_DETERMINISTIC_OPS=1. Also: the manifests agree with each other,
and the TF_CONFIG builder (training/tf_config.py) gives each index its task and fails
clearly.

(Not MirroredStrategy in one process: `model.fit` there trains its first epoch on another
shuffle of the data than the multi-worker loop, so its weights differ after one step.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import free_port
from tests.helpers import REPO_ROOT, small_image_folder, subprocess_env
from training import tf_config

DEPLOY = REPO_ROOT / "deploy" / "training"
PER_CLASS = 8  # CIFAR-10 images per class: 80 training images


def _manifest(name: str) -> dict:
    return yaml.safe_load((DEPLOY / f"{name}.yaml").read_text(encoding="utf-8"))


def _container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of `$(VAR)` in command, args and env values: a defined
    variable is replaced, an undefined one kept as written, `$$` is a literal `$`."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def pod_env(container: dict, overrides: dict[str, str]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (in order, each value expanded
    against those before it), with `overrides` replacing the values of named variables."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        env[entry["name"]] = k8s_expand(overrides.get(entry["name"], entry["value"]), env)
    return env


def host_path(path: str, container: dict, volume_root: Path) -> str:
    """`path` in the container, on the host: the claim's mounts (by subPath) under
    `volume_root`; other paths unchanged."""
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/")
        if mount["name"] == "training" and (path == prefix or path.startswith(prefix + "/")):
            return str(volume_root / mount.get("subPath", "") / path[len(prefix) :].lstrip("/"))
    return path


# --- the manifests ------------------------------------------------------------------------


def test_manifests_agree():
    job, service, claim = _manifest("job"), _manifest("service"), _manifest("pvc")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = _container(job)
    env = pod_env(container, {})
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["TFZOO_NUM_WORKERS"]) == 2
    assert env["TFZOO_JOB_NAME"] == job["metadata"]["name"]
    # pod i is <job>-<i>.<subdomain>: the headless service of that name resolves it
    assert pod["subdomain"] == service["metadata"]["name"] == env["TFZOO_SERVICE"]
    assert service["spec"]["clusterIP"] == "None"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert int(env["TFZOO_PORT"]) == container["ports"][0]["containerPort"]
    assert service["spec"]["ports"][0]["port"] == int(env["TFZOO_PORT"])
    # checkpoints on the shared claim: a restarted pod resumes
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "training"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert host_path(env["MODEL_DIR"], container, Path("/v")).startswith("/v/")
    # podFailurePolicy needs restartPolicy Never; configuration errors (status 2) fail fast
    assert pod["restartPolicy"] == "Never"
    fail_job = spec["podFailurePolicy"]["rules"][0]
    assert fail_job["action"] == "FailJob"
    assert tf_config.USAGE_ERROR in fail_job["onExitCodes"]["values"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["command"][:4] == ["python", "-m", "training.tf_config", "--"]


def test_manifests_are_the_kustomization_and_validate():
    """`kubectl apply -k deploy/training` applies all three; each is valid (strict: no
    unknown fields) for Kubernetes 1.30 and the newest version kubernetes-validate knows."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    resources = _manifest("kustomization")["resources"]
    assert sorted(resources) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        for name in resources:
            kubernetes_validate.validate(_manifest(Path(name).stem), version, strict=True)


# --- the TF_CONFIG builder ----------------------------------------------------------------

_CLUSTER_ENV = {
    "TFZOO_JOB_NAME": "tfzoo-train",
    "TFZOO_SERVICE": "tfzoo-train-workers",
    "TFZOO_NUM_WORKERS": "2",
    "TFZOO_PORT": "2222",
}


def test_each_index_gets_its_task_in_one_cluster():
    configs = [
        tf_config.tf_config_from_env({**_CLUSTER_ENV, "JOB_COMPLETION_INDEX": str(i)})
        for i in (0, 1)
    ]
    workers = ["tfzoo-train-0.tfzoo-train-workers:2222", "tfzoo-train-1.tfzoo-train-workers:2222"]
    for index, config in enumerate(configs):
        assert config == {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
    overridden = tf_config.tf_config_from_env(
        {**_CLUSTER_ENV, "TFZOO_WORKERS": "localhost:1,localhost:2", "JOB_COMPLETION_INDEX": "1"}
    )
    assert overridden["cluster"]["worker"] == ["localhost:1", "localhost:2"]
    assert overridden["task"] == {"type": "worker", "index": 1}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "JOB_COMPLETION_INDEX is not set"),
        ({"JOB_COMPLETION_INDEX": ""}, "JOB_COMPLETION_INDEX is not set"),
        ({"JOB_COMPLETION_INDEX": "2"}, "is not an index of the 2 workers"),
        ({"JOB_COMPLETION_INDEX": "-1"}, "is not an index of the 2 workers"),
        ({"JOB_COMPLETION_INDEX": "one"}, "is not an index of the 2 workers"),
        ({"JOB_COMPLETION_INDEX": "0", "TFZOO_NUM_WORKERS": "0"}, "positive integer"),
        ({"JOB_COMPLETION_INDEX": "0", "TFZOO_SERVICE": ""}, "TFZOO_SERVICE is not set"),
        ({"JOB_COMPLETION_INDEX": "0", "TFZOO_WORKERS": "a:1,b"}, "must be host:port"),
    ],
)
def test_a_missing_or_invalid_setting_is_a_clear_error(env, message):
    with pytest.raises(tf_config.ConfigError, match=re.escape(message)):
        tf_config.tf_config_from_env({**_CLUSTER_ENV, **env})


def test_the_entry_exits_2_before_running_the_command(monkeypatch, capsys):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    for name, value in _CLUSTER_ENV.items():
        monkeypatch.setenv(name, value)
    assert tf_config.main(["--", "false"]) == tf_config.USAGE_ERROR
    assert "JOB_COMPLETION_INDEX is not set" in capsys.readouterr().err
    assert tf_config.main([]) == tf_config.USAGE_ERROR


# --- the Job's command, run as two local workers ------------------------------------------


def _checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a Keras .weights.h5 checkpoint (weights and optimizer state)."""
    import h5py

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return arrays


def _reference_script(model: str, preset: str, run_dir: Path, data_dir: str) -> str:
    """One worker of the reference run: `train.run` with TF_CONFIG set by hand, the way
    tests/training/test_distribution_and_resume.py runs MultiWorkerMirroredStrategy."""
    return textwrap.dedent(
        f"""
        from training import train
        train.run({model!r}, {preset!r}, {str(run_dir)!r}, {data_dir!r},
                  strategy="multi_worker", verbose=0)
        """
    )


def _run_all(launches: list[tuple[list[str], dict[str, str]]]) -> list[tuple[int, str, str]]:
    """Start every (command, env) at once; (status, stdout, stderr) of each."""
    procs = [
        subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env
        )
        for args, env in launches
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return outputs


def _two_workers() -> list[str]:
    return [f"localhost:{free_port()}" for _ in range(2)]


@pytest.mark.slow
def test_job_command_on_two_local_workers_trains_like_the_reference_run(shared_data, tmp_path):
    from zoo import registry

    container = _container(_manifest("job"))
    env = pod_env(container, {"PRESET": "tiny"})
    volume = tmp_path / "volume"  # the claim: its subPaths are mounted at /runs and /data
    data_dir = host_path(env["DATA_DIR"], container, volume)
    small_image_folder(shared_data / "cifar10", Path(data_dir), PER_CLASS)
    model_dir = Path(host_path(env["MODEL_DIR"], container, volume))
    command = [
        host_path(k8s_expand(arg, env), container, volume)
        for arg in container["command"] + container["args"]
    ]
    assert command[3:] == [
        "--", "zoo", "train", env["MODEL"], "--preset", "tiny", "--data-dir", data_dir,
        "--model-dir", str(model_dir), "--strategy", "multi_worker", "--verbose", "2",
    ]  # fmt: skip

    # the image's `python` and `zoo` are this environment's; its /app is the repository
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # Both runs, not the Job: the augmentation's random draws in tf.data's parallel map
    # otherwise land on the batches in thread order, and two runs of one command differ.
    deterministic = {"TF_DETERMINISTIC_OPS": "1"}
    job_workers = ",".join(_two_workers())
    job = [
        (command, subprocess_env(**env, **deterministic, JOB_COMPLETION_INDEX=str(i), TFZOO_WORKERS=job_workers, PATH=path))
        for i in range(2)
    ]  # fmt: skip
    reference_dir = tmp_path / "reference"
    script = _reference_script(env["MODEL"], "tiny", reference_dir, data_dir)
    cluster = {"worker": _two_workers()}
    reference = [
        (
            [sys.executable, "-c", script],
            subprocess_env(
                **deterministic,
                TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            ),
        )
        for i in range(2)
    ]
    outputs = _run_all(job + reference)
    for index, (code, out, err) in enumerate(outputs):
        assert code == 0, f"process {index}:\n{out[-2000:]}\n{err[-3000:]}"
    for index in range(2):
        assert f"[tf_config] worker {index} of 2: {job_workers}" in outputs[index][1]

    metrics = json.loads((model_dir / "metrics.json").read_text())  # the chief's
    assert metrics["replicas"] == 2 and metrics["strategy"] == "CollectiveAllReduceStrategy"
    assert len(metrics["history"]) == 1
    reference_metrics = json.loads((reference_dir / "metrics.json").read_text())
    assert reference_metrics["replicas"] == 2 and len(reference_metrics["history"]) == 1
    global_batch = int(registry.get(env["MODEL"]).config("tiny")["batch_size"])
    assert metrics["global_batch_size"] == global_batch
    job_arrays = _checkpoint_arrays(model_dir / "checkpoints" / "ckpt-0001.weights.h5")
    reference_arrays = _checkpoint_arrays(reference_dir / "checkpoints" / "ckpt-0001.weights.h5")
    # one epoch of 80 images in global batches of 16, less the last (distributed_loop.py)
    assert int(job_arrays["optimizer/vars/0"]) == 10 * PER_CLASS // global_batch - 1
    assert job_arrays.keys() == reference_arrays.keys()
    differences = {
        name: float(np.max(np.abs(job_arrays[name] - reference_arrays[name]), initial=0))
        for name in job_arrays
    }
    print(f"max |job - reference| over weights and optimizer state: {max(differences.values())}")
    assert max(differences.values()) <= 1e-6, differences
