"""The Kubernetes manifests in deploy/kubernetes/: valid against the Kubernetes schemas, wired together right.

kubernetes-validate ships the Kubernetes OpenAPI schemas inside its package, so validation runs offline; the
test refuses every network connection while it validates to keep that true.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from meshtrace.proxy.config import load_config
from meshtrace.proxy.istio_config import parse_rules

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(FOLDER.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                out.append((path.name, doc))
    return out


DOCS = _documents()


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network access is not allowed in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_the_expected_objects_are_there() -> None:
    assert sorted(doc["kind"] for _, doc in DOCS) == ["ConfigMap", "Deployment", "Service"]


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{n}:{d['kind']}" for n, d in DOCS])
@pytest.mark.usefixtures("no_network")
def test_valid_against_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    # strict: a field the schema does not define (a typo such as `readinesProbe`) fails too.
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.usefixtures("no_network")
def test_the_validator_rejects_a_broken_manifest() -> None:
    bad = yaml.safe_load(yaml.safe_dump(_one("Deployment")))
    bad["spec"]["template"]["spec"]["containers"][1]["readinesProbe"] = {"httpGet": {"path": "/ready", "port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = yaml.safe_load(yaml.safe_dump(_one("Service")))
    bad["spec"]["ports"][0]["port"] = "ninety"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _containers() -> dict[str, dict[str, Any]]:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def _env(container: dict[str, Any]) -> dict[str, str]:
    """Plain values with `$(VAR)` expanded as the kubelet does; downward-API values as `<fieldPath>`."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
        else:
            env[item["name"]] = "<" + item["valueFrom"]["fieldRef"]["fieldPath"] + ">"
    return env


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_sidecar_env_is_a_valid_config_and_matches_the_ports() -> None:
    sidecar = _containers()["meshtrace"]
    env = _env(sidecar)
    config = load_config({}, environ=env)
    assert config.service == "reviews"
    assert config.version == "v1"
    assert env["POD_NAMESPACE"] == "<metadata.namespace>"
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert config.listen is not None
    assert ports["http-inbound"] == config.listen.port
    assert config.admin is not None
    assert ports["http-admin"] == config.admin.port
    assert config.outbound is not None
    assert config.outbound.is_loopback
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http-admin"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert sidecar["resources"]["requests"]["cpu"]
    assert sidecar["resources"]["requests"]["memory"]
    assert sidecar["securityContext"]["runAsNonRoot"] is True


def test_app_sends_its_calls_through_the_sidecar() -> None:
    containers = _containers()
    app, sidecar = _env(containers["app"]), _env(containers["meshtrace"])
    outbound = sidecar["MESHTRACE_PROXY_OUTBOUND"]
    assert app["HTTP_PROXY"] == f"http://{outbound}"
    assert app["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")
    assert app["OTEL_SERVICE_NAME"] == "reviews"
    assert app["POD_NAMESPACE"] == "<metadata.namespace>"
    assert (app["SERVICE_NAME"], app["SERVICE_VERSION"]) == (sidecar["SERVICE_NAME"], sidecar["SERVICE_VERSION"])
    # The app listens where the sidecar's inbound listener forwards.
    assert sidecar["MESHTRACE_PROXY_UPSTREAM"] in containers["app"]["command"]
    assert containers["app"]["resources"]["requests"]


def test_service_targets_the_sidecar_inbound_port() -> None:
    service = _one("Service")
    pod = _one("Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    inbound = {p["name"]: p["containerPort"] for p in _containers()["meshtrace"]["ports"]}
    listen = _port(_env(_containers()["meshtrace"])["MESHTRACE_PROXY_LISTEN"])
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in inbound
        assert inbound[target] == listen


def test_rules_configmap_is_mounted_at_the_rules_path_and_loads() -> None:
    sidecar = _containers()["meshtrace"]
    rules_path = _env(sidecar)["MESHTRACE_PROXY_RULES"]
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == rules_path)
    volumes = {v["name"]: v for v in _one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    configmap = _one("ConfigMap")
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert configmap["data"]
    for key, text in configmap["data"].items():
        assert key.endswith(".yaml"), "the sidecar reads only *.yaml / *.yml files of the folder"
        rules = parse_rules(text, key)
        assert not rules.empty
        assert rules.warnings == ()
