"""deploy/kubernetes: valid against the Kubernetes schema, and consistent with the app."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from nessen.config import Config
from nessen.observability import HEALTH_PATHS, METRICS_PATH
from nessen.server.supervisor import KILL_GRACE
from tests.deploy.manifests import (
    APP,
    KUBERNETES,
    app_container,
    container_env,
    container_port,
    kubernetes_files,
    kubernetes_resources,
    load_yaml_documents,
    resource,
)

KUBERNETES_VERSIONS = ("1.29", "1.37")
"""The oldest and newest minor versions whose schemas we check against (both bundled)."""
GRACE_MARGIN = 5
"""Seconds of slack between the last moment Nessen can exit and the kubelet's SIGKILL."""
INGRESS_NGINX_UPSTREAM_KEEPALIVE_TIMEOUT = 60.0
"""ingress-nginx's default ``upstream-keepalive-timeout`` in seconds (its ConfigMap docs)."""


def import_kubernetes_validate() -> Any:
    """kubernetes-validate (offline schemas for every minor version); in the test extra."""
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is missing: pip install -e '.[test]'"
    )


def app_config() -> Config:
    return Config.from_env(container_env(app_container()))


@pytest.mark.parametrize("path", kubernetes_files(), ids=lambda p: p.name)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    kubernetes_validate = import_kubernetes_validate()
    documents = load_yaml_documents(path)
    assert documents
    for document in documents:
        # strict: an unknown or misspelt field (say `readinesProbe`) fails instead of being
        # ignored the way the API server would drop it.
        kubernetes_validate.validate(document, version, strict=True)


def test_schema_validation_rejects_a_misplaced_field() -> None:
    kubernetes_validate = import_kubernetes_validate()
    deployment = resource("Deployment", APP)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_yaml_documents(KUBERNETES / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == [p.name for p in kubernetes_files()]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_all_resources() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    names = sorted((r["kind"], r["metadata"]["name"]) for r in rendered)
    assert names == sorted((r["kind"], r["metadata"]["name"]) for r in kubernetes_resources())


def test_every_resource_is_in_one_namespace() -> None:
    (namespace,) = (r for r in kubernetes_resources() if r["kind"] == "Namespace")
    for r in kubernetes_resources():
        if r["kind"] != "Namespace":
            assert r["metadata"]["namespace"] == namespace["metadata"]["name"], r["kind"]


def test_probes_ask_the_apps_endpoints_on_the_apps_port() -> None:
    container = app_container()
    config = app_config()
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert liveness["path"] != readiness["path"]
    for probe in (liveness, readiness):
        # Served by the runtime, and answered whatever the Host field says (the kubelet sends
        # the pod IP): ALLOWED_HOSTS would otherwise turn the probes into 400s.
        assert probe["path"] in HEALTH_PATHS
        assert probe["path"] in config.probe_paths
        assert container_port(container, probe["port"]) == config.port
    # Which one is liveness and which readiness is checked against the running app in
    # test_dockerfile.py: the liveness path stays 200 while draining, readiness turns 503.


def test_service_and_ingress_reach_the_app_port() -> None:
    container = app_container()
    service = resource("Service", APP)
    pod_labels = resource("Deployment", APP)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert container_port(container, port["targetPort"]) == app_config().port
    (rule,) = resource("Ingress", APP)["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert (
        backend["port"].get("name") == port["name"]
        or backend["port"].get("number") == (port["port"])
    )


def test_prometheus_scrapes_the_admin_port_which_only_monitoring_reaches() -> None:
    container = app_container()
    config = app_config()
    assert config.admin_port is not None
    assert config.admin_port != config.port
    annotations = resource("Deployment", APP)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == config.admin_port
    assert annotations["prometheus.io/path"] == METRICS_PATH
    # The Service, and so the Ingress, exposes the app's port only.
    service_ports = resource("Service", APP)["spec"]["ports"]
    assert [container_port(container, p["targetPort"]) for p in service_ports] == [config.port]
    # Each namespace may reach only its own port: the ingress controller the app, monitoring
    # the admin listener.
    reachable: dict[str, set[int]] = {}
    for rule in resource("NetworkPolicy", APP)["spec"]["ingress"]:
        ports = {container_port(container, p["port"]) for p in rule["ports"]}
        for peer in rule["from"]:
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            reachable.setdefault(namespace, set()).update(ports)
    assert reachable == {"ingress-nginx": {config.port}, "monitoring": {config.admin_port}}


def test_termination_grace_period_covers_prestop_and_the_drain() -> None:
    pod = resource("Deployment", APP)["spec"]["template"]["spec"]
    container = app_container()
    config = app_config()
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        pre_stop_seconds = float(pre_stop["sleep"]["seconds"])
    elif "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", command
        assert len(command) == 2, command
        pre_stop_seconds = float(command[1])
    else:
        pre_stop_seconds = 0.0
    # The delay belongs in one place: preStop, or SHUTDOWN_DELAY. Both would wait twice.
    assert pre_stop_seconds == 0 or config.shutdown_delay == 0
    # SHUTDOWN_TIMEOUT counts SHUTDOWN_DELAY in; a delay as long leaves no time to drain.
    assert config.shutdown_delay < config.shutdown_timeout
    # The last moment the process can still be running after SIGTERM: one process exits
    # within SHUTDOWN_TIMEOUT; a supervisor waits up to SHUTDOWN_TIMEOUT + SHUTDOWN_DELAY +
    # KILL_GRACE for a worker that overruns its drain.
    if config.workers > 1 or config.max_requests_per_worker:
        after_sigterm = config.shutdown_timeout + config.shutdown_delay + KILL_GRACE
    else:
        after_sigterm = config.shutdown_timeout
    # The kubelet counts the grace period from the start of preStop, SIGTERM comes after it.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_seconds + after_sigterm + GRACE_MARGIN


def test_idle_timeout_is_above_the_ingress_controllers_keepalive() -> None:
    # The proxy must close idle upstream connections, never Nessen (deploy/nginx/nessen.conf).
    assert app_config().idle_timeout > INGRESS_NGINX_UPSTREAM_KEEPALIVE_TIMEOUT


def test_ingress_timeouts_and_body_limit_agree_with_the_app() -> None:
    annotations = resource("Ingress", APP)["metadata"]["annotations"]
    config = app_config()
    prefix = "nginx.ingress.kubernetes.io/"
    assert float(annotations[prefix + "proxy-read-timeout"]) > config.request_timeout
    # A WebSocket's tunnel stays open while Nessen pings it more often than that.
    assert float(annotations[prefix + "proxy-read-timeout"]) > config.ws_ping_interval > 0
    body = annotations[prefix + "proxy-body-size"].lower()
    units = {"k": 1024, "m": 1024 * 1024}
    assert int(body[:-1]) * units[body[-1]] == config.max_body_bytes


def test_pods_run_unprivileged_on_a_read_only_root_with_a_writable_tmp() -> None:
    for name in (APP, "nessen-redis"):
        pod = resource("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]
            assert container["resources"]["requests"]
    pod = resource("Deployment", APP)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = (m for m in app_container()["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


def test_redis_url_names_the_redis_service_and_the_network_policy_lets_it_through() -> None:
    config = app_config()
    assert config.rate_limit_store == "redis"
    assert config.redis_url is not None
    url = urlsplit(config.redis_url)
    service = resource("Service", url.hostname or "")
    (port,) = service["spec"]["ports"]
    assert port["port"] == (url.port or 6379)
    redis_pod_labels = resource("Deployment", url.hostname or "")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"].items() <= redis_pod_labels.items()

    egress = resource("NetworkPolicy", APP)["spec"]["egress"]
    to_redis = [
        rule
        for rule in egress
        if any(
            peer.get("podSelector", {}).get("matchLabels", {}).items() <= redis_pod_labels.items()
            and "namespaceSelector" not in peer
            for peer in rule["to"]
        )
        and any(p["port"] == port["port"] and p["protocol"] == "TCP" for p in rule["ports"])
    ]
    assert to_redis, "no egress rule to the Redis pods on the Redis port"
    dns = [
        rule
        for rule in egress
        if {(p["protocol"], p["port"]) for p in rule["ports"]} >= {("UDP", 53), ("TCP", 53)}
    ]
    assert dns, "no egress rule for DNS (UDP and TCP 53): the Redis host name would not resolve"

    redis_ingress = resource("NetworkPolicy", "nessen-redis")["spec"]["ingress"]
    app_labels = resource("Deployment", APP)["spec"]["template"]["metadata"]["labels"]
    assert any(
        peer["podSelector"]["matchLabels"].items() <= app_labels.items()
        for rule in redis_ingress
        for peer in rule["from"]
    )


def test_hpa_and_pdb_target_the_app() -> None:
    hpa = resource("HorizontalPodAutoscaler", APP)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": APP,
    }
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB below can always let one go
    pod_labels = resource("Deployment", APP)["spec"]["template"]["metadata"]["labels"]
    pdb = resource("PodDisruptionBudget", APP)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
