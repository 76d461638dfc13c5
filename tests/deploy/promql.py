"""Helpers for tests/deploy/test_monitoring.py: a throwaway Prometheus server, and the PromQL
found in the alert rules and the Grafana dashboard. Standard library plus PyYAML.

    with Prometheus(rules=RULES) as prom:
        prom.set_targets(["127.0.0.1:9100", ...])   # rewrites the config, POST /-/reload
        prom.query("sum(up)")                       # /api/v1/query, raises on an error status
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

START_TIMEOUT = 20.0  # seconds for prometheus to answer /-/ready
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL

# What Grafana would put in place of its variables when the test evaluates a query.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "datasource": "prometheus",
    "job": "mcpgate",
    "namespace": ".*",
    "instance": ".*",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replaces Grafana variables ($x, ${x}, ${x:fmt}, [[x]]) by test values; an unknown one
    raises KeyError, so a new dashboard variable cannot slip through untested."""
    values = {**GRAFANA_VARIABLES, **(values or {})}

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return values[name]

    return _VARIABLE.sub(replace, expr)


# --- the dashboard ---------------------------------------------------------------------------


def iter_panels(panels: list[dict]):
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def panel_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every Prometheus target of every panel."""
    out = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets") or []:
            if "expr" in target:
                out.append((panel.get("title", "?"), target.get("refId", "?"), target["expr"]))
    return out


def variable_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(variable name, query) of every `query` template variable."""
    out = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        out.append((variable["name"], query or variable.get("definition", "")))
    return out


def split_variable_query(query: str) -> tuple[str, str | None, str | None]:
    """A Grafana Prometheus variable query -> (kind, PromQL or None, label or None):
    ``label_values(expr, label)`` -> ("label_values", expr, label) (expr may be None),
    ``query_result(expr)`` -> ("query_result", expr, None), anything else is PromQL."""
    match = _LABEL_VALUES.match(query)
    if match:
        return "label_values", match.group(1), match.group(2)
    match = _QUERY_RESULT.match(query)
    if match:
        return "query_result", match.group(1), None
    return "promql", query, None


# --- the rules ------------------------------------------------------------------------------


def load_rules(path: Path) -> list[dict]:
    """Every rule (recording and alerting) of a Prometheus rules file, with its group name."""
    doc = yaml.safe_load(path.read_text())
    out = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            out.append({**rule, "group": group["name"]})
    return out


def alert_names(path: Path) -> set[str]:
    return {rule["alert"] for rule in load_rules(path) if "alert" in rule}


def alerts_expected_to_fire(test_path: Path) -> set[str]:
    """Alert names with at least one non-empty `exp_alerts` in a promtool test file."""
    doc = yaml.safe_load(test_path.read_text())
    out = set()
    for test in doc.get("tests", []):
        for case in test.get("alert_rule_test") or []:
            if case.get("exp_alerts"):
                out.add(case["alertname"])
    return out


# --- a Prometheus server ------------------------------------------------------------------------


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    """`prometheus` on a free loopback port with its own storage dir, scraping `targets` every
    second as job `job`, evaluating `rules` every second; `--web.enable-lifecycle` so that
    `set_targets` can re-point it with a regenerated config and POST /-/reload."""

    def __init__(self, rules: Path | None = None, job: str = "mcpgate", binary: str = "prometheus"):
        self.rules = rules
        self.job = job
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="mcpgate-prometheus-"))
        self.config = self.dir / "prometheus.yml"
        self.log = self.dir / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets: list[str] = []
        self.proc: subprocess.Popen | None = None

    def render(self) -> str:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": list(self.targets)}]}],
        }
        if self.rules is not None:
            config["rule_files"] = [str(self.rules.resolve())]
        return yaml.safe_dump(config, sort_keys=False)

    def start(self, targets: list[str]) -> None:
        if shutil.which(self.binary) is None:
            raise PrometheusError(f"{self.binary} not found in PATH")
        self.targets = list(targets)
        self.config.write_text(self.render())
        argv = [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                "--log.level=warn"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited ({self.proc.returncode})\n{self.tail()}")
            try:
                status, body = self._request("GET", "/-/ready")
                if status == 200:
                    return
                last = f"{status} {body.strip()}"
            except OSError as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready within {START_TIMEOUT}s ({last})\n{self.tail()}")

    def set_targets(self, targets: list[str]) -> None:
        """New scrape targets (a restarted replica has new ports): config rewritten, reloaded."""
        self.targets = list(targets)
        self.config.write_text(self.render())
        status, body = self._request("POST", "/-/reload")
        if status != 200:
            raise PrometheusError(f"reload answered {status}: {body}\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Prometheus":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- HTTP API ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, params: dict | None = None, timeout: float = 5.0):
        url = self.url + path
        data = None
        if params is not None:
            encoded = urllib.parse.urlencode(params, doseq=True)
            if method == "GET":
                url += "?" + encoded
            else:
                data = encoded.encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def api(self, path: str, params: dict | None = None, method: str = "GET") -> dict:
        """A /api/v1 call; returns the whole answer (status, data, error, warnings)."""
        status, body = self._request(method, "/api/v1/" + path, params)
        try:
            answer = json.loads(body)
        except ValueError:
            raise PrometheusError(f"/api/v1/{path}: {status} {body[:500]}") from None
        return answer

    def query_raw(self, expr: str) -> dict:
        return self.api("query", {"query": expr}, method="POST")

    def query(self, expr: str) -> list[dict]:
        """An instant query's result; raises PrometheusError unless the status is success."""
        answer = self.query_raw(expr)
        if answer.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The value of a query returning at most one sample (None when empty)."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expr!r}: {len(result)} samples, expected one")
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, predicate, timeout: float, what: str = "") -> float | None:
        """Polls `expr` until predicate(value) holds; returns the value, raises on timeout."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(expr)
            if value is not None and predicate(value):
                return value
            time.sleep(0.25)
        raise PrometheusError(f"{what or expr}: last value {value} after {timeout}s")

    def active_targets(self) -> list[dict]:
        answer = self.api("targets", {"state": "active"})
        return answer["data"]["activeTargets"]

    def wait_targets_up(self, targets: list[str], timeout: float) -> None:
        """Until exactly `targets` are the active targets and each had a successful scrape."""
        deadline = time.monotonic() + timeout
        seen = {}
        while time.monotonic() < deadline:
            seen = {t["labels"].get("instance"): t["health"] for t in self.active_targets()}
            if set(seen) == set(targets) and all(h == "up" for h in seen.values()):
                return
            time.sleep(0.25)
        raise PrometheusError(f"targets {seen}, wanted {targets} all up within {timeout}s\n{self.tail()}")

    def loaded_rules(self) -> list[dict]:
        """The rules Prometheus loaded, with health, lastError and lastEvaluation."""
        answer = self.api("rules")
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]
