"""Strict validation of rendered Kubernetes objects, shared by test_chart.py and
test_kustomize.py through the `k8s_validate` fixture.

Built-in kinds are validated with kubernetes-validate's strict schemas (unknown fields are
errors) for the newest Kubernetes it ships and for the oldest the chart supports (1.30, its
`kubeVersion`). kubernetes-validate has no schemas for custom resources, so ServiceMonitor,
PrometheusRule (monitoring.coreos.com/v1) and HTTPRoute (gateway.networking.k8s.io/v1) are
checked structurally here: apiVersion, kind, the required fields and their types, and no field
outside the ones this chart uses from each CRD.
"""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

LATEST = kv_utils.latest_version()
VERSIONS = sorted({"1.30.0", LATEST})

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
PROM_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def _metadata(obj: dict) -> None:
    meta = obj.get("metadata")
    assert isinstance(meta, dict), "metadata"
    assert isinstance(meta.get("name"), str) and len(meta["name"]) <= 253
    for key in ("labels", "annotations"):
        for k, v in (meta.get(key) or {}).items():
            assert isinstance(k, str) and isinstance(v, str), f"metadata.{key}.{k} must be a string"


def _only(where: str, obj: dict, allowed: set[str]) -> None:
    unknown = set(obj) - allowed
    assert not unknown, f"{where}: unexpected fields {sorted(unknown)}"


def check_service_monitor(obj: dict) -> None:
    _metadata(obj)
    spec = obj["spec"]
    _only("spec", spec, {"selector", "namespaceSelector", "endpoints", "jobLabel"})
    assert isinstance(spec["selector"]["matchLabels"], dict) and spec["selector"]["matchLabels"]
    assert isinstance(spec["endpoints"], list) and spec["endpoints"]
    for endpoint in spec["endpoints"]:
        _only("endpoint", endpoint, {"port", "path", "interval", "scrapeTimeout"})
        assert isinstance(endpoint["port"], str)
        assert endpoint["path"].startswith("/")
        for key in ("interval", "scrapeTimeout"):
            assert PROM_DURATION.match(endpoint[key]), f"{key} {endpoint[key]!r}"
    names = spec.get("namespaceSelector", {}).get("matchNames", [])
    assert all(isinstance(n, str) for n in names)


def check_prometheus_rule(obj: dict) -> None:
    _metadata(obj)
    spec = obj["spec"]
    _only("spec", spec, {"groups"})
    assert isinstance(spec["groups"], list) and spec["groups"]
    for group in spec["groups"]:
        _only("group", group, {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset", "labels"})
        assert isinstance(group["name"], str) and group["name"]
        assert isinstance(group["rules"], list)
        for rule in group["rules"]:
            _only("rule", rule, {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"})
            assert ("alert" in rule) != ("record" in rule), f"rule needs exactly one of alert/record: {rule}"
            assert isinstance(rule["expr"], (str, int)) and str(rule["expr"]).strip()
            if "for" in rule:
                assert PROM_DURATION.match(rule["for"]), rule["for"]
            for key in ("labels", "annotations"):
                for k, v in (rule.get(key) or {}).items():
                    assert isinstance(k, str) and isinstance(v, str), f"rule {key}.{k}"


def check_http_route(obj: dict) -> None:
    _metadata(obj)
    spec = obj["spec"]
    _only("spec", spec, {"parentRefs", "hostnames", "rules"})
    assert spec["parentRefs"], "parentRefs"
    for ref in spec["parentRefs"]:
        _only("parentRef", ref, {"group", "kind", "namespace", "name", "sectionName", "port"})
        assert isinstance(ref["name"], str) and ref["name"]
    for hostname in spec.get("hostnames", []):
        assert re.match(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", hostname)
    assert 1 <= len(spec["rules"]) <= 16
    for rule in spec["rules"]:
        _only("rule", rule, {"matches", "backendRefs", "timeouts", "filters"})
        for match in rule["matches"]:
            assert match["path"]["type"] in ("Exact", "PathPrefix", "RegularExpression")
            assert match["path"]["value"].startswith("/")
        for ref in rule["backendRefs"]:
            _only("backendRef", ref, {"name", "port", "weight", "group", "kind", "namespace"})
            assert DNS_LABEL.match(ref["name"]) and isinstance(ref["port"], int)
        timeouts = rule.get("timeouts", {})
        _only("timeouts", timeouts, {"request", "backendRequest"})
        for value in timeouts.values():
            assert DURATION.match(value), value


CRD_CHECKS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): check_http_route,
}


def validate(obj: dict) -> None:
    """Raise (AssertionError or kubernetes_validate's ValidationError) when `obj` is invalid."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_CHECKS:
        CRD_CHECKS[key](obj)
        return
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            raise AssertionError(
                f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version} "
                f"at {path}: {error.message}"
            ) from None


@pytest.fixture(scope="session")
def k8s_validate():
    """validate(obj): strict Kubernetes validation (built-in kinds) or structural (CRDs)."""
    return validate
