"""deploy/k8s: every manifest valid against the Kubernetes schemas (offline, PyPI `kubernetes-validate`), and what
they say agrees with the services: ports, env names (the pydantic settings' aliases), probes, scrape annotations.

The kustomize trees are rendered with `kubectl kustomize` when kubectl is installed; the base files are checked
either way.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from livedub.media.settings import MediaSettings
from livedub.media.sts_link.sts_pool import DNS_PREFIX, StsPoolSettings
from livedub.sts.backends import asr_device
from livedub.sts.fanout import FanoutSettings
from livedub.sts.settings import StsSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TREES = ["base", "overlays/gpu", "overlays/hpa-inflight"]
KUBERNETES_VERSION = "1.30.0"  # the oldest release still supported by the big clouds; newer ones accept these too
Doc = dict[str, Any]


def base_docs() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@cache
def rendered(tree: str) -> list[Doc]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (kustomize) not installed; the base files are checked without it")
    out = subprocess.run(["kubectl", "kustomize", str(K8S / tree)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def aliases(*models: type[BaseSettings]) -> set[str]:
    names: set[str] = set()
    for field in (f for m in models for f in m.model_fields.values()):
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias)
    return names


def named_ports(container: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


# ------------------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("tree", TREES)
def test_rendered_manifests_are_valid(tree: str) -> None:
    docs = rendered(tree)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_base_files_are_valid_and_the_validator_bites() -> None:
    docs = base_docs()
    assert len(docs) >= 10
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(find(docs, "Deployment", "sts"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [3000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomizations_name_existing_files() -> None:
    for tree in TREES:
        kustomization = yaml.safe_load((K8S / tree / "kustomization.yaml").read_text())
        names = kustomization.get("resources", []) + [p["path"] for p in kustomization.get("patches", [])]
        names += [f for g in kustomization.get("configMapGenerator", []) for f in g.get("files", [])]
        for name in names:
            assert (K8S / tree / name).exists(), f"{tree}: {name}"


def test_mediamtx_config_is_the_compose_one() -> None:
    assert (K8S / "base" / "mediamtx.yml").read_text() == (ROOT / "deploy" / "mediamtx.yml").read_text()


# ------------------------------------------------------------------------------------------------ wiring


def test_services_select_pods_and_target_their_ports() -> None:
    docs = base_docs()
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        [pod] = [
            d["spec"]["template"]
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = {name: port for c in pod["spec"]["containers"] for name, port in named_ports(c).items()}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"
            assert ports[port["targetPort"]] == port["port"], "service and container ports are the same numbers"
    for deployment in deployments:
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_probes_and_scrape_annotations_use_real_ports_and_paths() -> None:
    from livedub.media.service.app import create_app as media_app
    from livedub.sts.pipeline import EchoPipeline
    from livedub.sts.server import create_app as sts_app

    def paths(app: Any) -> set[str]:
        return {path for route in app.routes if isinstance(path := getattr(route, "path", None), str)}

    routes = {
        "sts": paths(sts_app(EchoPipeline(), StsSettings(_env_file=None)).app.other_asgi_app),  # type: ignore[call-arg]
        "media-service": paths(media_app(MediaSettings(_env_file=None))),  # type: ignore[call-arg]
        "mediamtx": {"/v3/paths/list"},  # MediaMTX's control API (api: true in mediamtx.yml)
    }
    for deployment, container in containers(base_docs()):
        name = deployment["metadata"]["name"]
        ports = named_ports(container)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container.get(probe)
            if spec is None:
                continue
            action = spec.get("httpGet") or spec.get("tcpSocket")
            if action is not None:
                assert action["port"] in ports, f"{name} {probe}"
            if "httpGet" in spec:
                assert spec["httpGet"]["path"] in routes[name], f"{name} {probe}"
        assert container.get("readinessProbe"), f"{name} has no readiness probe"
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            assert int(annotations["prometheus.io/port"]) in ports.values()
            if name in ("sts", "media-service"):
                assert annotations["prometheus.io/path"] in routes[name]
        command = container.get("command", [])
        if "--port" in command:
            assert int(command[command.index("--port") + 1]) == ports["http"]
    sts = find(base_docs(), "Deployment", "sts")["spec"]["template"]["spec"]["containers"][0]
    assert sts["readinessProbe"]["httpGet"]["path"] == "/health"


def test_env_names_are_settings_the_services_read() -> None:
    known = {
        "sts": aliases(StsSettings, FanoutSettings),
        "media-service": aliases(MediaSettings, StsPoolSettings),
        "mediamtx": {"MEDIA_HOOK_SECRET", "MTX_AUTHHTTPADDRESS"},  # the hooks' variable; MediaMTX's MTX_* override
    }
    for tree in ["base"] + (TREES[1:] if shutil.which("kubectl") else []):
        docs = rendered(tree) if tree != "base" else base_docs()
        for deployment, container in containers(docs):
            name = deployment["metadata"]["name"]
            if name == "redis":
                continue
            unknown = set(env(container)) - known[name]
            assert not unknown, f"{tree} {name}: {unknown}"
            for value in env(container).values():
                secret = value.get("valueFrom", {}).get("secretKeyRef")
                if secret is not None:
                    assert secret["name"] == "livedub-secrets" and secret["key"] == value["name"]


def literal_env(container: Doc) -> dict[str, str]:
    return {name: e["value"] for name, e in env(container).items() if "value" in e}


def test_literal_values_parse_as_the_settings() -> None:
    for tree in ["base", "overlays/gpu"]:
        docs = base_docs() if tree == "base" else rendered(tree)
        sts = find(docs, "Deployment", "sts")["spec"]["template"]["spec"]["containers"][0]
        media = find(docs, "Deployment", "media-service")["spec"]["template"]["spec"]["containers"][0]
        sts_settings = StsSettings.model_validate({**literal_env(sts), "_env_file": None})
        assert FanoutSettings.model_validate(literal_env(sts)).redis_url.startswith("redis://")
        MediaSettings.model_validate({**literal_env(media), "_env_file": None})
        assert StsPoolSettings.model_validate(literal_env(media)).sts_service_urls
        if tree == "overlays/gpu":
            # Whisper's device (STS_ASR_DEVICE, else STS_DEVICE) is cuda, and so is every other model's.
            assert asr_device(sts_settings) == "cuda" and sts_settings.device == "cuda"
        else:
            assert sts_settings.device == "auto"  # the base: the GPU when there is one, the CPU path otherwise


def test_urls_point_at_services_and_their_ports() -> None:
    docs = base_docs()
    services = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} | {p["name"] for p in d["spec"]["ports"]}
        for d in docs
        if d["kind"] == "Service"
    }
    media = literal_env(find(docs, "Deployment", "media-service")["spec"]["template"]["spec"]["containers"][0])
    sts = literal_env(find(docs, "Deployment", "sts")["spec"]["template"]["spec"]["containers"][0])
    mediamtx = literal_env(find(docs, "Deployment", "mediamtx")["spec"]["template"]["spec"]["containers"][0])
    for url in (
        media["STS_SERVICE_URLS"].removeprefix(DNS_PREFIX),
        media["STS_SERVICE_URL"],
        media["RTMP_BASE_URL"],
        sts["REDIS_URL"],
        mediamtx["MTX_AUTHHTTPADDRESS"],
    ):
        parsed = urlparse(url)
        assert parsed.hostname in services and parsed.port in services[parsed.hostname], url
    assert find(docs, "Service", "sts-pods")["spec"]["clusterIP"] == "None"  # DNS lists every ready pod
    config = yaml.safe_load((K8S / "base" / "mediamtx.yml").read_text())
    ports = named_ports(find(docs, "Deployment", "mediamtx")["spec"]["template"]["spec"]["containers"][0])
    assert config["rtmpAddress"] == f":{ports['rtmp']}" and config["apiAddress"] == f":{ports['api']}"
    assert config["metricsAddress"] == f":{ports['metrics']}"
    assert "http://media-service:8080/" in config["authHTTPAddress"]


def test_gpu_overlay_asks_for_a_gpu_and_the_hpa_targets_the_sts() -> None:
    docs = rendered("overlays/gpu")
    pod = find(docs, "Deployment", "sts")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # the base's probes survive the patch
    for tree in TREES:
        hpa = find(rendered(tree), "HorizontalPodAutoscaler", "sts")
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sts"}
    [metric] = find(rendered("overlays/hpa-inflight"), "HorizontalPodAutoscaler", "sts")["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "sts_fragments_inflight"


def test_gpu_overlay_runs_every_model_on_the_gpu_image() -> None:
    """STS_DEVICE=cuda on the GPU image (llama.cpp built with CUDA, onnxruntime-gpu, CUDA 12 / cuDNN 9 for
    CTranslate2); the media-service keeps the CPU image, and the CPU image stays CPU-only."""
    docs = rendered("overlays/gpu")
    [sts] = find(docs, "Deployment", "sts")["spec"]["template"]["spec"]["containers"]
    [media] = find(docs, "Deployment", "media-service")["spec"]["template"]["spec"]["containers"]
    assert literal_env(sts)["STS_DEVICE"] == "cuda" and "STS_ASR_DEVICE" not in literal_env(sts)
    assert sts["image"].startswith("livedub-gpu") and media["image"].startswith("livedub:")
    gpu_image = (ROOT / "deploy" / "Dockerfile.gpu").read_text()
    assert "-DGGML_CUDA=on" in gpu_image  # llama.cpp offloads its layers
    assert "pip uninstall -y onnxruntime" in gpu_image and "onnxruntime-gpu" in gpu_image
    assert "nvidia-cublas-cu12" in gpu_image and "nvidia-cudnn-cu12" in gpu_image  # CTranslate2 and onnxruntime
    assert (ROOT / "deploy" / "Dockerfile.gpu.dockerignore").is_file()
    cpu_image = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "GGML_CUDA" not in cpu_image and "onnxruntime-gpu" not in cpu_image
