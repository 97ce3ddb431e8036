"""The Dockerfile, deploy/compose.yaml and deploy/k8s agree with the gateway: every
IBGW_* / IBKR_* name they set is a real setting, ports line up, probes ask real health
services, and nothing publishes the trading port beyond loopback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices

from ibgateway.v1 import orders_pb2
from ibgateway_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
K8S = {
    doc["kind"]: doc
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc
}
# read by the client-side commands (ibgw health / quotes / orders / positions, check)
CLIENT_SIDE = {
    "IBGW_TOKEN",
    "IBGW_TLS_CA",
    "IBGW_TLS_CLIENT_CERT",
    "IBGW_TLS_CLIENT_KEY",
    "IBGW_TLS_SERVER_NAME",
}


def _setting_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str) and c.isupper())
    return names


def _image_env() -> dict[str, str]:
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE, re.M)
    assert block is not None
    return dict(re.findall(r"(\w+)=(\S+)", block.group(1)))


def test_every_variable_set_is_a_real_setting() -> None:
    known = _setting_names() | CLIENT_SIDE
    texts = [DOCKERFILE, *(p.read_text() for p in (ROOT / "deploy").rglob("*.yaml"))]
    found = {name for text in texts for name in re.findall(r"\b(IB(?:GW|KR)_[A-Z0-9_]+)", text)}
    used = {name for name in found if not name.endswith("_")}  # IBGW_TLS_* in prose
    assert used, "no settings found"
    assert used <= known, f"not settings: {sorted(used - known)}"
    assert {"IBGW_LISTEN", "IBGW_METRICS_HOST", "IBGW_METRICS_PORT"} <= set(_image_env())


def test_the_image_runs_on_its_settings_only() -> None:
    env = _image_env()
    assert env["IBGW_LISTEN"] == "0.0.0.0:50051" and env["IBGW_METRICS_HOST"] == "0.0.0.0"
    # no flag on the command line overrides an -e IBGW_... setting
    assert re.search(r'^CMD \["serve"\]$', DOCKERFILE, re.M)
    assert re.search(r'^ENTRYPOINT \["ibgw"\]$', DOCKERFILE, re.M)
    assert re.search(r'CMD \["ibgw", "health", "--quiet"\]', DOCKERFILE)
    exposed = re.search(r"^EXPOSE (.*)$", DOCKERFILE, re.M)
    assert exposed is not None and exposed.group(1).split() == ["50051", env["IBGW_METRICS_PORT"]]
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.M)


def test_compose_publishes_on_loopback_only() -> None:
    ports = [p for s in COMPOSE["services"].values() for p in s.get("ports", [])]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports)
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"ibgateway:{_image_env()['IBGW_METRICS_PORT']}"]
    assert "profiles" in COMPOSE["services"]["ib-gateway"]  # never started by default


def test_kubernetes_probes_ports_and_secrets() -> None:
    deployment: dict[str, Any] = K8S["Deployment"]
    assert deployment["spec"]["replicas"] == 1  # one IB client id: never two pods
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": int(_image_env()["IBGW_METRICS_PORT"])}
    assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": ""}
    readiness = container["readinessProbe"]["grpc"]
    assert readiness["service"] == orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
    env = {e["name"]: e for e in container["env"]}
    assert "IBGW_AUTH_TOKENS" not in env  # tokens come from the Secret, as a file
    tokens_dir = env["IBGW_AUTH_TOKENS_FILE"]["value"].rsplit("/", 1)[0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tokens"] == tokens_dir and "secret" in volumes["tokens"]
    service_ports = {p["name"]: p["port"] for p in K8S["Service"]["spec"]["ports"]}
    assert service_ports == ports
    policy = K8S["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    grpc_from = policy["ingress"][0]
    assert grpc_from["ports"] == [{"port": 50051, "protocol": "TCP"}]


def test_readme_docker_examples_publish_on_loopback() -> None:
    readme = (ROOT / "README.md").read_text()
    published = re.findall(r"(?:-p|--publish) (\S+)", readme)
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
