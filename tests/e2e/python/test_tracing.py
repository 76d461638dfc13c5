"""End-to-end: OpenTelemetry traces. A client's `traceparent` on a `tools/call` is continued
by the gateway's spans (request, session store, upstream call), handed on to the HTTP upstream
(the fixture records the `traceparent` headers it receives, at /traceparents), exported over
OTLP/HTTP to a real receiver (otlp_receiver.py), and named in the JSON log lines; no raw session
id appears in either. Export is off without OTEL_* variables, and a collector that never answers
neither slows requests nor holds up shutdown."""

import json
import re
import secrets
import socket
import time
import tomllib
import urllib.request

import pytest
from harness import Stack
from otlp_receiver import OtlpReceiver

WAIT = 15.0  # seconds for spans to arrive
CALL_TIMEOUT = 10.0  # seconds for one request
# Spans are sent only at shutdown (the schedule is a minute), which tests the flush on SIGTERM.
EXPORT_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "60000", "RUST_LOG": "info,mcpgate=debug"}
SESSION_TAG = re.compile(r"^[0-9a-f]{12}$")


def post(url: str, message: dict, session: str | None = None, headers: dict | None = None):
    """One JSON-RPC message; returns (the reply to it or None, the session id header)."""
    all_headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
        **(headers or {}),
    }
    if session:
        all_headers["Mcp-Session-Id"] = session
    request = urllib.request.Request(url, data=json.dumps(message).encode(), headers=all_headers, method="POST")
    with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:
        body = response.read().decode()
        sid = response.headers.get("Mcp-Session-Id")
        sse = response.headers.get("Content-Type", "").startswith("text/event-stream")
    if "id" not in message:
        return None, sid
    if not sse:
        return json.loads(body), sid
    replies = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:") and line[5:].strip()]
    return next(r for r in replies if r.get("id") == message["id"]), sid


def open_session(url: str) -> str:
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "tracing-test", "version": "0"}}
    reply, session = post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
    assert "result" in reply, reply
    post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    return session


def echo(url: str, session: str, text: str, traceparent: str | None = None) -> dict:
    headers = {"traceparent": traceparent} if traceparent else {}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "remote__echo", "arguments": {"text": text}}}
    reply, _ = post(url, call, session, headers)
    assert reply.get("result", {}).get("content") == [{"type": "text", "text": text}], reply
    return reply


def fixture_url(stack: Stack) -> str:
    """The HTTP fixture's base URL, from the gateway's configuration."""
    config = tomllib.loads((stack.logdir / "mcpgate.toml").read_text())
    return config["upstreams"][0]["url"].removesuffix("/mcp")


def json_logs(stack: Stack) -> list[dict]:
    lines = (stack.logdir / "mcpgate.stderr.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


def test_a_tools_call_is_one_trace_from_client_to_upstream():
    trace_id, client_span, traceparent = new_traceparent()
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **EXPORT_ENV}
        with Stack(upstreams=("http",), env=env, gateway_args=("--json-logs",)) as stack:
            session = open_session(stack.url)
            echo(stack.url, session, "traced", traceparent)
            with urllib.request.urlopen(f"{fixture_url(stack)}/traceparents", timeout=CALL_TIMEOUT) as answer:
                upstream_saw = json.load(answer)["seen"]
            stack.stop()  # SIGTERM: the gateway drains, then flushes its spans
            logs = json_logs(stack)

        def complete(spans):
            names = {s["name"] for s in spans if s["trace_id"] == trace_id}
            return {"tools/call remote__echo", "session.load", "tools/call echo"} <= names

        spans = [s for s in receiver.wait_for(complete, WAIT) if s["trace_id"] == trace_id]
        by_name = {s["name"]: s for s in spans}

        request = by_name["tools/call remote__echo"]
        assert request["kind"] == "SERVER"
        assert request["parent_span_id"] == client_span, "the request span continues the client's span"
        attrs = request["attributes"]
        assert attrs["mcp.method.name"] == "tools/call"
        assert attrs["gen_ai.tool.name"] == "remote__echo"
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["jsonrpc.request.id"] == "2"
        assert attrs["mcp.protocol.version"] == "2025-11-25"
        assert attrs["network.transport"] == "tcp"
        assert attrs["http.response.status_code"] == 200
        assert SESSION_TAG.match(attrs["mcp.session.id"]), attrs
        assert request["status"] != "ERROR"
        assert request["resource"]["service.name"] == "mcpgate"

        # The request's own lookup, under the request span.
        loads = [s for s in spans if s["name"] == "session.load"]
        store = next((s for s in loads if s["parent_span_id"] == request["span_id"]), None)
        assert store is not None, f"no session.load under the request span: {loads}"
        assert store["attributes"]["db.operation.name"] == "load"
        assert store["attributes"]["db.system.name"] == "memory"

        upstream = by_name["tools/call echo"]
        assert upstream["kind"] == "CLIENT"
        assert upstream["parent_span_id"] == request["span_id"]
        assert upstream["attributes"]["mcp.method.name"] == "tools/call"
        assert upstream["attributes"]["gen_ai.tool.name"] == "echo"
        assert upstream["attributes"]["mcpgate.upstream.name"] == "remote"

        assert f"00-{trace_id}-{upstream['span_id']}-01" in upstream_saw, upstream_saw

        raw = session.encode()
        assert not any(raw in body for body in receiver.bodies), "a raw session id was exported"
        everything = json.dumps(receiver.spans())
        assert session not in everything and attrs["mcp.session.id"] != session

        traced_lines = [line for line in logs if line.get("trace_id") == trace_id]
        assert traced_lines, "no JSON log line names the client's trace"
        assert all(len(line["span_id"]) == 16 for line in traced_lines)
        assert session not in json.dumps(logs), "a raw session id was logged"


@pytest.mark.parametrize("rust_log", ["info,mcpgate=debug", "debug"])
def test_without_otel_variables_nothing_is_exported_but_logs_and_upstreams_name_the_trace(rust_log):
    # Without export no span is recorded; the request still has its own span id, which its
    # log lines carry and the upstream gets as its parent, within the client's trace. With
    # RUST_LOG=debug the log output records spans too: that must change nothing.
    trace_id, client_span, traceparent = new_traceparent()
    with OtlpReceiver() as receiver:
        # The receiver listens, but no OTEL_EXPORTER_OTLP_*ENDPOINT names it.
        env = {"RUST_LOG": rust_log, "OTEL_SERVICE_NAME": "unused"}
        with Stack(upstreams=("http",), env=env, gateway_args=("--json-logs",)) as stack:
            session = open_session(stack.url)
            echo(stack.url, session, "not exported", traceparent)
            with urllib.request.urlopen(f"{fixture_url(stack)}/traceparents", timeout=CALL_TIMEOUT) as answer:
                upstream_saw = json.load(answer)["seen"]
            stack.stop()
            logs = json_logs(stack)
        answered = [line for line in logs if line.get("fields", {}).get("message") == "POST /mcp answered"
                    and line.get("trace_id") == trace_id]
        assert len(answered) == 1, [line for line in logs if line.get("trace_id")]
        request_span = answered[0]["span_id"]
        assert request_span != client_span and len(request_span) == 16
        # The call and the opening of its upstream session (initialize, initialized) all name it.
        ours = {sent for sent in upstream_saw if sent.split("-")[1] == trace_id}
        assert ours == {f"00-{trace_id}-{request_span}-01"}, upstream_saw
        assert receiver.bodies == []


@pytest.mark.parametrize("exporter_off", [False, True], ids=["blackhole", "traces-exporter-none"])
def test_a_collector_that_never_answers_slows_nothing(exporter_off):
    # A listening socket that never accepts: connections open, exports hang until their timeout.
    with socket.create_server(("127.0.0.1", 0), backlog=1) as blackhole:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{blackhole.getsockname()[1]}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BSP_MAX_QUEUE_SIZE": "8",  # overflows at once: spans are dropped, never waited for
        }
        if exporter_off:
            env["OTEL_TRACES_EXPORTER"] = "none"
        with Stack(upstreams=("http",), env=env) as stack:
            session = open_session(stack.url)
            started = time.monotonic()
            for i in range(20):
                _, _, traceparent = new_traceparent()
                echo(stack.url, session, f"call {i}", traceparent)
            elapsed = time.monotonic() - started
            assert elapsed < 10, f"20 calls took {elapsed:.1f}s with an unresponsive collector"
            gateway = next(p for p in stack.procs if p.name == "mcpgate")
            stopping = time.monotonic()
            stack.stop()
            assert gateway.popen.returncode == 0, gateway.tail()
            assert time.monotonic() - stopping < 4.5, "shutdown waited on the collector (SIGKILL came)"
        blackhole.setblocking(False)
        try:
            blackhole.accept()[0].close()
            connected = True
        except BlockingIOError:
            connected = False
        assert connected != exporter_off, "export tried" if exporter_off else "export never tried"
