"""The deployment files in deploy/ agree with the server: the probes and the HAProxy check ask
routes that exist and answer as a load balancer expects, and the time a stop may take covers
the drain. Plain file checks: HAProxy and Kubernetes do not run here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from voice_fsm.app import create_app
from voice_fsm.server import SHUTDOWN_GRACE_S
from voice_fsm.service_settings import ServerSettings

from session_harness import fake_pipeline, make_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DEFAULT_DRAIN_S = ServerSettings.model_fields["drain_s"].default
CLOSE_SESSIONS_S = 1.5
"""What the drain may still spend closing sessions with 1001 (endpoint.py's `drain`)."""


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def server_deployment() -> dict[str, Any]:
    for doc in documents():
        if doc["kind"] == "Deployment" and "serve" in container(doc)["command"]:
            return doc
    raise AssertionError("no Deployment runs `voice-fsm serve`")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def haproxy_lines() -> list[str]:
    lines = (DEPLOY / "haproxy.cfg").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(make_settings(), pipeline=fake_pipeline()))


def test_every_manifest_parses_and_names_its_kind() -> None:
    kinds = sorted((doc["apiVersion"], doc["kind"]) for doc in documents())
    assert kinds == [
        ("apps/v1", "Deployment"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "Service"),
    ]
    for doc in documents():
        assert doc["metadata"]["name"]


def test_services_select_their_deployments_on_a_declared_port() -> None:
    docs = documents()
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matched = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, service["metadata"]["name"]
        port_names = {p["name"] for p in container(matched[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_probes_ask_the_servers_health_routes_on_the_port_it_listens_on(
    client: TestClient,
) -> None:
    box = container(server_deployment())
    listens_on = int(option(box["command"], "--port"))
    (http,) = [p for p in box["ports"] if p["name"] == "http"]
    assert http["containerPort"] == listens_on
    readiness = box["readinessProbe"]["httpGet"]
    liveness = box["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert readiness["port"] == liveness["port"] == "http"
    # The kubelet's probes name the pod's address as Host; the server allows the address it
    # was reached on, and answers 200 on both routes while it takes sessions.
    headers = {"host": "testserver"}
    for path in (readiness["path"], liveness["path"]):
        response = client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)


def test_grace_period_covers_the_prestop_sleep_and_the_drain() -> None:
    deployment = server_deployment()
    box = container(deployment)
    pre_stop = box["lifecycle"]["preStop"]
    sleep_s = float(pre_stop["exec"]["command"][1]) if "exec" in pre_stop else 0.0
    if "sleep" in pre_stop:
        sleep_s = float(pre_stop["sleep"]["seconds"])
    assert sleep_s > 0
    env = {e["name"]: e.get("value") for e in box.get("env", [])}
    drain_s = float(env.get("VOICE_FSM_SERVER__DRAIN_S") or DEFAULT_DRAIN_S)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= sleep_s + drain_s + CLOSE_SESSIONS_S + SHUTDOWN_GRACE_S


def test_haproxy_checks_readyz_with_a_host_the_server_accepts(client: TestClient) -> None:
    lines = haproxy_lines()
    (httpchk,) = [line for line in lines if line.startswith("option httpchk")]
    method, path = httpchk.split()[2:4]
    assert (method, path) == ("GET", "/readyz")
    assert "http-check expect status 200" in lines
    # The server refuses a request without an allowed Host (DNS rebinding), checks included.
    (send,) = [line for line in lines if line.startswith("http-check send")]
    host = re.search(r"hdr Host (\S+)", send)
    assert host is not None
    assert client.get(path, headers={"host": host.group(1)}).status_code == 200
    assert client.get(path, headers={"host": "attacker.example"}).status_code == 403
    assert "balance leastconn" in lines
    assert any(line.startswith("timeout tunnel") for line in lines)


def test_systemd_unit_stops_with_sigterm_and_waits_for_the_drain() -> None:
    text = (DEPLOY / "voice-fsm@.service").read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    assert "serve --port %i" in settings["ExecStart"]
    assert settings["KillSignal"] == "SIGTERM"
    stop_s = float(settings["TimeoutStopSec"].removesuffix("s"))
    assert stop_s >= DEFAULT_DRAIN_S + CLOSE_SESSIONS_S + SHUTDOWN_GRACE_S


def test_engines_placeholder_says_the_command_does_not_exist_yet() -> None:
    text = (KUBERNETES / "engines.yaml").read_text()
    assert "does not exist yet" in text
