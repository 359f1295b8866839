"""The deployment files in deploy/ agree with the server and the engines they run: the
Kubernetes manifests pass the Kubernetes schemas; probes, health checks and HAProxy checks ask
routes that answer as a load balancer expects; every command is one the CLI takes and every
variable one the settings read; the servers use the engines alone, at the address and with the
key and model names the engines take; the autoscaler's metric is the server's live-sessions
gauge, which Debian's Prometheus gives back per pod through prometheus-adapter's query; and the
time a stop may take covers the drain. Kubernetes and Docker do not run here: their files are
checked against the real apps, and compose's HAProxy configuration by HAProxy (`haproxy -c`)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from voice_fsm.app import create_app
from voice_fsm.cli_parser import build_parser
from voice_fsm.engines.app import create_engines_app
from voice_fsm.engines.command import STOP_GRACE_S as ENGINES_STOP_GRACE_S
from voice_fsm.providers import resolve_providers, resolve_speech
from voice_fsm.server import SHUTDOWN_GRACE_S
from voice_fsm.service_settings import ServerSettings
from voice_fsm.settings import Settings, setting_names

from session_harness import fake_pipeline, make_settings
from support.haproxy import check_config, find_haproxy
from support.prometheus import Prometheus, fake_server, prometheus_with_config, voice_client

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
DEFAULT_DRAIN_S = ServerSettings.model_fields["drain_s"].default
CLOSE_SESSIONS_S = 1.5
"""What the drain may still spend closing sessions with 1001 (endpoint.py's `drain`)."""
STAGES = ("stt", "llm", "tts")
NOT_SETTINGS = {"XDG_CACHE_HOME"}
"""Variables the manifests set for the libraries under the engines, not for voice-fsm."""
COMPOSE_ENV = {
    "VOICE_FSM_API_KEYS": "clients-key-0123456789",
    "ENGINES_API_KEY": "engines-key-0123456789",
}
"""What a user exports before `docker compose up` (deploy/compose.yaml's header)."""


# --- reading the files -------------------------------------------------------------------


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def deployment_running(command: str) -> dict[str, Any]:
    for doc in of_kind("Deployment"):
        if container(doc)["command"][1] == command:
            return doc
    raise AssertionError(f"no Deployment runs `voice-fsm {command}`")


def server_deployment() -> dict[str, Any]:
    return deployment_running("serve")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet gives it, with a stand-in per Secret key (the
    same Secret key gives the same value, as in a cluster)."""
    env: dict[str, str] = {}
    for entry in container(deployment).get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = f"secret-{ref['name']}-{ref['key']}-0123456789"
    return env


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def seconds(duration: str | int | float) -> float:
    """A compose duration ("20s", "1m30s") or a number of seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert duration, "an empty duration"
    assert parts is not None, duration
    return int(parts.group(1) or 0) * 60 + float(parts.group(2) or 0)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator == ":?":
            raise KeyError(f"{name}: {argument}")
        return argument or ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", value, text)


def compose(env: Mapping[str, str] = COMPOSE_ENV) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), env))
    return loaded


def compose_services(command: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("command", [None, None])[1] == command
    }


def config_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def haproxy_lines() -> list[str]:
    return config_lines(DEPLOY / "haproxy.cfg")


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings a process started with exactly `env` reads."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("VOICE_FSM_", "OPENAI_")):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def assert_uses_only_the_engines(
    server: Settings, engines: Settings, host: str | None, port: int
) -> None:
    """Every model `server` asks for is at the engines (`host`:`port`), with a key and a model
    name the engines take; and their key goes nowhere else."""
    assert resolve_providers(server) == dict.fromkeys(STAGES, "openai")
    for name in STAGES:
        stage = getattr(server, name)
        url = urlsplit(server.base_url_for(stage))
        assert (url.hostname, url.port, url.path) == (host, port, "/v1"), name
        assert server.api_key_for(stage) in engines.auth.secret_values(), name
    # The engines answer to the model names their own settings give the stages' provider
    # openai (engines/loading.py): the servers ask for the same.
    assert (server.stt.model, server.llm.model) == (engines.stt.model, engines.llm.model)
    assert server.tts.model_for("openai") == engines.tts.model_for("openai")
    # Speech-to-speech would go to OpenAI's own Realtime API, with OPENAI_API_KEY.
    assert resolve_speech(server) is None


def parsed_command(command: list[str]) -> Any:
    """`voice-fsm ...` as the CLI parses it (exits 2 on an unknown command or option)."""
    assert command[0] == "voice-fsm"
    return build_parser().parse_args(command[1:])


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(make_settings(), pipeline=fake_pipeline()))


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc", documents(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}"
)
def test_every_manifest_passes_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    # Strict: a misspelt field fails too. A kind without a schema (a custom resource) would
    # raise SchemaNotFoundError here, where the command line only warns.
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(server_deployment())
    spec = broken["spec"]["template"]["spec"]
    spec["terminationGracePeriod"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_manifests_hold_the_server_the_engines_and_the_autoscaler() -> None:
    kinds = sorted((doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) for doc in documents())
    assert kinds == [
        ("apps/v1", "Deployment", "voice-fsm"),
        ("apps/v1", "Deployment", "voice-fsm-engines"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "voice-fsm"),
        ("policy/v1", "PodDisruptionBudget", "voice-fsm"),
        ("v1", "ConfigMap", "adapter-config"),
        ("v1", "Service", "voice-fsm"),
        ("v1", "Service", "voice-fsm-engines"),
    ]


def test_services_select_their_deployments_on_a_declared_port() -> None:
    deployments = of_kind("Deployment")
    for service in of_kind("Service"):
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


def test_every_container_runs_a_real_command_on_the_port_it_declares() -> None:
    for deployment in of_kind("Deployment"):
        box = container(deployment)
        args = parsed_command(box["command"])
        (http,) = [p for p in box["ports"] if p["name"] == "http"]
        assert args.port == http["containerPort"]
        # On 0.0.0.0 both commands refuse to start without keys: the pods have them.
        assert args.host == "0.0.0.0"
        assert settings_from(pod_env(deployment)).auth.api_keys


def test_every_variable_is_a_setting_and_every_value_a_valid_one() -> None:
    known = setting_names() | {"OPENAI_API_KEY", "OPENAI_BASE_URL"} | NOT_SETTINGS
    for deployment in of_kind("Deployment"):
        env = pod_env(deployment)
        assert set(env) <= known, set(env) - known
        settings_from(env)  # raises on a value the settings refuse


def test_probes_ask_the_servers_health_routes_on_the_port_it_listens_on(
    client: TestClient,
) -> None:
    box = container(server_deployment())
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


def test_the_engines_get_time_to_load_their_models_before_they_take_requests() -> None:
    box = container(deployment_running("engines"))
    startup = box["startupProbe"]
    assert startup["httpGet"]["path"] == box["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert box["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The liveness probe only starts once /readyz answered: give loading minutes, not seconds.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_the_engines_answer_their_probes_prometheus_and_the_servers_requests() -> None:
    engines = deployment_running("engines")
    box = container(engines)
    server = settings_from(pod_env(server_deployment()))
    # Not started: the models are still loading.
    app = create_engines_app(settings_from(pod_env(engines)))
    pod = TestClient(app, headers={"host": "testserver"})
    # The kubelet's probes: the startup probe waits, the liveness probe is content.
    assert pod.get(box["startupProbe"]["httpGet"]["path"]).status_code == 503
    assert pod.get(box["livenessProbe"]["httpGet"]["path"]).status_code == 200
    assert pod.get("/metrics").status_code == 200  # Prometheus, without a key
    # A server's request, by the Service's name, is let through with its key, and only so.
    for name in STAGES:
        stage = getattr(server, name)
        url = urlsplit(server.base_url_for(stage))
        models = f"{url.path}/models"
        assert pod.get(models, headers={"host": url.netloc}).status_code == 401
        key = {"host": url.netloc, "authorization": f"Bearer {server.api_key_for(stage)}"}
        assert pod.get(models, headers=key).status_code not in (401, 403)


def test_grace_period_covers_the_prestop_sleep_and_the_drain() -> None:
    deployment = server_deployment()
    pre_stop = container(deployment)["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep_s = float(pre_stop["sleep"]["seconds"])
    else:
        assert pre_stop["exec"]["command"][0] == "sleep"
        sleep_s = float(pre_stop["exec"]["command"][1])
    assert sleep_s > 0
    drain_s = settings_from(pod_env(deployment)).server.drain_s
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= sleep_s + drain_s + CLOSE_SESSIONS_S + SHUTDOWN_GRACE_S


def test_the_engines_grace_period_lets_requests_in_flight_finish() -> None:
    deployment = deployment_running("engines")
    (_, sleep_s) = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(sleep_s) + ENGINES_STOP_GRACE_S


def test_the_servers_use_the_engines_service_alone_with_a_key_the_engines_take() -> None:
    server = settings_from(pod_env(server_deployment()))
    engines_deployment = deployment_running("engines")
    engines = settings_from(pod_env(engines_deployment))
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "voice-fsm-engines"]
    (service_port,) = service["spec"]["ports"]
    assert_uses_only_the_engines(server, engines, "voice-fsm-engines", service_port["port"])
    # The Service forwards to the port `voice-fsm engines` listens on.
    listens_on = int(option(container(engines_deployment)["command"], "--port"))
    (http,) = container(engines_deployment)["ports"]
    assert service_port["targetPort"] == http["name"]
    assert http["containerPort"] == listens_on


def test_the_autoscaler_scales_the_servers_on_a_gauge_of_their_live_sessions() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    deployment = server_deployment()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    # The autoscaler owns the count: a fixed one would be put back at every `kubectl apply`.
    assert "replicas" not in deployment["spec"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    per_pod = float(metric["pods"]["target"]["averageValue"])

    # What the pod's /metrics says with one session open: Prometheus scrapes it without a key
    # (the pods have keys), and the figure counts the session.
    env = pod_env(deployment)
    settings = settings_from(env)
    key = settings.auth.secret_values()[0]
    app = create_app(settings, pipeline=fake_pipeline())
    with TestClient(app, headers={"host": "testserver"}) as pod:
        assert pod.get("/metrics").status_code == 200
        with pod.websocket_connect("/ws", headers={"authorization": f"Bearer {key}"}):
            families = {f.name: f for f in text_string_to_metric_families(pod.get("/metrics").text)}
    assert families[name].type == "gauge"
    assert [sample.value for sample in families[name].samples] == [1]
    # Pods are added well before one is full (full pods get no new sessions).
    assert per_pod < settings.limits.max_sessions
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_autoscaler_removes_one_pod_at_a_time_after_its_drain() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    grace = server_deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= grace
    for policy in down["policies"]:
        assert (policy["type"], policy["value"]) == ("Pods", 1)
        assert policy["periodSeconds"] >= grace


def test_prometheus_adapter_serves_the_autoscalers_metric_per_pod() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    wanted = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    (config_map,) = of_kind("ConfigMap")
    (rule,) = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"].startswith(wanted + "{")
    assert re.fullmatch(rule["name"]["matches"], wanted)
    assert rule["name"]["as"] == wanted
    # Per pod: the series' namespace and pod labels name the objects the autoscaler asks about.
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"]
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]
    # Prometheus finds the pods' /metrics by their annotations.
    for deployment in of_kind("Deployment"):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert (
            int(annotations["prometheus.io/port"])
            == container(deployment)["ports"][0]["containerPort"]
        )


@contextmanager
def prometheus_scraping_pods(workdir: Path, pods: Mapping[str, str]) -> Iterator[Prometheus]:
    """Debian's Prometheus scraping each pod's address (name -> host:port) every second, its
    series labelled with `namespace` and `pod` as the `kubernetes-pods` job labels them."""
    targets = "".join(
        f"      - targets: ['{address}']\n        labels: {{namespace: default, pod: {name}}}\n"
        for name, address in pods.items()
    )
    (workdir / "prometheus.yml").write_text(
        "scrape_configs:\n  - job_name: kubernetes-pods\n    scrape_interval: 1s\n"
        f"    scrape_timeout: 1s\n    static_configs:\n{targets}"
    )
    with prometheus_with_config(workdir) as prometheus:
        yield prometheus


def adapter_query(rule: dict[str, Any], pods: list[str]) -> str:
    """The rule's metricsQuery as prometheus-adapter renders it when the autoscaler asks for
    the metric of `pods` (namespace default)."""
    matchers = f'namespace="default",pod=~"{"|".join(pods)}"'
    query: str = rule["metricsQuery"]
    return (
        query.replace("<<.Series>>", rule["name"]["as"])
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )


@pytest.mark.integration
@pytest.mark.prometheus
def test_prometheus_adapters_query_gives_each_pods_live_sessions(tmp_path: Path) -> None:
    (config_map,) = of_kind("ConfigMap")
    (rule,) = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    sessions = {"voice-fsm-a": 2, "voice-fsm-b": 1}
    with ExitStack() as stack:
        servers = {}
        for pod in sessions:
            (tmp_path / pod).mkdir()
            servers[pod] = stack.enter_context(fake_server(tmp_path / pod))
        for pod, count in sessions.items():
            for _ in range(count):
                stack.enter_context(voice_client(servers[pod].ws_url))
        prometheus = stack.enter_context(
            prometheus_scraping_pods(
                tmp_path, {pod: urlsplit(server.url).netloc for pod, server in servers.items()}
            )
        )
        # What the adapter lists (seriesQuery), then what it answers per pod (metricsQuery),
        # once Prometheus has scraped both pods.
        query = adapter_query(rule, list(sessions))
        prometheus.wait_until(f"count({query})", lambda found: found == len(sessions))
        listed = httpx.get(
            f"{prometheus.url}/api/v1/series", params={"match[]": rule["seriesQuery"]}, timeout=10
        ).json()["data"]
        answered = {r["metric"]["pod"]: float(r["value"][1]) for r in prometheus.query(query)}
    assert {series["pod"] for series in listed} == set(sessions)
    assert answered == sessions


def test_the_disruption_budget_keeps_all_but_one_server_pod() -> None:
    (budget,) = of_kind("PodDisruptionBudget")
    labels = server_deployment()["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


# --- compose ---------------------------------------------------------------------------------


def test_compose_refuses_to_start_without_the_keys() -> None:
    for missing in COMPOSE_ENV:
        env = {name: value for name, value in COMPOSE_ENV.items() if name != missing}
        with pytest.raises(KeyError, match=missing):
            compose(env)


def test_compose_runs_two_servers_and_the_engines_with_real_commands_and_settings() -> None:
    services = compose()["services"]
    assert set(compose_services("serve")) == {"serve1", "serve2"}
    assert set(compose_services("engines")) == {"engines"}
    known = setting_names() | {"OPENAI_API_KEY", "OPENAI_BASE_URL"} | NOT_SETTINGS
    for name in ("serve1", "serve2", "engines"):
        service = services[name]
        args = parsed_command(service["command"])
        assert args.host == "0.0.0.0"
        env = service["environment"]
        assert set(env) <= known, set(env) - known
        assert settings_from(env).auth.api_keys, name


def test_compose_servers_use_the_engines_alone_with_a_key_they_take_once_they_are_ready() -> None:
    ((engines_name, engines_service),) = compose_services("engines").items()
    engines = settings_from(engines_service["environment"])
    engines_port = parsed_command(engines_service["command"]).port
    for service in compose_services("serve").values():
        server = settings_from(service["environment"])
        assert_uses_only_the_engines(server, engines, engines_name, engines_port)
        assert service["depends_on"][engines_name] == {"condition": "service_healthy"}


def test_compose_health_checks_ask_real_routes_on_the_port_each_listens_on(
    client: TestClient,
) -> None:
    for name, service in compose()["services"].items():
        if "command" not in service:
            continue
        check = " ".join(service["healthcheck"]["test"])
        found = re.search(r"http://localhost:(\d+)(/\w+)", check)
        assert found is not None, name
        port, path = int(found.group(1)), found.group(2)
        assert port == parsed_command(service["command"]).port, name
        if service["command"][1] == "serve":
            assert client.get(path, headers={"host": f"localhost:{port}"}).status_code == 200
        else:
            # The engines are healthy once their models are loaded, as in Kubernetes.
            probe = container(deployment_running("engines"))["startupProbe"]["httpGet"]
            assert path == probe["path"]


def test_compose_stops_wait_for_the_drain() -> None:
    for name, service in compose_services("serve").items():
        assert service["stop_signal"] == "SIGTERM"
        drain_s = settings_from(service["environment"]).server.drain_s
        grace_s = seconds(service["stop_grace_period"])
        assert grace_s >= drain_s + CLOSE_SESSIONS_S + SHUTDOWN_GRACE_S, name
    for name, service in compose_services("engines").items():
        assert service["stop_signal"] == "SIGTERM"
        assert seconds(service["stop_grace_period"]) > ENGINES_STOP_GRACE_S, name


def test_compose_haproxy_config_is_one_haproxy_takes() -> None:
    result = check_config(find_haproxy(), DEPLOY / "compose-haproxy.cfg")
    assert result.returncode == 0, result.stderr
    # The only warnings: the compose services' names, which resolve inside compose only.
    warnings = [line for line in result.stderr.splitlines() if "[WARNING]" in line]
    services = set(compose()["services"])
    for line in warnings:
        unresolved = re.search(r"could not resolve address '(\w+)'", line)
        assert unresolved is not None, line
        assert unresolved.group(1) in services, line


def test_compose_haproxy_balances_the_servers_as_the_shipped_config_does() -> None:
    spec = compose()
    haproxy = spec["services"]["haproxy"]
    (mount,) = haproxy["volumes"]
    source, target, _ = mount.split(":")
    assert (DEPLOY / source).resolve() == (DEPLOY / "compose-haproxy.cfg").resolve()
    assert target == "/usr/local/etc/haproxy/haproxy.cfg"  # where the official image reads it
    lines = config_lines(DEPLOY / "compose-haproxy.cfg")

    # One server line per serve service, on the port it listens on.
    servers = {
        line.split()[2] for line in lines if line.startswith("server ") and len(line.split()) > 2
    }
    expected = {
        f"{name}:{parsed_command(s['command']).port}"
        for name, s in compose_services("serve").items()
    }
    assert servers == expected
    # The published port is the one HAProxy binds.
    (bind,) = [line for line in lines if line.startswith("bind ")]
    (published,) = haproxy["ports"]
    assert published.rsplit(":", 1)[1] == bind.split(":")[-1]
    # The same checks, balancing and timeouts as deploy/haproxy.cfg (which the HAProxy test runs).
    for prefix in (
        "option httpchk",
        "http-check",
        "balance",
        "timeout",
        "retr",
        "option redispatch",
    ):
        shipped = [line for line in haproxy_lines() if line.startswith(prefix)]
        assert shipped, prefix
        assert shipped == [line for line in lines if line.startswith(prefix)], prefix

    # The servers believe X-Forwarded-For from HAProxy's fixed address, and from it alone.
    address = haproxy["networks"]["default"]["ipv4_address"]
    (subnet,) = spec["networks"]["default"]["ipam"]["config"]
    assert ip_address(address) in ip_network(subnet["subnet"])
    for service in compose_services("serve").values():
        assert settings_from(service["environment"]).server.trusted_proxies == [address]


# --- HAProxy and systemd ---------------------------------------------------------------------


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
