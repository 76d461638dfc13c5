"""The monitoring that ships with mcpgate, checked with the real tools.

* deploy/prometheus/mcpgate-rules.yaml passes `promtool check rules`, its unit tests
  (mcpgate-rules.test.yaml) pass `promtool test rules`, and every alert is expected to fire in
  at least one of them.
* The Helm chart's copies (helm/mcpgate/files/) are byte-identical to the deploy/ originals.
* A real Prometheus scrapes a real fleet (tests/fleet/fleet.py: redis + 3 replicas + haproxy)
  every second and evaluates the rules every second. Traffic through the load balancer creates
  sessions, and one replica is killed (SIGKILL) and started again in its slot: the new process
  has new ports, so the Prometheus config is regenerated and reloaded (POST /-/reload) and the
  test waits until Prometheus scrapes exactly the live replicas. Requests on the session then
  reach the new replica, which revives it. Also: a session left idle past `idle_ttl` (expired),
  a DELETE, an unknown session id.
* Then every PromQL expression of the dashboard (panels and template variables, with Grafana's
  variables substituted) and of the rules file evaluates without error against that Prometheus,
  the session panels have data, and Prometheus reports every rule healthy.

Run: cargo build --bins && target/tools/venv/bin/python -m pytest -v tests/deploy/test_monitoring.py
Every wait is bounded; the fleet and Prometheus are torn down by the module fixture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "fleet"))

import promql  # noqa: E402
from mcp_http import post as mcp_post  # noqa: E402
from promql import Prometheus  # noqa: E402

RULES = ROOT / "deploy" / "prometheus" / "mcpgate-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "mcpgate-rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mcpgate-dashboard.json"
HELM_COPIES = {
    RULES: ROOT / "helm" / "mcpgate" / "files" / "mcpgate-rules.yaml",
    DASHBOARD: ROOT / "helm" / "mcpgate" / "files" / "dashboard.json",
}

JOB = "mcpgate"
IDLE_TTL_S = 12  # the fleet's session.idle_ttl: short, so that the test can see an expiry (and
# longer than a replica restart, during which the live session is idle)
PROTOCOL = "2025-11-25"
TOOL = "local__echo"  # the fleet's stdio upstream is named (and prefixed) "local"
TIMEOUT = 20.0  # seconds for any one wait on Prometheus


def _promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found in PATH (Debian package `prometheus`)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


# --- static checks ---------------------------------------------------------------------------


def test_promtool_check_rules():
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass():
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test():
    alerts = promql.alert_names(RULES)
    assert len(alerts) >= 8, alerts
    missing = alerts - promql.alerts_expected_to_fire(RULE_TESTS)
    assert not missing, f"alerts never expected to fire in {RULE_TESTS.name}: {sorted(missing)}"


def test_every_alert_has_severity_and_annotations():
    for rule in promql.load_rules(RULES):
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        assert {"summary", "description", "runbook"} <= set(rule.get("annotations", {})), name
        assert rule.get("for"), f"{name} has no `for:`"


@pytest.mark.parametrize("original", list(HELM_COPIES), ids=lambda p: p.name)
def test_helm_copies_are_identical(original: Path):
    copy = HELM_COPIES[original]
    assert copy.is_file(), f"{copy} is missing"
    assert copy.read_bytes() == original.read_bytes(), f"{copy} differs from {original}: cp {original} {copy}"


def test_dashboard_shape():
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in promql.iter_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in promql.iter_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            promql.substitute(target["expr"])  # every variable is known
    exprs = " ".join(expr for _, _, expr in promql.panel_queries(dashboard))
    for metric in ("mcpgate_sessions_created_total", "mcpgate_sessions_revived_total",
                   "mcpgate_sessions_expired_total", "mcpgate_sessions_deleted_total",
                   "mcpgate_session_lookups_total", "mcpgate_request_duration_seconds_bucket",
                   "mcpgate_upstream_requests_total", "mcpgate_upstream_duration_seconds_bucket",
                   "mcpgate_store_duration_seconds_bucket", "mcpgate_store_errors_total",
                   "mcpgate_sse_streams_open", "mcpgate_sse_events_replayed_total",
                   "mcpgate_auth_failures_total", "mcpgate_limited_total"):
        assert metric in exprs, f"no panel shows {metric}"


# --- a fleet, traffic and a Prometheus -------------------------------------------------------


def _delete(url: str, session: str) -> int:
    request = urllib.request.Request(url, headers={"Mcp-Session-Id": session,
                                                   "MCP-Protocol-Version": PROTOCOL}, method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


class Client:
    def __init__(self, url: str):
        self.url = url
        self.next_id = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def initialize(self) -> str:
        status, answer, sid = mcp_post(self.url, {
            "jsonrpc": "2.0", "id": self._id(), "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                       "clientInfo": {"name": "test_monitoring", "version": "0"}}})
        assert status == 200 and answer and "result" in answer and sid, (status, answer)
        status, _, _ = mcp_post(self.url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
        assert status == 202, status
        return sid

    def call(self, sid: str, text: str) -> tuple[int, dict | None]:
        status, answer, _ = mcp_post(self.url, {
            "jsonrpc": "2.0", "id": self._id(), "method": "tools/call",
            "params": {"name": TOOL, "arguments": {"text": text}}}, sid)
        return status, answer

    def echo(self, sid: str, text: str) -> None:
        status, answer = self.call(sid, text)
        assert status == 200 and answer and answer["result"]["content"][0]["text"] == text, (status, answer)


def _targets(fleet) -> list[str]:
    return [f"127.0.0.1:{r.admin_port}" for r in fleet.replicas if r.running]


class Monitored:
    """What the fixture leaves for the tests: the Prometheus and what the traffic did."""

    def __init__(self, prom: Prometheus, fleet, timings: dict, restarted_target: str):
        self.prom = prom
        self.fleet = fleet
        self.timings = timings
        self.restarted_target = restarted_target


@pytest.fixture(scope="module")
def monitored():
    from fleet import Fleet, HarnessError  # tests/fleet/fleet.py

    timings: dict[str, float] = {}
    started = time.monotonic()
    # A generous Redis timeout: appendfsync always on a busy CI machine can take 500ms.
    fleet = Fleet(replicas=3, idle_ttl=f"{IDLE_TTL_S}s", redis_timeout="5s")
    prom = Prometheus(rules=RULES, job=JOB)
    try:
        try:
            fleet.start()
        except HarnessError as err:
            pytest.fail(f"fleet did not start: {err}")
        timings["fleet_start_s"] = time.monotonic() - started
        mark = time.monotonic()
        prom.start(_targets(fleet))
        prom.wait_targets_up(_targets(fleet), TIMEOUT)
        timings["prometheus_start_s"] = time.monotonic() - mark

        mark = time.monotonic()
        sel = f'{{job="{JOB}"}}'
        created_before = prom.value(f"sum(mcpgate_sessions_created_total{sel})")
        client = Client(fleet.url)
        # A session left alone until it expires.
        idle = client.initialize()
        client.echo(idle, "soon idle")
        idle_since = time.monotonic()
        # A session in use. Round-robin without stickiness: its requests already reach
        # replicas that did not create it (revivals).
        live = client.initialize()
        for i in range(3):
            client.echo(live, f"before {i}")

        # What a replica counted since its last scrape dies with it: let Prometheus see the
        # two new sessions before one replica is killed.
        prom.wait_for(f"sum(mcpgate_sessions_created_total{sel})", lambda v: v >= created_before + 2,
                      TIMEOUT, "sessions created before the kill")

        # SIGKILL one replica and start a new process in its slot (new ports): Prometheus
        # gets the new target list and reloads.
        fleet.kill_replica(0)
        fleet.start_replica(0)
        restarted = f"127.0.0.1:{fleet.replicas[0].admin_port}"
        prom.set_targets(_targets(fleet))
        prom.wait_targets_up(_targets(fleet), TIMEOUT)
        timings["replica_restart_s"] = time.monotonic() - mark

        # Six requests over three replicas: the new one serves the live session (a revival).
        for i in range(6):
            client.echo(live, f"after {i}")
        # An id no replica ever issued.
        status, _ = client.call("not-a-session-" + "0" * 32, "nobody")
        assert status == 404, status
        # DELETE, then the deleted session once more.
        assert _delete(fleet.url, live) in (200, 202, 204)
        status, _ = client.call(live, "deleted")
        assert status == 404, status
        # The idle session, once its idle TTL has run out.
        wait = idle_since + IDLE_TTL_S + 1.5 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        status, _ = client.call(idle, "expired")
        assert status == 404, status
        timings["traffic_s"] = time.monotonic() - mark

        mark = time.monotonic()
        for metric in ("revived", "expired", "deleted", "created"):
            prom.wait_for(f"sum(mcpgate_sessions_{metric}_total{sel})", lambda v: v >= 1, TIMEOUT,
                          f"mcpgate_sessions_{metric}_total summed over the fleet")
        for outcome in ("unknown", "deleted", "expired"):
            prom.wait_for(f'sum(mcpgate_session_lookups_total{{job="{JOB}", outcome="{outcome}"}})',
                          lambda v: v >= 1, TIMEOUT, f"session lookups with outcome {outcome}")
            # a series born at 1 has a rate once it has a second sample
            prom.wait_for(f'sum(rate(mcpgate_session_lookups_total{{job="{JOB}", outcome="{outcome}"}}[1m]))',
                          lambda v: True, TIMEOUT, f"rate of lookups with outcome {outcome}")
        timings["scrape_wait_s"] = time.monotonic() - mark
        yield Monitored(prom, fleet, timings, restarted)
    finally:
        prom.stop()
        fleet.teardown()
        print(f"\n[test_monitoring] timings: {({k: round(v, 2) for k, v in timings.items()})}; "
              f"fleet logs in {fleet.logdir}")


def test_prometheus_sees_revived_sessions(monitored: Monitored):
    prom = monitored.prom
    assert prom.value(f'sum(mcpgate_sessions_revived_total{{job="{JOB}"}})') >= 1
    # The replica started in slot 0 (new admin port, reached only after the reload) revived
    # the live session: Prometheus scraped it at its new address.
    revived_there = prom.wait_for(
        f'sum(mcpgate_sessions_revived_total{{instance="{monitored.restarted_target}"}})',
        lambda v: v >= 1, TIMEOUT, f"revivals on the restarted replica {monitored.restarted_target}")
    assert revived_there >= 1
    assert prom.value(f'count(up{{job="{JOB}"}} == 1)') == 3


def test_dashboard_queries_evaluate(monitored: Monitored):
    prom = monitored.prom
    dashboard = json.loads(DASHBOARD.read_text())
    queries = promql.panel_queries(dashboard)
    assert len(queries) >= 20
    failures = []
    for title, ref, expr in queries:
        answer = prom.query_raw(promql.substitute(expr))
        if answer.get("status") != "success":
            failures.append(f"{title}/{ref}: {answer.get('error')} in {expr}")
    assert not failures, "\n".join(failures)


def test_dashboard_variables_evaluate(monitored: Monitored):
    prom = monitored.prom
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for name, query in promql.variable_queries(dashboard):
        kind, expr, label = promql.split_variable_query(query)
        if kind == "label_values":
            params = {"match[]": promql.substitute(expr)} if expr else None
            answer = prom.api(f"label/{label}/values", params)
            assert answer["status"] == "success", (name, query, answer)
            found[name] = answer["data"]
        else:
            answer = prom.query_raw(promql.substitute(expr))
            assert answer["status"] == "success", (name, query, answer)
    assert found.get("job") == [JOB], found
    # every live replica (the killed one's old address may still be listed: Grafana does too)
    assert set(_targets(monitored.fleet)) <= set(found.get("instance", [])), found


def test_session_panels_have_data(monitored: Monitored):
    prom = monitored.prom
    dashboard = json.loads(DASHBOARD.read_text())
    by_title = {}
    for title, ref, expr in promql.panel_queries(dashboard):
        by_title.setdefault(title, []).append((ref, expr))
    lifecycle = by_title["Session lifecycle"]
    assert len(lifecycle) == 4
    for ref, expr in lifecycle:
        # created, revived, expired and deleted all happened within the last minute
        value = prom.value(promql.substitute(expr))
        assert value is not None and value > 0, (ref, expr, value)
    outcomes = {r["metric"].get("outcome") for r in prom.query(promql.substitute(by_title["Session lookups by outcome"][0][1]))}
    assert {"hit", "revived", "unknown", "deleted", "expired"} <= outcomes, outcomes
    for title in ("Revivals share of lookups", "Sessions and upstream streams held per replica", "Requests by method",
                  "Request latency", "Upstream requests", "Store latency", "SSE streams open"):
        for ref, expr in by_title[title]:
            assert prom.query(promql.substitute(expr)), f"{title}/{ref} is empty: {expr}"


def test_rule_expressions_evaluate(monitored: Monitored):
    prom = monitored.prom
    failures = []
    for rule in promql.load_rules(RULES):
        answer = prom.query_raw(rule["expr"])
        if answer.get("status") != "success":
            failures.append(f"{rule.get('alert') or rule.get('record')}: {answer.get('error')}")
    assert not failures, "\n".join(failures)
    # Prometheus loaded the file itself and evaluates every rule without error.
    names = {rule.get("alert") or rule.get("record") for rule in promql.load_rules(RULES)}
    deadline = time.monotonic() + TIMEOUT
    loaded = []
    while time.monotonic() < deadline:
        loaded = prom.loaded_rules()
        if {r["name"] for r in loaded} == names and all(
                not r.get("lastEvaluation", "0001").startswith("0001") for r in loaded):
            break
        time.sleep(0.25)
    assert {r["name"] for r in loaded} == names
    unhealthy = [f"{r['name']}: {r.get('health')} {r.get('lastError')}" for r in loaded if r.get("health") != "ok"]
    assert not unhealthy, "\n".join(unhealthy)
    # The recording rules produce data from the fleet's traffic.
    assert prom.query('namespace_job_outcome:mcpgate_session_lookups:rate5m{outcome="hit"}')
    # No alert about the store or upstreams fires against a healthy fleet (the killed replica's
    # target was replaced, so McpgateReplicaDown has no time to fire either).
    firing = [a["labels"]["alertname"] for a in prom.api("alerts")["data"]["alerts"] if a["state"] == "firing"]
    assert not firing, firing
