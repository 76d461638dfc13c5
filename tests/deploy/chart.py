"""Render the Helm chart `helm/mcpgate` with the real Helm v4 engine (helm-python-sdk, no
`helm` binary, no cluster) and pick objects out of the result.

Shared by the chart tests and other deployment tests; keep the signatures stable:

    from chart import render, find, find_all, config_toml
    objects = render({"replicaCount": 3, "redis": {"inChart": {"enabled": True}},
                      "hmacKey": {"value": "0123456789abcdef0123456789abcdef"}})
    deployment = find(objects, "Deployment")          # the one Deployment (LookupError otherwise)
    toml_text = config_toml(objects)                  # the ConfigMap's `mcpgate.toml`

`render` validates the values against `values.schema.json` (the engine does, exactly as for
`helm install` and `helm template`) and raises `RenderError` (a `helm_python.HelmError`) for
bad values or a template `fail`/`required`. Hook objects (the `helm test` Pod) are included, like
`helm template` does; `NOTES.txt` is not an object (see `render_notes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import helm_python

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "mcpgate"

RenderError = helm_python.HelmError


def _load() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def render_manifests(
    values: dict[str, Any] | None = None,
    release: str = "mcpgate",
    namespace: str = "default",
    *,
    is_upgrade: bool = False,
) -> dict[str, str]:
    """The rendered templates as Helm returns them: template path -> text."""
    with _load() as chart:
        return chart.render(
            values or {},
            name=release,
            namespace=namespace,
            is_install=not is_upgrade,
            is_upgrade=is_upgrade,
        )


def render(
    values: dict[str, Any] | None = None,
    release: str = "mcpgate",
    namespace: str = "default",
) -> list[dict]:
    """Render the chart with `values` (merged over values.yaml) and return every Kubernetes
    object it produces, parsed, in template order."""
    objects: list[dict] = []
    for path, text in sorted(render_manifests(values, release, namespace).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append(document)
    return objects


def render_notes(
    values: dict[str, Any] | None = None,
    release: str = "mcpgate",
    namespace: str = "default",
) -> str:
    """The rendered NOTES.txt."""
    manifests = render_manifests(values, release, namespace)
    return next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")


def find_all(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Every object of `kind` (and `metadata.name`, when given)."""
    return [
        o
        for o in objects
        if o.get("kind") == kind and (name is None or o.get("metadata", {}).get("name") == name)
    ]


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    """The one object of `kind` (and `metadata.name`, when given). Raises LookupError when there
    is none or, without a name, more than one; use `find_all` to test for absence."""
    matches = find_all(objects, kind, name)
    if len(matches) != 1:
        names = [o.get("metadata", {}).get("name") for o in find_all(objects, kind)]
        raise LookupError(f"expected one {kind} named {name!r}, found {len(matches)}; {kind}s: {names}")
    return matches[0]


def config_toml(objects: list[dict]) -> str:
    """The gateway configuration: the `mcpgate.toml` key of the chart's ConfigMap."""
    for o in find_all(objects, "ConfigMap"):
        data = o.get("data") or {}
        if "mcpgate.toml" in data:
            return data["mcpgate.toml"]
    raise LookupError("no ConfigMap with a `mcpgate.toml` key")


def default_values() -> dict[str, Any]:
    """The chart's values.yaml."""
    with _load() as chart:
        return chart.values


def lint(values: dict[str, Any] | None = None, *, strict: bool = True) -> dict[str, Any]:
    """`helm lint` (strict by default): {"messages": [...], "errors": [...], ...}."""
    return helm_python.lint(CHART_DIR, values, strict=strict)
