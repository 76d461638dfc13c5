"""The Helm chart helm/mcpgate, rendered by the real Helm v4 engine (helm-python-sdk).

Every object of every scenario is validated strictly against the Kubernetes schemas (CRDs
structurally, see conftest.py); every rendered mcpgate.toml must pass the real
`mcpgate check-config`; the `helm test` script runs against a real gateway.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

import chart
from chart import config_toml, find, find_all, render
from mcp_http import post as mcp_post

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MCPGATE = REPO / "target" / "debug" / "mcpgate"
FIXTURE = REPO / "target" / "debug" / "mcpgate-fixture"

SCENARIOS = {
    "defaults": None,
    "everything": yaml.safe_load((HERE / "values" / "everything.yaml").read_text()),
    "sentinel": yaml.safe_load((HERE / "values" / "sentinel.yaml").read_text()),
    "cluster": yaml.safe_load((HERE / "values" / "cluster.yaml").read_text()),
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(values) for name, values in SCENARIOS.items()}


def deployment(objects):
    return find(objects, "Deployment")


def container(objects):
    return deployment(objects)["spec"]["template"]["spec"]["containers"][0]


# --- the engine's own checks ---------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(scenario):
    report = chart.lint(SCENARIOS[scenario], strict=True)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_valid_kubernetes(rendered, scenario, k8s_validate):
    objects = rendered[scenario]
    assert objects
    for obj in objects:
        k8s_validate(obj)
        assert obj["metadata"].get("namespace", "default") == "default"


def test_scenarios_render_the_expected_objects(rendered):
    kinds = lambda objs: sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs)
    assert kinds(rendered["defaults"]) == [
        "ConfigMap/mcpgate", "Deployment/mcpgate", "Pod/mcpgate-test-session",
        "PodDisruptionBudget/mcpgate", "Service/mcpgate", "ServiceAccount/mcpgate",
    ]
    assert kinds(rendered["everything"]) == [
        "ConfigMap/mcpgate", "ConfigMap/mcpgate-dashboard", "Deployment/mcpgate",
        "HTTPRoute/mcpgate", "HorizontalPodAutoscaler/mcpgate", "Ingress/mcpgate",
        "Pod/mcpgate-test-session", "PodDisruptionBudget/mcpgate", "PrometheusRule/mcpgate",
        "Secret/mcpgate", "Service/mcpgate", "Service/mcpgate-redis", "ServiceAccount/mcpgate",
        "ServiceMonitor/mcpgate", "StatefulSet/mcpgate-redis",
    ]
    # existing Secrets only: the chart makes none
    assert find_all(rendered["cluster"], "Secret") == []


def test_release_name_and_namespace_are_used():
    objects = render({"fullnameOverride": ""}, release="prod", namespace="gateways")
    assert find(objects, "Deployment")["metadata"]["name"] == "prod-mcpgate"
    assert {o["metadata"]["namespace"] for o in objects} == {"gateways"}
    pod = find(objects, "Pod")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MCP_URL"] == "http://prod-mcpgate.gateways.svc:8080/mcp"


# --- the Deployment -------------------------------------------------------------------------


def test_defaults_deployment(rendered):
    objects = rendered["defaults"]
    dep = deployment(objects)
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 30 + 10
    assert pod["serviceAccountName"] == "mcpgate"
    assert pod["automountServiceAccountToken"] is False
    c = container(objects)
    assert c["image"] == "mcpgate:0.1.0"
    assert c["args"] == ["serve", "--config", "/etc/mcpgate/config/mcpgate.toml", "--json-logs"]
    assert "command" not in c  # the image's ENTRYPOINT ["mcpgate"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "admin": 9090}
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert "env" not in c  # no OTEL_* without otel.endpoint
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    # a folder the kubelet updates in place (live reload), never subPath
    assert mounts["/etc/mcpgate/config"] == {"name": "config", "mountPath": "/etc/mcpgate/config", "readOnly": True}
    assert "/etc/mcpgate/secrets" not in mounts  # nothing secret configured
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "64Mi"}
    assert mounts["/tmp"]["name"] == "tmp"
    assert volumes["config"]["configMap"]["name"] == "mcpgate"
    annotations = spec["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_security_context_is_restricted(rendered, scenario):
    objects = rendered[scenario]
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # the other workloads (in-chart Redis, the test Pod) are restricted too
    for kind in ("StatefulSet", "Pod"):
        for obj in find_all(objects, kind):
            spec = obj["spec"]["template"]["spec"] if kind == "StatefulSet" else obj["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            for c in spec["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_topology_spread_defaults(rendered):
    constraints = deployment(rendered["defaults"])["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for c in constraints:
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"
        assert c["labelSelector"]["matchLabels"] == deployment(rendered["defaults"])["spec"]["selector"]["matchLabels"]
    off = render({"topologySpread": {"enabled": False}})
    assert "topologySpreadConstraints" not in deployment(off)["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("pre_stop", "drain", "margin"), [(5, 30, 5), (0, 30, 5), (15, 120, 2), (1, 1, 0)]
)
def test_termination_grace_is_prestop_plus_drain_plus_margin(pre_stop, drain, margin):
    objects = render({"preStopSeconds": pre_stop, "drainGraceSeconds": drain, "terminationGraceMarginSeconds": margin})
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == pre_stop + drain + margin
    assert f'drain_grace = "{drain}s"' in config_toml(objects)
    c = pod["containers"][0]
    if pre_stop:
        assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": pre_stop}}
    else:
        assert "lifecycle" not in c


def test_prestop_exec_for_older_clusters(rendered):
    assert container(rendered["cluster"])["lifecycle"]["preStop"] == {"exec": {"command": ["/bin/sleep", "5"]}}


def test_readiness_can_include_the_store(rendered):
    assert container(rendered["sentinel"])["readinessProbe"]["httpGet"]["path"] == "/readyz/store"
    assert container(rendered["defaults"])["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_otel_environment(rendered):
    env = {e["name"]: e["value"] for e in container(rendered["everything"])["env"]}
    assert env == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability.svc:4318",
        "OTEL_SERVICE_NAME": "mcpgate",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }


def test_hpa_replaces_replicas(rendered):
    objects = rendered["everything"]
    assert "replicas" not in deployment(objects)["spec"]
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mcpgate"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 60, "memory": 80}
    for name in ("defaults", "sentinel", "cluster"):
        assert find_all(rendered[name], "HorizontalPodAutoscaler") == []
        assert "replicas" in deployment(rendered[name])["spec"]


def test_pdb(rendered):
    assert find(rendered["defaults"], "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    pdb = find(rendered["everything"], "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb
    assert pdb["selector"]["matchLabels"] == deployment(rendered["everything"])["spec"]["selector"]["matchLabels"]


# --- configuration and its checksum ---------------------------------------------------------


def test_checksum_follows_the_configuration():
    def checksums(values):
        annotations = deployment(render(values))["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/config"], annotations["checksum/secret"]

    base = checksums(None)
    assert checksums(None) == base  # deterministic: no rollout without a change
    assert checksums({"config": {"session": {"idle_ttl": "1d"}}})[0] != base[0]
    assert checksums({"drainGraceSeconds": 31})[0] != base[0]
    assert checksums({"podLabels": {"a": "b"}})[0] == base[0]
    key = "k" * 32
    with_key = checksums({"hmacKey": {"value": key}})
    assert with_key[1] != base[1]
    assert checksums({"hmacKey": {"value": key + "x"}})[1] != with_key[1]
    assert checksums({"hmacKey": {"existingSecret": "a"}})[1] != checksums({"hmacKey": {"existingSecret": "b"}})[1]


UPSTREAM_A = {"name": "a", "transport": "http", "url": "http://a.example/mcp"}
UPSTREAM_B = {"name": "b", "transport": "stdio", "command": "/opt/tools/b-server", "args": ["--stdio"]}
KEY = "k" * 32


def _config_checksum(values):
    return deployment(render(values))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_live_reload_is_on_by_default():
    assert chart.default_values()["liveReload"] == {"enabled": True}


def test_checksum_leaves_upstreams_out_with_live_reload():
    """Running pods reload [[upstreams]] from the updated ConfigMap: an upstreams change must not
    roll them. Everything else needs a restart: it must."""
    base = _config_checksum(None)
    one = _config_checksum({"upstreams": [UPSTREAM_A]})
    assert one == base
    assert _config_checksum({"upstreams": [UPSTREAM_A, UPSTREAM_B]}) == base
    assert _config_checksum({"upstreams": [{**UPSTREAM_A, "timeout": "5s"}]}) == base
    assert _config_checksum({"liveReload": {"enabled": True}, "upstreams": [UPSTREAM_B]}) == base
    # ... while the ConfigMap the pods read does change
    assert config_toml(render({"upstreams": [UPSTREAM_A]})) != config_toml(render(None))
    # any other change of the file rolls the pods, with or without upstreams
    assert _config_checksum({"config": {"session": {"idle_ttl": "1d"}}}) != base
    assert _config_checksum({"upstreams": [UPSTREAM_A], "config": {"session": {"idle_ttl": "1d"}}}) != one
    assert _config_checksum({"config": {"server": {"config_check_interval": "10s"}}}) != base
    assert _config_checksum({"drainGraceSeconds": 31}) != base
    fleet = {"redis": {"enabled": True, "url": "redis://redis:6379"}, "hmacKey": {"value": KEY}}
    assert _config_checksum(fleet) != base
    assert _config_checksum({**fleet, "upstreams": [UPSTREAM_A, UPSTREAM_B]}) == _config_checksum(fleet)


def test_checksum_covers_everything_without_live_reload():
    off = {"liveReload": {"enabled": False}}
    base = _config_checksum(off)
    assert _config_checksum(off) == base  # deterministic
    one = _config_checksum({**off, "upstreams": [UPSTREAM_A]})
    assert one != base
    assert _config_checksum({**off, "upstreams": [UPSTREAM_A, UPSTREAM_B]}) != one
    assert _config_checksum({**off, "upstreams": [{**UPSTREAM_A, "timeout": "5s"}]}) != one
    assert _config_checksum({**off, "config": {"session": {"idle_ttl": "1d"}}}) != base


def _live_reload(scenario: str) -> bool:
    return ((SCENARIOS[scenario] or {}).get("liveReload") or {}).get("enabled", True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_file_is_where_the_config_volume_puts_it(rendered, scenario):
    objects = rendered[scenario]
    c = container(objects)
    assert c["args"][:2] == ["serve", "--config"]
    path = c["args"][2]
    assert path == "/etc/mcpgate/config/mcpgate.toml"
    volumes = {v["name"]: v for v in deployment(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"] == {"name": "mcpgate", "items": [{"key": "mcpgate.toml", "path": "mcpgate.toml"}]}
    assert "mcpgate.toml" in find(objects, "ConfigMap", "mcpgate")["data"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert mount["readOnly"] is True
    if _live_reload(scenario):
        # a folder: the kubelet swaps its `..data` symlink when the ConfigMap changes (a subPath
        # file is never updated)
        assert "subPath" not in mount
        assert f"{mount['mountPath']}/mcpgate.toml" == path
    else:
        assert mount == {"name": "config", "mountPath": path, "subPath": "mcpgate.toml", "readOnly": True}
    # no other mount inside or over the ConfigMap's folder, the secrets keep their own
    for other in c["volumeMounts"]:
        if other is not mount:
            assert not other["mountPath"].startswith("/etc/mcpgate/config"), other
            assert not "/etc/mcpgate/config".startswith(other["mountPath"].rstrip("/") + "/"), other


def test_config_check_interval_passes_through_config(rendered):
    import tomllib

    config = tomllib.loads(config_toml(rendered["everything"]))
    assert config["server"]["config_check_interval"] == SCENARIOS["everything"]["config"]["server"]["config_check_interval"]


def test_config_is_deep_merged_and_numbers_stay_integers(rendered):
    text = config_toml(rendered["everything"])
    import tomllib

    config = tomllib.loads(text)
    assert config["server"]["listen"] == "0.0.0.0:8080"
    assert config["admin"]["listen"] == "0.0.0.0:9090"
    assert config["server"]["drain_grace"] == "45s"
    assert config["server"]["max_body_bytes"] == 8388608 and isinstance(config["server"]["max_body_bytes"], int)
    assert config["server"]["hmac_key_file"] == "/etc/mcpgate/secrets/hmac-key"
    assert config["session"] == {"idle_ttl": "1d", "max_lifetime": "7d", "replay_max_events": 500, "store": "redis"}
    assert config["redis"]["password_file"] == "/etc/mcpgate/secrets/redis-password"
    assert config["redis"]["url"] == "redis://mcpgate-redis.default.svc:6379"
    assert config["server"]["auth"]["api_keys_dir"] == "/etc/mcpgate/api-keys"
    assert [u["name"] for u in config["upstreams"]] == ["files", "search"]
    assert config["upstreams"][0]["env"] == {"FILES_ROOT": "/srv/files"}
    for name, objects in rendered.items():
        assert not re.search(r"=\s*-?[0-9]+\.0\s*$", config_toml(objects), re.M), name
    # a null removes a key; a real fraction stays a float
    config = tomllib.loads(config_toml(render({"config": {"server": {"workers": None}, "x": {"f": 0.5}}})))
    assert "workers" not in config["server"] and config["x"]["f"] == 0.5


def _check_config(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs `mcpgate check-config` on a rendered mcpgate.toml, with its /etc/mcpgate files
    (secrets, API keys) made in a temporary folder and the paths rewritten to it."""
    root = tmp_path / "etc-mcpgate"
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "hmac-key").write_text("h" * 48 + "\n")
    (root / "secrets" / "redis-password").write_text("pw\n")
    (root / "api-keys").mkdir()
    digest = hashlib.sha256(b"test-key").hexdigest()
    (root / "api-keys" / "keys.toml").write_text(f'api_keys = [{{ hash = "sha256:{digest}", principal = "p" }}]\n')
    path = root / "mcpgate.toml"
    path.write_text(text.replace("/etc/mcpgate/", f"{root}/"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGATE_")}
    return subprocess.run([str(MCPGATE), "check-config", "--config", str(path)], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_config_passes_check_config(rendered, scenario, tmp_path):
    assert MCPGATE.is_file(), f"{MCPGATE} is missing: run `cargo build --bins` first"
    text = config_toml(rendered[scenario])
    result = _check_config(text, tmp_path)
    assert result.returncode == 0, f"check-config refused the {scenario} config:\n{result.stderr}\n{text}"
    assert "configuration is valid" in result.stdout


# --- secrets --------------------------------------------------------------------------------


def _projected(objects):
    volumes = {v["name"]: v for v in deployment(objects)["spec"]["template"]["spec"]["volumes"]}
    return [s["secret"] for s in volumes["secrets"]["projected"]["sources"]]


def test_secrets_are_files(rendered):
    # existing Secret for the HMAC key, chart-made Secret for the in-chart Redis password
    assert _projected(rendered["everything"]) == [
        {"name": "mcpgate-fleet", "items": [{"key": "hmac", "path": "hmac-key"}]},
        {"name": "mcpgate", "items": [{"key": "redis-password", "path": "redis-password"}]},
    ]
    secret = find(rendered["everything"], "Secret", "mcpgate")
    assert set(secret["data"]) == {"redis-password"}
    assert base64.b64decode(secret["data"]["redis-password"]).decode() == "correct-horse-battery-staple"
    # sentinel: both chart-made
    secret = find(rendered["sentinel"], "Secret", "mcpgate")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "hmac-key": SCENARIOS["sentinel"]["hmacKey"]["value"],
        "redis-password": "s3cret",
    }
    # cluster: both existing, with the configured keys
    assert _projected(rendered["cluster"]) == [
        {"name": "mcpgate-fleet", "items": [{"key": "hmac-key", "path": "hmac-key"}]},
        {"name": "redis-cluster-auth", "items": [{"key": "password", "path": "redis-password"}]},
    ]
    mounts = {m["name"]: m for m in container(rendered["cluster"])["volumeMounts"]}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": "/etc/mcpgate/secrets", "readOnly": True}
    api_keys = {m["name"]: m for m in container(rendered["everything"])["volumeMounts"]}["api-keys"]
    assert api_keys["mountPath"] == "/etc/mcpgate/api-keys"


# --- Service, Ingress, HTTPRoute, monitoring ------------------------------------------------


def test_service(rendered):
    svc = find(rendered["defaults"], "Service", "mcpgate")["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["sessionAffinity"] == "None"
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]}
    assert ports == {"http": (8080, "http"), "metrics": (9090, "admin")}
    assert svc["selector"] == deployment(rendered["defaults"])["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_only_gateway_pods_match_its_selectors(rendered, scenario):
    """The Service, PDB and spread constraints select the gateway's pods and nothing else (not
    the test Pod, not the in-chart Redis)."""
    objects = rendered[scenario]
    selector = find(objects, "Service", "mcpgate")["spec"]["selector"]
    gateway_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert all(gateway_labels.get(k) == v for k, v in selector.items())
    others = [o["metadata"]["labels"] for o in find_all(objects, "Pod")]
    others += [o["spec"]["template"]["metadata"]["labels"] for o in find_all(objects, "StatefulSet")]
    assert others
    for labels in others:
        assert not all(labels.get(k) == v for k, v in selector.items()), labels


def test_ingress_is_sse_ready(rendered):
    ing = find(rendered["everything"], "Ingress")
    annotations = ing["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["mcp.example.com"], "secretName": "mcp-example-com-tls"}]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "mcpgate", "port": {"name": "http"}}}


def test_httproute(rendered):
    route = find(rendered["everything"], "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "public", "namespace": "gateways", "sectionName": "https"}]
    assert spec["hostnames"] == ["mcp.example.com"]
    assert spec["rules"][0]["backendRefs"] == [{"name": "mcpgate", "port": 8080}]
    assert spec["rules"][0]["timeouts"] == {"request": "3600s", "backendRequest": "3600s"}


def test_monitoring(rendered):
    objects = rendered["everything"]
    sm = find(objects, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    # job="mcpgate" (the rules select up{job="mcpgate"}) whatever the release is called
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    service_labels = find(objects, "Service", "mcpgate")["metadata"]["labels"]
    assert all(service_labels[k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    rule = find(objects, "PrometheusRule")
    shipped = yaml.safe_load((chart.CHART_DIR / "files" / "mcpgate-rules.yaml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    dashboard = find(objects, "ConfigMap", "mcpgate-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["mcpgate.json"]) == json.loads((chart.CHART_DIR / "files" / "dashboard.json").read_text())


def test_in_chart_redis(rendered):
    objects = rendered["everything"]
    sts = find(objects, "StatefulSet", "mcpgate-redis")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "redis:7"
    script = " ".join(c["args"])
    for setting in ("--appendonly yes", "--notify-keyspace-events Ex", "--maxmemory-policy noeviction", "--maxmemory 256mb"):
        assert setting in script
    assert c["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "mcpgate", "key": "redis-password"}
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "2Gi" and claim["storageClassName"] == "fast"
    svc = find(objects, "Service", "mcpgate-redis")["spec"]
    assert svc["ports"][0]["port"] == 6379
    assert svc["selector"] == sts["spec"]["selector"]["matchLabels"]
    # the gateway Service must not select the Redis pod
    gw = find(objects, "Service", "mcpgate")["spec"]["selector"]
    redis_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert not all(redis_labels.get(k) == v for k, v in gw.items())


@pytest.mark.parametrize("password", ["correct-horse-battery-staple", None])
def test_in_chart_redis_command_runs_redis_as_configured(tmp_path, password):
    """The StatefulSet's shell command and readiness probe, run against a local redis-server."""
    redis_server = shutil.which("redis-server")
    assert redis_server and shutil.which("redis-cli"), "redis-server/redis-cli missing: run tests/tools/install.sh"
    values = copy.deepcopy(SCENARIOS["everything"])
    values["redis"]["password"] = password or ""
    sts = find(render(values), "StatefulSet")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    port = _free_port()
    script = c["args"][0].replace("--dir /data", f"--dir {tmp_path} --port {port} --bind 127.0.0.1 --save ''")
    env = {"PATH": os.environ["PATH"]}
    if password:
        assert c["env"][0]["name"] == "REDISCLI_AUTH"
        env["REDISCLI_AUTH"] = password
    else:
        assert "env" not in c
    server = subprocess.Popen([*c["command"], script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = lambda *args, **kw: subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], env=kw.get("env", env), capture_output=True, text=True, timeout=5).stdout.strip()
    try:
        probe = c["readinessProbe"]["exec"]["command"]
        probe = [*probe[:-1], probe[-1].replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {port}")]
        deadline = time.monotonic() + 10
        while subprocess.run(probe, env=env).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "redis did not become ready"
            time.sleep(0.05)
        assert cli("config", "get", "appendonly").split() == ["appendonly", "yes"]
        assert cli("config", "get", "notify-keyspace-events").split()[1] in ("xE", "Ex")
        assert cli("config", "get", "maxmemory-policy").split() == ["maxmemory-policy", "noeviction"]
        assert cli("config", "get", "maxmemory").split() == ["maxmemory", str(256 * 1024 * 1024)]
        without_auth = cli("ping", env={"PATH": os.environ["PATH"]})
        if password:
            assert "NOAUTH" in without_auth
        else:
            assert without_auth == "PONG"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_notes():
    notes = chart.render_notes()
    assert "http://mcpgate.default.svc:8080/mcp" in notes
    assert "helm test mcpgate" in notes
    assert "WARNING: sessions are kept in memory" in notes
    assert "WARNING" not in chart.render_notes(SCENARIOS["everything"])


# --- bad values -----------------------------------------------------------------------------

BAD_VALUES = [
    # refused by values.schema.json
    ("negative replicas", {"replicaCount": -1}, "replicaCount"),
    ("unknown top-level key", {"replicas": 3}, "replicas"),
    ("unknown nested key", {"redis": {"inChart": {"enable": True}}}, "enable"),
    ("bad redis.mode", {"redis": {"mode": "primary"}}, "mode"),
    ("non-integer drainGraceSeconds", {"drainGraceSeconds": "30s"}, "drainGraceSeconds"),
    ("fractional drainGraceSeconds", {"drainGraceSeconds": 2.5}, "drainGraceSeconds"),
    ("zero drainGraceSeconds", {"drainGraceSeconds": 0}, "drainGraceSeconds"),
    ("pullPolicy enum", {"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ("bad port", {"service": {"port": 70000}}, "port"),
    ("bad preStopAction", {"preStopAction": "wait"}, "preStopAction"),
    ("boolean as string", {"probes": {"readinessIncludesStore": "yes"}}, "readinessIncludesStore"),
    ("redis url scheme", {"redis": {"enabled": True, "url": "http://redis:6379"}}, "url"),
    ("credentials in a redis url", {"redis": {"url": "redis://u:p@redis:6379"}}, "url"),
    ("short hmac key", {"hmacKey": {"value": "short"}}, "hmacKey"),
    ("upstream transport", {"upstreams": [{"name": "a", "transport": "grpc"}]}, "transport"),
    ("upstream without name", {"upstreams": [{"transport": "http", "url": "http://x"}]}, "name"),
    ("config not a map", {"config": "x"}, "config"),
    ("otel endpoint scheme", {"otel": {"endpoint": "collector:4317"}}, "endpoint"),
    ("strategy percent", {"updateStrategy": {"maxUnavailable": "lots"}}, "maxUnavailable"),
    # refused by the templates (cross-field rules), with a message saying what to do
    ("two replicas in memory", {"replicaCount": 2}, "needs the Redis session store"),
    ("autoscaling in memory", {"autoscaling": {"enabled": True}}, "needs the Redis session store"),
    ("redis without hmac key", {"redis": {"inChart": {"enabled": True}}}, "hmacKey.value"),
    ("redis without url", {"redis": {"enabled": True}, "hmacKey": {"value": "k" * 32}}, "redis.url is required"),
    ("sentinel without master", {"redis": {"enabled": True, "mode": "sentinel", "sentinels": ["redis://s:26379"]}, "hmacKey": {"value": "k" * 32}}, "masterName"),
    ("cluster with db", {"redis": {"enabled": True, "mode": "cluster", "nodes": ["redis://n:6379"], "db": 1}, "hmacKey": {"value": "k" * 32}}, "redis.db"),
    ("in-chart sentinel", {"redis": {"inChart": {"enabled": True}, "mode": "sentinel"}, "hmacKey": {"value": "k" * 32}}, "standalone"),
    ("managed listen", {"config": {"server": {"listen": "0.0.0.0:1"}}}, "config.server.listen"),
    ("managed store", {"config": {"session": {"store": "redis"}}}, "config.session.store"),
    ("config.redis", {"config": {"redis": {"url": "redis://x"}}}, "config.redis"),
    ("pdb both", {"podDisruptionBudget": {"minAvailable": 1}}, "exactly one"),
    ("api keys with jwt", {"auth": {"apiKeysSecret": "keys"}, "config": {"server": {"auth": {"mode": "jwt"}}}}, "api_key"),
    ("httproute without parent", {"httpRoute": {"enabled": True}}, "parentRefs"),
]


@pytest.mark.parametrize(("values", "expected"), [(v, e) for _, v, e in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES])
def test_bad_values_are_rejected(values, expected):
    with pytest.raises(chart.RenderError) as error:
        render(values)
    assert expected in str(error.value)


# --- the `helm test` Pod, run for real ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_gateway(tmp_path):
    """A real gateway serving a config rendered by the chart (demo upstream, API keys)."""
    assert MCPGATE.is_file() and FIXTURE.is_file(), "run `cargo build --bins` first"
    key = "helm-test-key-0123456789"
    values = {
        "upstreams": [{"name": "demo", "transport": "stdio", "command": str(FIXTURE), "args": ["stdio", "--name", "demo"]}],
        "config": {"server": {"auth": {"mode": "api_key", "api_keys": [
            {"hash": "sha256:" + hashlib.sha256(key.encode()).hexdigest(), "principal": "helm-test"}]}}},
        "tests": {"tool": "demo__echo", "arguments": {"text": "hello from helm test"}},
    }
    objects = render(values)
    config = tmp_path / "mcpgate.toml"
    config.write_text(config_toml(objects))
    port, admin = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGATE_")}
    env |= {"MCPGATE_SERVER__LISTEN": f"127.0.0.1:{port}", "MCPGATE_ADMIN__LISTEN": f"127.0.0.1:{admin}"}
    log = open(tmp_path / "gateway.log", "w")
    proc = subprocess.Popen([str(MCPGATE), "serve", "--config", str(config)], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "gateway not ready"
            time.sleep(0.1)
        yield {"objects": objects, "url": f"http://127.0.0.1:{port}/mcp", "key": key}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _run_test_pod(pod: dict, url: str, token: str | None, workdir: Path, **overrides) -> subprocess.CompletedProcess:
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["/bin/sh", "-c"]
    script = c["args"][0].replace("cd /tmp", f"cd {workdir}")
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    env |= {"MCP_URL": url, "PATH": os.environ["PATH"], **overrides}
    if token:
        env["MCP_TOKEN"] = token
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_helm_test_pod_definition(rendered):
    pod = find(rendered["everything"], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["image"] == "curlimages/curl:8.11.1"
    env = {e["name"]: e for e in c["env"]}
    assert env["MCP_TOOL"]["value"] == "files__read"
    assert json.loads(env["MCP_ARGUMENTS"]["value"]) == {"path": "README.md"}
    assert env["MCP_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "mcpgate-test-key", "key": "token"}
    assert find_all(render({"tests": {"enabled": False}}), "Pod") == []


def test_helm_test_script_against_a_real_gateway(live_gateway, tmp_path):
    pod = find(live_gateway["objects"], "Pod")
    ok = _run_test_pod(pod, live_gateway["url"], live_gateway["key"], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hello from helm test" in ok.stdout
    assert "OK: session" in ok.stdout and "demo__echo called" in ok.stdout
    # and it fails when something is wrong: no credential, an unknown tool
    no_key = _run_test_pod(pod, live_gateway["url"], None, tmp_path)
    assert no_key.returncode != 0 and "FAIL: initialize" in no_key.stdout
    unknown = _run_test_pod(pod, live_gateway["url"], live_gateway["key"], tmp_path, MCP_TOOL="demo__nope")
    assert unknown.returncode != 0 and "FAIL" in unknown.stdout


# --- live reload of upstreams through the mounted ConfigMap, run for real ---------------------


class ConfigMapVolume:
    """A ConfigMap volume laid out as the kubelet's atomic writer does: the files live in a
    timestamped folder, `..data` links to it, and each visible file links through `..data`. An
    update writes a new folder and renames a new `..data` link over the old one."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir()
        self.generation = 0

    def write(self, files: dict[str, str]) -> None:
        self.generation += 1
        stamp = f"..2026_01_01_00_00_{self.generation:02d}.{os.getpid()}"
        folder = self.root / stamp
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(stamp, tmp)
        os.rename(tmp, self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)
        if old:
            shutil.rmtree(self.root / old)


def _metric(admin: int, name: str, labels: str = "") -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def _wait(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_upstreams_reload_live_from_the_mounted_configmap(tmp_path):
    """The chart's ConfigMap in a folder updated the kubelet's way: the gateway started with the
    chart's `--config` path applies an upstreams change (the pods' checksum/config unchanged)
    without a restart and keeps the session, and refuses a broken one."""
    assert MCPGATE.is_file() and FIXTURE.is_file(), "run `cargo build --bins` first"
    stdio = lambda name: {"name": name, "transport": "stdio", "command": str(FIXTURE), "args": ["stdio", "--name", name]}
    values = lambda upstreams: {"upstreams": upstreams, "config": {"server": {"config_check_interval": "1s"}}}
    first, second = render(values([stdio("demo")])), render(values([stdio("demo"), stdio("extra")]))
    broken = render(values([stdio("demo"), stdio("extra"), {"name": "gone", "transport": "stdio", "command": str(tmp_path / "no-such-server")}]))
    checksum = lambda objects: deployment(objects)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert checksum(first) == checksum(second) == checksum(broken)  # no rollout: the pods reload

    c = container(first)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    volume = ConfigMapVolume(tmp_path / "config")
    volume.write({"mcpgate.toml": config_toml(first)})
    config = Path(c["args"][2].replace(mount["mountPath"], str(volume.root)))
    assert config.is_file() and config.parent == volume.root

    port, admin = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGATE_")}
    env |= {"MCPGATE_SERVER__LISTEN": f"127.0.0.1:{port}", "MCPGATE_ADMIN__LISTEN": f"127.0.0.1:{admin}"}
    log_path = tmp_path / "gateway.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(MCPGATE), *c["args"][:2], str(config)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        def ready():
            assert proc.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        _wait("the gateway to be ready", ready, 20)
        status, answer, sid = mcp_post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test_chart", "version": "0"}}})
        assert status == 200 and "result" in answer and sid, answer
        assert mcp_post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)[0] == 202
        ids = iter(range(2, 1000))
        tools = lambda: {t["name"] for t in mcp_post(url, {"jsonrpc": "2.0", "id": next(ids), "method": "tools/list"}, sid)[1]["result"]["tools"]}
        assert "demo__echo" in tools() and "extra__echo" not in tools()
        assert _metric(admin, "mcpgate_config_last_reload_successful") == 1

        # helm upgrade with one more upstream: the kubelet swaps the folder's content
        volume.write({"mcpgate.toml": config_toml(second)})
        _wait("the reload to be applied", lambda: _metric(admin, "mcpgate_config_reloads_total", '{result="applied"}') == 1)
        _wait("the new upstream's tools in the same session", lambda: "extra__echo" in tools())
        assert "demo__echo" in tools()
        assert proc.poll() is None

        # a change the gateway refuses (a stdio command that cannot run): what runs stays
        volume.write({"mcpgate.toml": config_toml(broken)})
        _wait("the refusal", lambda: _metric(admin, "mcpgate_config_last_reload_successful") == 0)
        assert (_metric(admin, "mcpgate_config_reloads_total", '{result="invalid"}') or 0) >= 1
        assert {"demo__echo", "extra__echo"} <= tools()
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- documentation --------------------------------------------------------------------------

# values whose content is a Kubernetes (or free-form) object, documented as a whole
WHOLE = {"resources", "podSecurityContext", "securityContext", "redis.inChart.resources", "tests.arguments"}


def _leaves(values: dict, prefix: str = ""):
    for key, value in values.items():
        path = prefix + key
        if isinstance(value, dict) and value and path not in WHOLE:
            yield from _leaves(value, path + ".")
        else:
            yield path


def test_every_value_is_documented_and_in_the_schema():
    readme = (chart.CHART_DIR / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    leaves = set(_leaves(chart.default_values()))
    assert leaves - documented == set(), "values missing from the README table"
    assert documented - leaves == set(), "README documents values that do not exist"
    schema = json.loads((chart.CHART_DIR / "values.schema.json").read_text())
    for leaf in leaves:
        node = schema
        for part in leaf.split("."):
            assert part in node.get("properties", {}), f"{leaf} is not in values.schema.json"
            node = node["properties"][part]
