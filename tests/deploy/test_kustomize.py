"""The kustomize base deploy/kustomize/base (and the overlay example): it builds with
`kubectl kustomize`, every object passes strict Kubernetes validation, and the base mirrors the
Helm chart's default render."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chart import config_toml, find, find_all, render
from test_chart import MCPGATE, _check_config

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kustomize"
BUILDS = {"base": KUSTOMIZE / "base", "overlay-redis": KUSTOMIZE / "overlays" / "redis"}


def kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed"
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    return {name: kustomize(path) for name, path in BUILDS.items()}


@pytest.fixture(scope="module")
def chart_defaults() -> list[dict]:
    return render()


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_is_valid_kubernetes(built, build, k8s_validate):
    objects = built[build]
    assert {o["kind"] for o in objects} == {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}
    for obj in objects:
        k8s_validate(obj)


@pytest.mark.parametrize("build", BUILDS)
def test_configuration_passes_check_config(built, build, tmp_path):
    assert MCPGATE.is_file(), f"{MCPGATE} is missing: run `cargo build --bins` first"
    text = config_toml(built[build])
    result = _check_config(text, tmp_path)
    assert result.returncode == 0, f"check-config refused the {build} config:\n{result.stderr}\n{text}"


def _pod_spec(objects: list[dict]) -> dict:
    """The Deployment's pod spec, with the ConfigMap's name made comparable (kustomize adds a
    content hash to it)."""
    spec = copy.deepcopy(find(objects, "Deployment")["spec"]["template"]["spec"])
    for volume in spec["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["name"] = volume["configMap"]["name"].split("-")[0]
    return spec


def test_base_mirrors_the_chart_defaults(built, chart_defaults):
    base = built["base"]
    # the whole pod spec: probes, preStop, grace period, securityContext, ports, args, mounts,
    # resources, topology spread
    assert _pod_spec(base) == _pod_spec(chart_defaults)
    ours, theirs = find(base, "Deployment")["spec"], find(chart_defaults, "Deployment")["spec"]
    for key in ("replicas", "strategy", "selector", "minReadySeconds", "revisionHistoryLimit"):
        assert ours[key] == theirs[key], key
    assert ours["template"]["metadata"]["labels"] == theirs["template"]["metadata"]["labels"]
    assert find(base, "Service")["spec"] == find(chart_defaults, "Service")["spec"]
    assert find(base, "PodDisruptionBudget")["spec"] == find(chart_defaults, "PodDisruptionBudget")["spec"]
    sa, chart_sa = find(base, "ServiceAccount"), find(chart_defaults, "ServiceAccount")
    assert sa["metadata"]["name"] == chart_sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] == chart_sa["automountServiceAccountToken"]
    # the same configuration, comments aside
    strip = lambda text: [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert strip(config_toml(base)) == strip(config_toml(chart_defaults))
    # the ConfigMap the Deployment mounts is the generated one
    configmap = find(base, "ConfigMap")["metadata"]["name"]
    volumes = find(base, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert configmap.startswith("mcpgate-") and {"name": "config", "configMap": {"name": configmap, "items": [{"key": "mcpgate.toml", "path": "mcpgate.toml"}]}} in volumes


def test_key_fields_explicitly(built):
    """The properties that matter, spelled out (they also follow from the comparison above)."""
    dep = find(built["base"], "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert pod["terminationGracePeriodSeconds"] == 5 + 30 + 10
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert find(built["base"], "Service")["spec"]["sessionAffinity"] == "None"


@pytest.mark.parametrize("build", BUILDS)
def test_config_is_a_folder_mount(built, build):
    """The ConfigMap is mounted as a folder (never subPath, which the kubelet does not update),
    and `--config` names the file in it: the prerequisite of live reload."""
    c = find(built[build], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["serve", "--config", "/etc/mcpgate/config/mcpgate.toml", "--json-logs"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert mount == {"name": "config", "mountPath": "/etc/mcpgate/config", "readOnly": True}
    for other in c["volumeMounts"]:
        assert other is mount or not other["mountPath"].startswith("/etc/mcpgate/config"), other


def test_hash_suffix_rolls_the_pods_on_every_change(tmp_path):
    """The default: the ConfigMap's name follows its whole content, so any change (upstreams
    included) changes the pod template."""
    def pod_template(toml: str) -> dict:
        overlay = tmp_path / hashlib.sha256(toml.encode()).hexdigest()[:12]
        overlay.mkdir()
        (overlay / "mcpgate.toml").write_text(toml)
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [os.path.relpath(KUSTOMIZE / "base", overlay)],
            "configMapGenerator": [{"name": "mcpgate", "behavior": "replace", "files": ["mcpgate.toml"]}],
        }))
        return find(kustomize(overlay), "Deployment")["spec"]["template"]

    base = (KUSTOMIZE / "base" / "mcpgate.toml").read_text()
    upstream = '\n[[upstreams]]\nname = "a"\ntransport = "http"\nurl = "http://a.example/mcp"\n'
    assert pod_template(base) != pod_template(base + upstream)


def _documented_switch() -> dict:
    """The configMapGenerator entry README.md documents for live reload."""
    readme = (KUSTOMIZE / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    (block,) = [b for b in blocks if "disableNameSuffixHash" in str(b)]
    return block


@pytest.mark.parametrize("build", BUILDS)
def test_documented_live_reload_switch(built, build, tmp_path, k8s_validate):
    """The README's switch on top of each build: the ConfigMap keeps its plain name (updated in
    place by `kubectl apply`, then by the kubelet in the pods' folder), the same content, and the
    Deployment mounts it."""
    switch = _documented_switch()
    assert switch["configMapGenerator"][0]["options"] == {"disableNameSuffixHash": True}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [os.path.relpath(BUILDS[build], tmp_path)], **switch}))
    objects = kustomize(tmp_path)
    for obj in objects:
        k8s_validate(obj)
    (configmap,) = find_all(objects, "ConfigMap")
    assert configmap["metadata"]["name"] == "mcpgate"
    assert configmap["data"] == find(built[build], "ConfigMap")["data"]
    assert configmap["metadata"]["labels"] == find(built[build], "ConfigMap")["metadata"]["labels"]
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "mcpgate", "items": [{"key": "mcpgate.toml", "path": "mcpgate.toml"}]}} in pod["volumes"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount


def test_overlay_makes_a_redis_fleet(built, chart_defaults):
    objects = built["overlay-redis"]
    dep = find(objects, "Deployment")
    assert dep["spec"]["replicas"] == 3
    assert 'store = "redis"' in config_toml(objects)
    assert len(find_all(objects, "ConfigMap")) == 1
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["projected"]["sources"][0]["secret"]["name"] == "mcpgate-secrets"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["secrets"] == "/etc/mcpgate/secrets"
    # the same secret file layout as the chart with existing Secrets
    chart_fleet = render({"replicaCount": 3, "redis": {"enabled": True, "url": "redis://redis.redis.svc:6379", "existingSecret": "mcpgate-secrets"},
                          "hmacKey": {"existingSecret": "mcpgate-secrets"}})
    chart_pod = find(chart_fleet, "Deployment")["spec"]["template"]["spec"]
    chart_paths = sorted(i["path"] for s in {v["name"]: v for v in chart_pod["volumes"]}["secrets"]["projected"]["sources"] for i in s["secret"]["items"])
    ours = sorted(i["path"] for s in volumes["secrets"]["projected"]["sources"] for i in s["secret"]["items"])
    assert ours == chart_paths == ["hmac-key", "redis-password"]
