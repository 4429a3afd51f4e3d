"""The Kubernetes and KServe manifests under deploy/, checked offline.

- every YAML file under deploy/ passes yamllint (deploy/.yamllint), and each one under
  deploy/kubernetes and deploy/kserve belongs to a kustomization;
- each kustomization is rendered by `render` below, a small kustomize (resources, patches as
  strategic-merge files, images, namespace: what deploy/ uses; anything else is refused), and
  the result is compared with `kubectl kustomize` where that is installed;
- Kubernetes' own kinds are validated with kubernetes-validate's bundled schemas (strict:
  unknown fields are errors) for Kubernetes 1.30 and the newest version it ships; KServe's
  ServingRuntime and InferenceService with jsonschema against KServe's CRD schemas, vendored
  in deploy/kserve/schemas/ (unknown fields rejected too, as `kubectl --validate=strict` does);
- the ConfigMaps parse as TF Serving's ModelServerConfig and MonitoringConfig, and name the
  pretrained catalogue's models where the image installs them;
- the wiring holds: selectors, port names, probe ports, flags the server knows, termination
  grace longer than the server's shutdown grace, the security context, resources;
- the Deployment's container and the KServe runtime's, run as written on loopback (only
  mount paths and port numbers substituted): the probe paths answer on the ports the
  manifest names (readiness 400 while a configured model has no version, 200 once loaded),
  gRPC health on the `grpc` port, Prometheus text at the annotated path, and SIGTERM ends the
  server within its shutdown grace;
- `zoo pull`, as the init container and the KServe Job write it, installs an artifact.
"""

from __future__ import annotations

import copy
import functools
import http.client
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import jsonschema
import kubernetes_validate
import orjson
import pytest
import yaml
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2
from yamllint import linter
from yamllint.config import YamlLintConfig

from catalogue.manifest import serving_names
from serving import docker_entrypoint, repository
from serving.config_protos import MonitoringConfig
from serving.main import build_parser
from tests.conftest import REPO_ROOT
from tests.server_process import Server, start_server

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"
SCHEMAS = KSERVE / "schemas"
KUSTOMIZATIONS = sorted(p.parent for d in (K8S, KSERVE) for p in d.rglob("kustomization.yaml"))
KUSTOMIZATION_IDS = [str(p.relative_to(DEPLOY)) for p in KUSTOMIZATIONS]
# kubernetes-validate's bundled schemas: the oldest Kubernetes these manifests target, and the
# newest the package ships (1.37 with kubernetes-validate 1.37)
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KSERVE_GROUP = "serving.kserve.io"
# KServe's InferenceService names (pkg/apis/serving/v1beta1/inference_service_validation.go,
# IsvcNameFmt); their served model name is the InferenceService's
ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
STOCK_RUNTIMES = {  # KServe's config/runtimes/kserve-tensorflow-serving.yaml
    "kserve-tensorflow-serving": {"formats": {"tensorflow"}, "protocols": {"v1", "grpc-v1"}}
}
KUBERNETES_DEFAULT_GRACE = 30  # a pod's terminationGracePeriodSeconds when unset
IMAGE_UID = 1000
READY_TIMEOUT = 120


# ----- the renderer: what `kustomize build` does with the features deploy/ uses -----

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "patches", "images", "namespace"}
# strategic merge: lists merged by key (the Kubernetes API's patchMergeKey); others replaced
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
}


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def api_group(doc: dict) -> str:
    version = doc["apiVersion"]
    return version.split("/")[0] if "/" in version else ""


def merge_key(field: str, items: list) -> str | None:
    if field == "ports":  # a container's ports by number, a Service's by port
        return "containerPort" if any("containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(base, patch, field: str = ""):
    """`patch` merged into `base` as a strategic-merge patch does (no $ directives)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if key.startswith("$"):
                raise NotImplementedError(f"strategic-merge directive {key}")
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = merge_key(field, base + patch)
        if key is None:
            return copy.deepcopy(patch)
        patched = {item[key]: item for item in patch}
        known = {item[key] for item in base}
        # kustomize puts the patch's new items first, then the base's (merged) in order
        added = [copy.deepcopy(item) for item in patch if item[key] not in known]
        kept = [
            strategic_merge(item, patched[item[key]], "") if item[key] in patched else item
            for item in base
        ]
        return added + kept
    return copy.deepcopy(patch)


def pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    return [spec["template"]["spec"]] if "template" in spec else []


def split_image(image: str) -> tuple[str, str | None]:
    name, sep, tag = image.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (image, None)


def render(root: Path) -> list[dict]:
    """The resources `kustomize build root` writes (deep copies, in resource order)."""
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(spec) - KUSTOMIZATION_FIELDS
    if unknown:
        raise NotImplementedError(f"{root}: the test's renderer does not apply {sorted(unknown)}")
    assert spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert spec["kind"] == "Kustomization"
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = root / entry
        docs += render(path) if path.is_dir() else load_all(path)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise NotImplementedError(f"{root}: only `path` patches, not {patch}")
        body = yaml.safe_load((root / patch["path"]).read_text())
        hits = [
            i
            for i, d in enumerate(docs)
            if (d["kind"], d["metadata"]["name"], api_group(d))
            == (body["kind"], body["metadata"]["name"], api_group(body))
        ]
        assert len(hits) == 1, f"{root / patch['path']} matches {len(hits)} resources"
        docs[hits[0]] = strategic_merge(docs[hits[0]], body)
    for image in spec.get("images", []):
        if set(image) - {"name", "newName", "newTag"}:
            raise NotImplementedError(f"{root}: images {image}")
        hits = 0
        for doc in docs:
            for pod in pod_specs(doc):
                for c in pod.get("initContainers", []) + pod["containers"]:
                    name, tag = split_image(c["image"])
                    if name == image["name"]:
                        tag = image.get("newTag", tag)
                        c["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
                        hits += 1
        assert hits, f"{root}: images entry {image['name']} matches no container"
    if "namespace" in spec:
        for doc in docs:
            doc["metadata"]["namespace"] = spec["namespace"]
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{root}: duplicate resources {keys}"
    return copy.deepcopy(docs)


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} resources"
    return found[0]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict (the last wins, as in the server)."""
    out = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, f"{arg!r}: write flags as --name=value"
        name, _, value = arg[2:].partition("=")
        out[name] = value
    return out


def container_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def probe_port(probe: dict, container: dict) -> int:
    port = probe["httpGet"]["port"]
    return container_ports(container)[port] if isinstance(port, str) else port


def pre_stop_seconds(container: dict) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command:
        return 0.0
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def configmap_files(docs: list[dict], pod: dict, container: dict) -> dict[str, str]:
    """Path in the container -> content, for each ConfigMap key mounted (whole maps only)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
        cm = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == source["name"]]
        assert len(cm) == 1, f"ConfigMap {source['name']} is not in the kustomization"
        for key, text in cm[0]["data"].items():
            files[f"{mount['mountPath'].rstrip('/')}/{key}"] = text
    return files


def pull_commands(container: dict) -> list[list[str]]:
    """The `zoo pull` command lines of an init container or Job written as `sh -ec` lines."""
    assert container["command"] == ["sh", "-ec"], container["command"]
    (script,) = container["args"]
    lines = [shlex.split(line) for line in script.splitlines() if line.strip()]
    for line in lines:
        assert line[:2] == ["zoo", "pull"] and len(line) == 5 and line[3] == "--to", line
    return lines


def catalogue() -> dict[str, str]:
    """Artifact name -> served name: what the image installs (catalogue/bootstrap.py)."""
    manifest = orjson.loads((REPO_ROOT / "pretrained" / "manifest.json").read_bytes())
    return serving_names(sorted(manifest["artifacts"]), manifest.get("served"))


def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def image_model_base_path() -> str:
    match = re.search(r"MODEL_BASE_PATH=(\S+)", dockerfile())
    assert match, "Dockerfile sets no MODEL_BASE_PATH"
    return match.group(1)


# ----- files -----


def yaml_files() -> list[Path]:
    return sorted(
        p for p in DEPLOY.rglob("*") if p.is_file() and (p.suffix in (".yaml", ".yml"))
    ) + [DEPLOY / ".yamllint"]


def test_yamllint():
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint"))
    files = yaml_files()
    assert len(files) > 10
    problems = []
    for path in files:
        for problem in linter.run(path.read_text(), config, str(path)):
            problems.append(
                f"{path.relative_to(REPO_ROOT)}:{problem.line}:{problem.column} {problem}"
            )
    assert not problems, "\n".join(problems)


def test_every_manifest_is_in_a_kustomization():
    """No manifest lies beside the kustomizations unapplied (and so unvalidated)."""
    used = set()
    for root in KUSTOMIZATIONS:
        spec = yaml.safe_load((root / "kustomization.yaml").read_text())
        used.add(root / "kustomization.yaml")
        used |= {(root / r).resolve() for r in spec.get("resources", [])}
        used |= {(root / p["path"]).resolve() for p in spec.get("patches", [])}
    mine = [p for p in yaml_files() if p.is_relative_to(K8S) or p.is_relative_to(KSERVE)]
    orphans = [p for p in mine if p.resolve() not in used]
    assert not orphans, f"YAML that no kustomization applies: {orphans}"
    assert {K8S / "base", K8S / "overlays" / "pull-models"} <= set(KUSTOMIZATIONS)


def _kustomize_command(root: Path) -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(root)]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(root)]
    return None


@pytest.mark.parametrize("root", KUSTOMIZATIONS, ids=KUSTOMIZATION_IDS)
def test_renderer_matches_kustomize(root):
    command = _kustomize_command(root)
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

    def key(d):
        return (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])

    theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=key)
    assert sorted(render(root), key=key) == theirs


# ----- schemas -----


def _broken_copy(doc: dict, path: tuple, field: str) -> dict:
    """`doc` with an unknown field added at `path` (a misspelling the schemas must catch)."""
    broken = copy.deepcopy(doc)
    node = broken
    for step in path:
        node = node[step]
    node[field] = node.get(field.lower(), "x")
    return broken


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("root", KUSTOMIZATIONS, ids=KUSTOMIZATION_IDS)
def test_kubernetes_resources_validate(root, version):
    docs = [d for d in render(root) if api_group(d) != KSERVE_GROUP]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {e}")
    # the check can fail: a misspelt field in a pod spec is an error
    pod_doc = next(d for d in docs if pod_specs(d))
    broken = _broken_copy(pod_doc, ("spec", "template", "spec", "containers", 0), "readinesProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def strict_schema(schema):
    """`schema` where an object with `properties` admits no other field (the API server
    prunes unknown fields; `kubectl --validate=strict` rejects them), unless it preserves
    unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict_schema(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict_schema(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict_schema(s) for s in out[key]]
    if "$defs" in out:
        out["$defs"] = {k: strict_schema(v) for k, v in out["$defs"].items()}
    return out


def kserve_validator(doc: dict) -> jsonschema.Validator:
    plural = {"ServingRuntime": "servingruntimes", "InferenceService": "inferenceservices"}
    version = doc["apiVersion"].split("/")[1]
    return _validator(f"{plural[doc['kind']]}.{version}.json")


@functools.cache
def _validator(name: str) -> jsonschema.Validator:
    path = SCHEMAS / name
    assert path.is_file(), f"no vendored schema {name}"
    schema = orjson.loads(path.read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(strict_schema(schema))


KSERVE_ROOTS = [r for r in KUSTOMIZATIONS if r.is_relative_to(KSERVE)]


@pytest.mark.parametrize(
    "root", KSERVE_ROOTS, ids=[str(r.relative_to(DEPLOY)) for r in KSERVE_ROOTS]
)
def test_kserve_resources_validate(root):
    docs = [d for d in render(root) if api_group(d) == KSERVE_GROUP]
    if root.name == "models":
        assert not docs
        return
    assert docs
    for doc in docs:
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in kserve_validator(doc).iter_errors(doc)
        ]
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
        # metadata is Kubernetes' ObjectMeta (the CRD schema says only `object`)
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
            KUBERNETES_VERSIONS[0],
            strict=True,
        )
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    broken = _broken_copy(isvc, ("spec", "predictor", "model"), "storageURI")
    assert list(kserve_validator(broken).iter_errors(broken)), "a misspelt field passed"


def test_vendored_schemas_are_kserves():
    """The vendored files name their source, and KServe's licence travels with them."""
    assert "Apache License" in (SCHEMAS / "LICENSE").read_text()
    readme = (SCHEMAS / "README.md").read_text()
    for path in SCHEMAS.glob("*.json"):
        schema = orjson.loads(path.read_bytes())
        commit = re.search(r"at ([0-9a-f]{40})", schema["$comment"]).group(1)
        assert commit in readme
        assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec"}


# ----- KServe -----


def test_kserve_references():
    runtimes = {d["metadata"]["name"]: d for d in by_kind(render(KSERVE / "zoo"), "ServingRuntime")}
    assert set(runtimes) == {"tfzoo"}
    models = render(KSERVE / "models")
    claim = only(models, "PersistentVolumeClaim")["metadata"]["name"]
    job = only(models, "Job")
    (puller,) = job["spec"]["template"]["spec"]["containers"]
    (mount,) = [m for m in puller["volumeMounts"] if m["name"] == "models"]
    installed = {line[4] for line in pull_commands(puller)}
    families = set(catalogue().values())
    for root, runtime_names in (("zoo", {"tfzoo"}), ("tfserving", set(STOCK_RUNTIMES))):
        isvcs = by_kind(render(KSERVE / root), "InferenceService")
        served = set()
        for isvc in isvcs:
            name = isvc["metadata"]["name"]
            assert ISVC_NAME.fullmatch(name) and len(name) <= 63, name
            model = isvc["spec"]["predictor"]["model"]
            assert model["runtime"] in runtime_names
            if model["runtime"] in runtimes:
                spec = runtimes[model["runtime"]]["spec"]
                formats = {f["name"] for f in spec["supportedModelFormats"]}
                protocols = set(spec["protocolVersions"])
            else:
                formats = STOCK_RUNTIMES[model["runtime"]]["formats"]
                protocols = STOCK_RUNTIMES[model["runtime"]]["protocols"]
            assert model["modelFormat"]["name"] in formats
            assert model["protocolVersion"] in protocols
            scheme, _, rest = model["storageUri"].partition("://")
            assert scheme == "pvc" and rest.split("/")[0] == claim, model["storageUri"]
            folder = rest.split("/", 1)[1]
            assert f"{mount['mountPath']}/{folder}" in installed, "the Job installs no such model"
            served.add(folder)
        assert served == families, f"{root}: every family once"
        assert len(isvcs) == len(families)


def test_kserve_runtime_wiring():
    docs = render(KSERVE / "zoo")
    runtime = only(docs, "ServingRuntime")["spec"]
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"  # KServe's InferenceServiceContainerName
    assert container["command"] == ["zoo", "serve"]
    args = flags(container["args"])
    assert args["model_base_path"] == "/mnt/models"  # where KServe puts the storageUri
    assert args["model_name"] == "{{.Name}}"
    ports = container_ports(container)
    assert container["ports"][0]["containerPort"] == int(args["rest_api_port"]) == 8080
    assert ports["grpc"] == int(args["port"])  # a `grpc` name: h2c on KServe's Service
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe_port(container[kind], container) == int(args["rest_api_port"])
    annotations = runtime["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == int(args["rest_api_port"])
    files = configmap_files(docs, runtime, container)
    monitoring = text_format.Parse(files[args["monitoring_config_file"]], MonitoringConfig())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == annotations["prometheus.kserve.io/path"]
    # no InferenceService sets a longer grace: preStop and the server's fit in the default
    grace = pre_stop_seconds(container) + float(args["shutdown_grace_seconds"])
    assert grace < KUBERNETES_DEFAULT_GRACE
    for isvc in by_kind(docs, "InferenceService"):
        assert "terminationGracePeriodSeconds" not in isvc["spec"]["predictor"]


# ----- Kubernetes -----

K8S_ROOTS = [r for r in KUSTOMIZATIONS if r.is_relative_to(K8S)]
K8S_IDS = [str(r.relative_to(K8S)) for r in K8S_ROOTS]


def server_container(pod: dict) -> dict:
    (container,) = [c for c in pod["containers"] if c["name"] == "server"]
    return container


def test_config_maps_parse():
    docs = render(K8S / "base")
    pod = pod_specs(only(docs, "Deployment"))[0]
    container = server_container(pod)
    files = configmap_files(docs, pod, container)
    args = flags(container["args"])
    config = text_format.Parse(
        files[args["model_config_file"]], model_server_config_pb2.ModelServerConfig()
    )
    repository.validate_config(config)  # what the server checks at start
    base = image_model_base_path()
    entries = {c.name: (c.base_path, c.model_platform) for c in config.model_config_list.config}
    assert entries == {n: (f"{base}/{n}", "tensorflow") for n in catalogue().values()}
    monitoring = text_format.Parse(files[args["monitoring_config_file"]], MonitoringConfig())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path.startswith("/")
    # the KServe runtime's monitoring config is the same text
    kserve = only(render(KSERVE / "zoo"), "ConfigMap")["data"]["monitoring.config"]
    assert text_format.Parse(kserve, MonitoringConfig()) == monitoring


def test_flags_are_the_servers():
    """Every flag the manifests pass is one `zoo serve` knows (an unknown one is only
    reported, and the server starts without it)."""
    parser = build_parser()
    docs = render(K8S / "base")
    container = server_container(pod_specs(only(docs, "Deployment"))[0])
    runtime = only(render(KSERVE / "zoo"), "ServingRuntime")["spec"]["containers"][0]
    for args in (
        docker_entrypoint.command({}, container["args"], Path("/nonexistent")),
        runtime["args"],
    ):
        flags(args)
        _, unknown = parser.parse_known_args(args)
        assert not unknown


@pytest.mark.parametrize("root", K8S_ROOTS, ids=K8S_IDS)
def test_kubernetes_wiring(root):
    docs = render(root)
    deployment = only(docs, "Deployment")
    template = deployment["spec"]["template"]
    pod = template["spec"]
    labels = template["metadata"]["labels"]
    container = server_container(pod)
    ports = container_ports(container)
    # the image's entrypoint listens on 8500 (gRPC) and 8501 (REST), and the Dockerfile says so
    entry = flags(docker_entrypoint.command({}, container["args"], Path("/nonexistent")))
    assert ports == {"grpc": int(entry["port"]), "http": int(entry["rest_api_port"])}
    assert re.search(rf"EXPOSE {ports['grpc']} {ports['http']}\b", dockerfile())
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = only(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "grpc": "grpc",
        "http": "http",
    }
    hpa = only(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = only(docs, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    for kind, path in (
        ("startupProbe", "/v2/health/live"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        assert container[kind]["httpGet"]["path"] == path
        assert probe_port(container[kind], container) == ports["http"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "room for loading"
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    files = configmap_files(docs, pod, container)
    args = flags(container["args"])
    for name, value in args.items():
        if name.endswith("_file"):
            assert value in files, f"--{name}={value} is not a mounted ConfigMap key"
    monitoring = text_format.Parse(files[args["monitoring_config_file"]], MonitoringConfig())
    assert annotations["prometheus.io/path"] == monitoring.prometheus_config.path
    # SIGTERM comes after preStop; the server then gives in-flight requests its grace
    grace = pre_stop_seconds(container) + float(args["shutdown_grace_seconds"])
    assert pod["terminationGracePeriodSeconds"] > grace


def _security_contexts():
    """(where, pod spec, container) for every container the manifests run."""
    for root in KUSTOMIZATIONS:
        for doc in render(root):
            for pod in pod_specs(doc):
                for c in pod.get("initContainers", []) + pod["containers"]:
                    yield (
                        f"{root.relative_to(DEPLOY)}:{doc['metadata']['name']}/{c['name']}",
                        pod,
                        c,
                    )
            if doc["kind"] == "ServingRuntime":
                for c in doc["spec"]["containers"]:
                    yield f"{root.relative_to(DEPLOY)}:{doc['metadata']['name']}", doc["spec"], c


def test_security_context_and_resources():
    assert re.search(rf"useradd [^\n]*--uid {IMAGE_UID}\b", dockerfile())
    assert re.search(rf"^USER {IMAGE_UID}$", dockerfile(), re.M)
    seen = 0
    for where, pod, container in _security_contexts():
        seen += 1
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser") == IMAGE_UID, where
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        volumes = {v["name"]: v for v in pod["volumes"]}
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: no writable /tmp"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), where
        assert "memory" in resources["limits"], where
    assert seen >= 7


def test_pull_commands_install_the_catalogue(tmp_path):
    """The init container (overlays/pull-models) and the KServe Job pull every artifact into
    the folder the server reads, and a line of theirs, run here, installs a SavedModel."""
    names = catalogue()
    docs = render(K8S / "overlays" / "pull-models")
    pod = pod_specs(only(docs, "Deployment"))[0]
    (init,) = pod["initContainers"]
    server = server_container(pod)
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    server_mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    base = image_model_base_path()
    assert init_mounts["models"] == server_mounts["models"] == base
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}["models"]
    job = only(render(KSERVE / "models"), "Job")["spec"]["template"]["spec"]["containers"][0]
    job_base = {m["name"]: m["mountPath"] for m in job["volumeMounts"]}["models"]
    for container, folder in ((init, base), (job, job_base)):
        lines = pull_commands(container)
        assert {line[2]: line[4] for line in lines} == {
            artifact: f"{folder}/{served}" for artifact, served in names.items()
        }
        env = {e["name"]: e["value"] for e in container["env"]}
        # the image's catalogue: WORKDIR /app, COPY pretrained ./pretrained
        assert env["TFZOO_PRETRAINED"] == "/app/pretrained"
        assert re.search(r"^WORKDIR /app$", dockerfile(), re.M)
        assert re.search(r"^COPY pretrained \./pretrained$", dockerfile(), re.M)
        assert env["TFZOO_CACHE"].startswith("/tmp/")
    # the smallest artifact's line, as the container runs it, from this checkout's catalogue
    manifest = orjson.loads((REPO_ROOT / "pretrained" / "manifest.json").read_bytes())
    sizes = {
        name: max(v["size"] for v in entry["versions"].values())
        for name, entry in manifest["artifacts"].items()
    }
    smallest = min(sizes, key=sizes.get)
    (line,) = [line for line in pull_commands(init) if line[2] == smallest]
    target = tmp_path / line[4].removeprefix(f"{base}/")
    env = {
        "PATH": "/usr/bin:/bin",
        "TFZOO_PRETRAINED": str(REPO_ROOT / "pretrained"),
        "TFZOO_CACHE": str(tmp_path / "cache"),
        "TFZOO_OFFLINE": "1",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-m", "tfzoo", *line[1:4], str(target)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    versions = [p for p in target.iterdir() if p.name.isdigit()]
    assert len(versions) == 1 and (versions[0] / "saved_model.pb").is_file()


# ----- the manifests' containers, run on loopback -----


@dataclass
class Served:
    """A server started from a manifest's container, and where its ports went."""

    server: Server
    container: dict
    ports: dict[int, int]  # the manifest's container port -> the port it listens on here
    metrics_port: int  # the container port the Prometheus annotations name
    metrics_path: str
    config: model_server_config_pb2.ModelServerConfig  # what it serves
    pending: Path  # an empty model base path (no version yet)

    def get(self, container_port: int, path: str) -> tuple[int, str]:
        """GET `path` on the port the manifest calls `container_port`: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[container_port], timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def status(self, container_port: int, path: str) -> int:
        return self.get(container_port, path)[0]


def _substitute(args: list[str], paths: dict[str, Path]) -> list[str]:
    """The args with each mount path replaced by the local folder standing in for it."""
    out = []
    for arg in args:
        name, _, value = arg.partition("=")
        for prefix in sorted(paths, key=len, reverse=True):  # the deepest mount first
            if value == prefix or value.startswith(prefix + "/"):
                value = str(paths[prefix]) + value[len(prefix) :]
                break
        out.append(f"{name}={value}")
    return out


def _launch(kind: str, testdata: Path, tmp: Path) -> Served:
    half_plus_two = testdata / "saved_model_half_plus_two_cpu"
    (tmp / "pending").mkdir()
    if kind == "kubernetes":
        docs = render(K8S / "base")
        template = only(docs, "Deployment")["spec"]["template"]
        pod = template["spec"]
        container = server_container(pod)
        annotations = template["metadata"]["annotations"]
        metrics = int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"]
        entry = ("-m", "serving")  # the image: python -m serving.docker_entrypoint -> serving
        files = configmap_files(docs, pod, container)
        config = model_server_config_pb2.ModelServerConfig()
        for path, text in files.items():
            if path == flags(container["args"])["model_config_file"]:
                # the ConfigMap's models, each served from TF Serving's half_plus_two
                config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
                for model in config.model_config_list.config:
                    model.base_path = str(half_plus_two)
                text = text_format.MessageToString(config)
            local = tmp / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text)
        mounts = {
            m["mountPath"]: tmp / m["mountPath"].lstrip("/") for m in container["volumeMounts"]
        }
        args = docker_entrypoint.command({}, _substitute(container["args"], mounts), tmp)
    else:
        docs = render(KSERVE / "zoo")
        runtime = only(docs, "ServingRuntime")["spec"]
        (container,) = runtime["containers"]
        annotations = runtime["annotations"]
        metrics = (
            int(annotations["prometheus.kserve.io/port"]),
            annotations["prometheus.kserve.io/path"],
        )
        assert container["command"] == ["zoo", "serve"]
        entry = ("-m", "tfzoo", "serve")
        name = next(
            i["metadata"]["name"]
            for i in by_kind(docs, "InferenceService")
            if i["spec"]["predictor"]["model"]["runtime"] == "tfzoo"
        )
        files = configmap_files(docs, runtime, container)
        for path, text in files.items():
            local = tmp / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text)
        mounts = {
            m["mountPath"]: tmp / m["mountPath"].lstrip("/") for m in container["volumeMounts"]
        }
        mounts["/mnt/models"] = half_plus_two  # KServe's storageUri mount
        args = _substitute([a.replace("{{.Name}}", name) for a in container["args"]], mounts)
        config = repository.single_model_config(name, str(half_plus_two))
    # the ports become free ones; everything else is passed as written
    given = flags(args)
    grpc_port, rest_port = int(given["port"]), int(given["rest_api_port"])
    rest = [a for a in args if not a.startswith(("--port=", "--rest_api_port="))]
    server = start_server(*rest, entry=entry)
    return Served(
        server,
        container,
        {grpc_port: server.grpc_port, rest_port: server.rest_port},
        *metrics,
        config,
        tmp / "pending",
    )


@pytest.fixture(scope="module", params=["kubernetes", "kserve"])
def served(request, testdata, tmp_path_factory):
    s = _launch(request.param, testdata, tmp_path_factory.mktemp(request.param))
    yield s
    s.server.stop()


def _wait(predicate, timeout: float = READY_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_probes_answer(served):
    c = served.container
    assert "unknown argument" not in served.server.log()
    assert set(container_ports(c).values()) == set(served.ports), "every port is served"
    ready = c["readinessProbe"]
    _wait(lambda: served.status(probe_port(ready, c), ready["httpGet"]["path"]) == 200)
    for kind in ("startupProbe", "livenessProbe"):
        assert served.status(probe_port(c[kind], c), c[kind]["httpGet"]["path"]) == 200
    rest = probe_port(ready, c)
    for model in served.config.model_config_list.config:
        assert served.status(rest, f"/v2/models/{model.name}/ready") == 200


def _reload(served: Served, config) -> None:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{served.ports[container_ports(served.container)['grpc']]}"
    )
    with channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = model_management_pb2.ReloadConfigRequest(config=config)
        response = stub.HandleReloadConfigRequest(request, timeout=60)
    assert response.status.error_code == 0, response.status.error_message


def test_readiness_follows_the_models(served):
    """The readiness probe's path says 400 while a configured model has no version (the
    liveness path still 200), and 200 again once every model is loaded."""
    c = served.container
    ready, live = c["readinessProbe"], c["livenessProbe"]
    rest = probe_port(ready, c)
    _wait(lambda: served.status(rest, ready["httpGet"]["path"]) == 200)
    more = copy.deepcopy(served.config)
    more.model_config_list.config.add(
        name="pending", base_path=str(served.pending), model_platform="tensorflow"
    )
    _reload(served, more)
    assert served.status(rest, ready["httpGet"]["path"]) == 400
    assert served.status(probe_port(live, c), live["httpGet"]["path"]) == 200
    _reload(served, served.config)
    _wait(lambda: served.status(rest, ready["httpGet"]["path"]) == 200, timeout=30)


def test_grpc_port_answers_health(served):
    port = served.ports[container_ports(served.container)["grpc"]]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_at_the_annotated_path(served):
    status, text = served.get(served.metrics_port, served.metrics_path)
    assert status == 200, text
    families = {f.name for f in text_string_to_metric_families(text)}
    assert ":tensorflow:cc:saved_model:load_attempt_count" in families


def test_sigterm_ends_within_the_shutdown_grace(served):
    """Last on each server: SIGTERM (after preStop) closes the ports and the process exits
    within --shutdown_grace_seconds, well before the pod's SIGKILL."""
    grace = float(flags(served.container["args"])["shutdown_grace_seconds"])
    proc = served.server.proc
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=grace + 10) == 0
    assert time.monotonic() - start < grace
