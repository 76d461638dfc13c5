"""Fleet end-to-end: the Python `mcp` SDK client talks to 3 mcpgate replicas sharing one real
redis-server, through haproxy balancing every request round-robin with no stickiness
(tests/fleet/fleet.py). The clients never re-initialize: sessions must survive every replica
being replaced, a replica being SIGKILLed under load, and a Redis outage.

Every HTTP exchange of a client is recorded below the SDK (``Recorder``, an httpx transport):
method, session id, JSON-RPC method, Last-Event-ID, status, and the SSE event ids of GET
streams, so the assertions speak about the wire, not about SDK internals.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fleet"))

from fleet import Fleet  # noqa: E402

pytestmark = pytest.mark.anyio

WATCHED = "test://watched-resource"  # the fixture changes it every 2 s and notifies subscribers
REPLICAS = 3


# --- the wire recorder ------------------------------------------------------------------------


@dataclass
class Exchange:
    started: float
    method: str  # HTTP method
    session: str | None  # Mcp-Session-Id sent
    rpc: list[str] = field(default_factory=list)  # JSON-RPC methods in a POST body
    last_event_id: str | None = None
    status: int | None = None
    returned_session: str | None = None
    error: str | None = None
    ended: float | None = None


@dataclass
class SseEvent:
    at: float
    id: str
    has_data: bool


class _Sniffer(httpx2.AsyncByteStream):
    """Passes a GET stream's bytes through, noting the id of every SSE event."""

    def __init__(self, inner, events: list[SseEvent]):
        self.inner = inner
        self.events = events
        self.buffer = b""
        self.current_id: str | None = None
        self.has_data = False

    async def __aiter__(self):
        async for chunk in self.inner:
            self._feed(chunk)
            yield chunk

    def _feed(self, chunk: bytes) -> None:
        self.buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            text = line.decode(errors="replace")
            if text == "":
                if self.current_id is not None:
                    self.events.append(SseEvent(time.monotonic(), self.current_id, self.has_data))
                self.current_id, self.has_data = None, False
            elif text.startswith("id:"):
                self.current_id = text[3:].strip()
            elif text.startswith("data:") and text[5:].strip():
                self.has_data = True

    async def aclose(self) -> None:
        await self.inner.aclose()


class Recorder(httpx2.AsyncBaseTransport):
    def __init__(self):
        self.inner = httpx2.AsyncHTTPTransport(trust_env=False)
        self.exchanges: list[Exchange] = []
        self.get_events: list[SseEvent] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        entry = Exchange(time.monotonic(), request.method, request.headers.get("mcp-session-id"),
                         last_event_id=request.headers.get("last-event-id"))
        if request.method == "POST":
            try:
                body = json.loads(await request.aread())
                entry.rpc = [m.get("method", "(response)") for m in (body if isinstance(body, list) else [body])]
            except ValueError:
                entry.rpc = ["(unparsable)"]
        self.exchanges.append(entry)
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as err:
            entry.error, entry.ended = f"{type(err).__name__}: {err}", time.monotonic()
            raise
        entry.status = response.status_code
        entry.returned_session = response.headers.get("mcp-session-id")
        entry.ended = time.monotonic()
        if request.method == "GET" and response.status_code == 200:
            response.stream = _Sniffer(response.stream, self.get_events)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    # --- views ---

    def initializes(self) -> list[Exchange]:
        return [e for e in self.exchanges if "initialize" in e.rpc]

    def session_ids_sent(self) -> set[str | None]:
        return {e.session for e in self.exchanges if "initialize" not in e.rpc}


def recording_client(url: str, **kwargs) -> tuple[Client, Recorder]:
    recorder = Recorder()
    http = httpx2.AsyncClient(transport=recorder, timeout=httpx2.Timeout(30, read=300))
    kwargs.setdefault("mode", "legacy")
    kwargs.setdefault("read_timeout_seconds", 15)
    return Client(streamable_http_client(url, http_client=http), **kwargs), recorder


def texts(result: types.CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, types.TextContent)]


async def assert_echo(client: Client, tool: str, note: str) -> None:
    text = f"{note} {uuid.uuid4()}"
    result = await client.call_tool(tool, {"text": text})
    assert not result.is_error, result
    assert texts(result) == [text], result


def sum_metric(fleet: Fleet, name: str, replicas=None, **labels) -> float:
    return sum(fleet.metric(i, name, **labels) for i in (replicas if replicas is not None else range(fleet.count)))


def start_fleet(**kwargs) -> Fleet:
    fleet = Fleet(**kwargs)
    try:
        fleet.start()
    except BaseException:
        fleet.teardown()
        raise
    return fleet


# --- 1. every replica replaced: the same client keeps its session and its GET stream ---------


@pytest.mark.parametrize("kind,upstream", [("stdio", "local"), ("http", "remote")])
async def test_the_same_client_survives_every_replica_being_replaced(kind, upstream):
    fleet = start_fleet(replicas=REPLICAS, upstreams=(kind,))
    try:
        await _hibernation(fleet, upstream)
    except BaseException:
        print(f"\n[fleet] process logs (in {fleet.logdir}):\n{fleet.logs()}")
        raise
    finally:
        fleet.teardown()


async def _hibernation(fleet: Fleet, upstream: str) -> None:
    updates: list[float] = []
    got_update = anyio.Event()

    async def on_message(message) -> None:
        nonlocal got_update
        if isinstance(message, types.ResourceUpdatedNotification) and message.params.uri == WATCHED:
            updates.append(time.monotonic())
            got_update.set()

    async def wait_updates(count: int, after: float, timeout: float) -> None:
        nonlocal got_update
        with anyio.fail_after(timeout):
            while sum(1 for t in updates if t > after) < count:
                got_update = anyio.Event()
                await got_update.wait()

    client, wire = recording_client(fleet.url, message_handler=on_message)
    before_restart = restarted = float("inf")

    def report() -> None:
        """What the wire saw around the restart (printed whether or not the test passes)."""
        t0 = before_restart if before_restart != float("inf") else 0.0
        gets = [e for e in wire.exchanges if e.method == "GET"]
        print("[fleet] GET exchanges: " + "; ".join(
            f"t={e.started - t0:+.2f}s Last-Event-ID={e.last_event_id} -> {e.status or e.error}" for e in gets))
        print(f"[fleet] GET stream event ids: {[(ev.id, ev.has_data) for ev in wire.get_events]}")
        print(f"[fleet] updates received at (s from restart): {[round(t - t0, 2) for t in updates]}")

    try:
        with anyio.fail_after(90):
            async with client as c:
                session_id = wire.initializes()[0].returned_session
                assert session_id, "initialize returned no Mcp-Session-Id"
                for n in range(REPLICAS):  # round-robin: each replica serves this session once
                    await assert_echo(c, f"{upstream}__echo", f"before, call {n}")
                who = await c.call_tool(f"{upstream}__whoami", {})
                assert texts(who) == [upstream], who
                await c.subscribe_resource(WATCHED)
                await wait_updates(2, after=0, timeout=10)

                # The laptop sleeps; meanwhile every replica is replaced.
                before_restart = time.monotonic()
                timings = fleet.restart_replicas()
                restarted = time.monotonic()
                print(f"\n[fleet] replicas replaced: {timings}")

                for n in range(REPLICAS):
                    await assert_echo(c, f"{upstream}__echo", f"after, call {n}")
                who = await c.call_tool(f"{upstream}__whoami", {})
                assert texts(who) == [upstream], who
                created = sum_metric(fleet, "mcpgate_sessions_created_total")
                revived = sum_metric(fleet, "mcpgate_sessions_revived_total")
                print(f"[fleet] new replicas: sessions_created_total={created} sessions_revived_total={revived}")
                # The GET stream comes back by itself (Last-Event-ID) and updates keep arriving.
                try:
                    await wait_updates(2, after=restarted, timeout=15)
                except TimeoutError:
                    raise AssertionError("no notifications/resources/updated within 15 s after the replicas "
                                         "were replaced (the subscription did not survive)") from None
    finally:
        report()

    # Same session throughout, one initialize in total.
    assert len(wire.initializes()) == 1, [e.rpc for e in wire.exchanges]
    assert wire.session_ids_sent() == {session_id}, wire.session_ids_sent()
    statuses = {(e.method, e.status) for e in wire.exchanges if e.started > before_restart}
    assert not {s for _, s in statuses if s in (400, 404)}, f"a 400/404 after the restart: {statuses}"

    # The new replicas created nothing and revived the session.
    assert created == 0, f"a new replica created a session: {created}"
    assert revived >= 1, f"no replica counted a revival: {revived}"

    # The GET stream resumed with the last event id it had seen...
    resumed = [e for e in wire.exchanges if e.method == "GET" and e.started > before_restart and e.last_event_id]
    assert any(e.status == 200 for e in resumed), "the GET stream was not resumed with Last-Event-ID"
    # ... and no event of the stream was skipped: message ids are contiguous across the outage.
    seqs = [int(ev.id.rsplit("-", 1)[1]) for ev in wire.get_events if ev.has_data]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"event ids not contiguous: {seqs}"


# --- 2. SIGKILL one replica under load ----------------------------------------------------------


class RawSession:
    """A bare JSON-RPC session over the recording transport. A dropped connection fails the one
    call it carried; the SDK's Client instead gives up entirely when a POST's connection closes
    without a response, which would measure the SDK rather than the fleet."""

    def __init__(self, url: str):
        self.url = url
        self.recorder = Recorder()
        self.http = httpx2.AsyncClient(transport=self.recorder, timeout=httpx2.Timeout(30))
        self.session_id: str | None = None
        self.next_id = 0

    async def post(self, message: dict) -> httpx2.Response:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.session_id:
            headers |= {"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": "2025-11-25"}
        return await self.http.post(self.url, content=json.dumps(message), headers=headers)

    async def open(self) -> str:
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "kill-test", "version": "1"}}
        response = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        response.raise_for_status()
        self.session_id = response.headers["mcp-session-id"]
        (await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})).raise_for_status()
        return self.session_id

    async def call_tool(self, name: str, arguments: dict) -> tuple[list[str], bool]:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                   "params": {"name": name, "arguments": arguments}}
        response = await self.post(message)
        response.raise_for_status()
        body = response.json()
        if "error" in body:
            raise RuntimeError(f"JSON-RPC error {body['error']}")
        result = body["result"]
        return [b["text"] for b in result["content"] if b.get("type") == "text"], bool(result.get("isError"))

    async def aclose(self) -> None:
        await self.http.aclose()



SESSIONS = 50
CALLS = 16  # per session
KILL_AFTER = SESSIONS * 5  # completed calls before the kill


@dataclass
class Call:
    session: int
    tool: str
    started: float
    ended: float = 0.0
    ok: bool = False
    error: str = ""


async def test_killing_a_replica_under_load_fails_only_its_in_flight_requests():
    fleet = start_fleet(replicas=REPLICAS, upstreams=("stdio", "http"))
    try:
        await _kill_under_load(fleet)
    except BaseException:
        print(f"\n[fleet] process logs (in {fleet.logdir}):\n{fleet.logs(20)}")
        raise
    finally:
        fleet.teardown()


async def _kill_under_load(fleet: Fleet) -> None:
    calls: list[Call] = []
    completed = 0
    enough = anyio.Event()
    victim = 1
    killed: dict[str, float] = {}
    wires: dict[int, Recorder] = {}
    session_ids: dict[int, str] = {}
    crashed: dict[int, str] = {}
    done_sessions: set[int] = set()

    async def one_session(n: int) -> None:
        session = RawSession(fleet.url)
        wires[n] = session.recorder
        try:
            session_ids[n] = await session.open()
            await calls_of(n, session)
        except Exception as err:  # noqa: BLE001 - a client that dies is reported, not raised
            crashed[n] = f"{type(err).__name__}: {err!r}"[:300]
        finally:
            await session.aclose()
            done_sessions.add(n)

    async def calls_of(n: int, c: RawSession) -> None:
        nonlocal completed
        for k in range(CALLS):
            upstream = ("local", "remote")[(n + k) % 2]
            slow = k % 2 == 1
            tool = f"{upstream}__{'slow' if slow else 'echo'}"
            text = f"s{n} c{k} {uuid.uuid4()}"
            call = Call(n, tool, time.monotonic())
            calls.append(call)
            try:
                got, is_error = await c.call_tool(tool, {"ms": 100} if slow else {"text": text})
                expected = ["done"] if slow else [text]
                call.ok = not is_error and got == expected
                if not call.ok:
                    call.error = f"unexpected result {got}"
            except Exception as err:  # noqa: BLE001 - every failure is counted
                call.error = f"{type(err).__name__}: {err}"
            call.ended = time.monotonic()
            completed += 1
            if completed >= KILL_AFTER:
                enough.set()

    async def killer() -> None:
        await enough.wait()
        killed["start"] = time.monotonic()
        await anyio.to_thread.run_sync(fleet.kill_replica, victim)
        killed["end"] = time.monotonic()

    began = time.monotonic()
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            for n in range(SESSIONS):
                tg.start_soon(one_session, n)
    elapsed = time.monotonic() - began

    failed = [c for c in calls if not c.ok]
    after_kill = [c for c in calls if c.started > killed["end"]]
    served = fleet.lb.served_by()
    by_server: dict[str, dict[int, int]] = {}
    for server, status in served:
        by_server.setdefault(server, {}).setdefault(status, 0)
        by_server[server][status] += 1
    print(f"\n[fleet] {len(calls)} calls by {SESSIONS} sessions in {elapsed:.1f}s; r{victim} SIGKILLed after "
          f"{KILL_AFTER} completed calls; {len(failed)} failed; {len(after_kill)} started after the kill")
    print(f"[fleet] haproxy (server -> status -> requests): {by_server}")
    for n, wire in sorted(wires.items()):
        for e in wire.exchanges:
            if e.error or (e.status or 0) >= 400:
                print(f"[fleet]   wire of client {n}: {e.method} {e.rpc} started {e.started - killed['start']:+.3f}s "
                      f"after the kill -> {e.status or e.error}")
    for n, why in sorted(crashed.items()):
        print(f"[fleet]   client {n} crashed: {why}")
    for c in failed:
        print(f"[fleet]   failed: session {c.session} {c.tool} started {c.started - killed['start']:+.3f}s "
              f"ended {c.ended - killed['start']:+.3f}s: {c.error}")

    assert not crashed, f"{len(crashed)} clients died (see above)"
    assert len(calls) == SESSIONS * CALLS
    assert len(set(session_ids.values())) == SESSIONS
    # Every session kept its id and never re-initialized.
    for n, wire in wires.items():
        sid = session_ids[n]
        assert len(wire.initializes()) == 1
        assert wire.session_ids_sent() <= {sid}
    # Only requests in flight at the kill may fail: each started before the victim was dead.
    late = [c for c in failed if c.started > killed["end"]]
    assert not late, f"{len(late)} calls started after the kill failed: {late[:5]}"
    # A session has one call in flight at a time, so at most one failure per session, and no more
    # failures than haproxy saw requests die on the victim (502 / aborted there).
    per_session: dict[int, int] = {}
    for c in failed:
        per_session[c.session] = per_session.get(c.session, 0) + 1
    assert all(v <= 1 for v in per_session.values()), per_session
    # ... and each failure is a request the load balancer could not complete (502 / aborted) on
    # the wire, sent before the kill. (haproxy's own log is not used here: it is flushed late.)
    died = [e for wire in wires.values() for e in wire.exchanges
            if (e.error or (e.status or 0) >= 500) and e.started <= killed["end"]]
    assert len(failed) <= len(died), f"{len(failed)} client failures, {len(died)} requests died before the kill"
    assert sum(by_server.get(f"r{victim}", {}).values()) > 0, f"r{victim} served nothing before the kill: {by_server}"
    # Every session went on to complete calls after the kill.
    for n in range(SESSIONS):
        later = [c for c in after_kill if c.session == n]
        assert later and all(c.ok for c in later), f"session {n} after the kill: {later}"


# --- 3. Redis outage: 503 + Retry-After, never 404; the same sessions come back -----------------


def raw_post(url: str, message: dict, session: str | None = None, timeout: float = 10.0):
    """One POST; returns (status, headers, parsed JSON body or None)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    if session:
        headers["Mcp-Session-Id"] = session
    request = urllib.request.Request(url, data=json.dumps(message).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, hdrs, body = response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        status, hdrs, body = err.code, dict(err.headers), err.read().decode()
    ctype = {k.lower(): v for k, v in hdrs.items()}.get("content-type", "")
    parsed = None
    if ctype.startswith("application/json") and body:
        parsed = json.loads(body)
    elif ctype.startswith("text/event-stream"):
        for line in body.splitlines():
            if line.startswith("data:") and line[5:].strip():
                data = json.loads(line[5:])
                if data.get("id") == message.get("id"):
                    parsed = data
    return status, {k.lower(): v for k, v in hdrs.items()}, parsed


def raw_session(url: str) -> str:
    status, headers, body = raw_post(url, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "fleet-raw", "version": "0"}}})
    assert status == 200 and "result" in body, (status, body)
    sid = headers["mcp-session-id"]
    status, _, _ = raw_post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    assert status == 202, status
    return sid


def raw_echo(url: str, sid: str, text: str, rpc_id: int = 2):
    return raw_post(url, {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                          "params": {"name": "local__echo", "arguments": {"text": text}}}, sid)


async def test_a_redis_outage_is_503_and_the_same_sessions_come_back():
    fleet = start_fleet(replicas=REPLICAS, upstreams=("stdio",))
    try:
        await _redis_outage(fleet)
    except BaseException:
        print(f"\n[fleet] process logs (in {fleet.logdir}):\n{fleet.logs(20)}")
        raise
    finally:
        fleet.teardown()


async def _redis_outage(fleet: Fleet) -> None:
    url = fleet.url
    raw_sids = [raw_session(url) for _ in range(3)]
    for sid in raw_sids:
        for n in range(REPLICAS):
            status, _, body = raw_echo(url, sid, f"before {n}")
            assert status == 200 and body["result"]["content"][0]["text"] == f"before {n}", (status, body)

    client, wire = recording_client(url)
    with anyio.fail_after(60):
        async with client as c:
            sdk_sid = wire.initializes()[0].returned_session
            await assert_echo(c, "local__echo", "sdk before the outage")

            served_before = len(fleet.lb.served_by())
            outage_started = time.monotonic()
            await anyio.to_thread.run_sync(fleet.stop_redis)

            answers = []
            for n, sid in enumerate(raw_sids * 2):  # 6 requests: every replica answers twice
                status, headers, body = await anyio.to_thread.run_sync(raw_echo, url, sid, f"during {n}")
                answers.append((status, headers.get("retry-after"), body))
            new_session = await anyio.to_thread.run_sync(
                raw_post, url, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                           "clientInfo": {"name": "fleet-raw", "version": "0"}}})
            with pytest.raises(Exception) as sdk_error:
                await c.call_tool("local__echo", {"text": "during the outage"})
            during = fleet.lb.served_by()[served_before:]
            print(f"\n[fleet] during the outage: {[(s, r) for s, r, _ in answers]}; initialize -> {new_session[0]}; "
                  f"SDK call -> {sdk_error.value!r}; haproxy: {during}")

            for status, retry_after, body in answers:
                assert status == 503, (status, body)
                assert retry_after and retry_after.isdigit(), f"503 without a Retry-After: {retry_after!r}"
                assert body and "error" in body, body
            assert {s for s, _ in during if _ == 503} >= {r.name for r in fleet.replicas}, \
                f"not every replica answered 503: {during}"
            assert new_session[0] == 503, new_session

            restart_at = time.monotonic()
            await anyio.to_thread.run_sync(fleet.start_redis)
            print(f"[fleet] redis down {restart_at - outage_started:.1f}s; back (AOF) in "
                  f"{time.monotonic() - restart_at:.2f}s")

            for sid in raw_sids:
                for n in range(REPLICAS):
                    status, _, body = await anyio.to_thread.run_sync(raw_echo, url, sid, f"after {n}")
                    assert status == 200, (status, body)
                    assert body["result"]["content"][0]["text"] == f"after {n}", body
            for n in range(REPLICAS):
                await assert_echo(c, "local__echo", f"sdk after the outage {n}")

    assert len(wire.initializes()) == 1
    assert wire.session_ids_sent() == {sdk_sid}
    assert not [e for e in wire.exchanges if e.status == 404], "a 404 during or after the outage"
    errors = sum_metric(fleet, "mcpgate_session_lookups_total", outcome="store_error")
    print(f"[fleet] session_lookups_total{{outcome=store_error}} over the fleet: {errors}")
    assert errors >= 6


# --- 4. a subscription made on one replica feeds the GET stream held by another ---------------


def _read_get_stream(url: str, sid: str, seconds: float, out: list[str]) -> None:
    request = urllib.request.Request(url, headers={
        "Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    deadline = time.monotonic() + seconds
    try:
        with urllib.request.urlopen(request, timeout=seconds) as response:
            for line in response:
                out.append(line.decode(errors="replace").strip())
                if time.monotonic() > deadline:
                    return
    except OSError:
        pass  # read timeout: the bounded wait is over


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_updates_reach_the_get_stream_whichever_replica_took_the_subscribe(kind):
    """Deterministic form of what the load balancer does at random: the client's GET stream is
    held by r1, its resources/subscribe is served by r2. Updates must still reach the stream."""
    fleet = start_fleet(replicas=REPLICAS, upstreams=(kind,))
    try:
        r0, r1, r2 = (r.url for r in fleet.replicas)
        sid = raw_session(r0)
        lines: list[str] = []
        reader = anyio.to_thread.run_sync(_read_get_stream, r1, sid, 7.0, lines)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: reader)
            await anyio.sleep(0.5)
            status, _, body = await anyio.to_thread.run_sync(raw_post, r2, {
                "jsonrpc": "2.0", "id": 3, "method": "resources/subscribe", "params": {"uri": WATCHED}}, sid)
            assert status == 200 and "result" in body, (status, body)
        updates = [l for l in lines if l.startswith("data:") and "notifications/resources/updated" in l]
        print(f"\n[fleet] {kind}: GET on r1, subscribe on r2 -> GET stream lines {lines}")
        assert len(updates) >= 2, (f"{len(updates)} notifications/resources/updated on the GET stream (r1) in 6.5 s "
                                   f"after resources/subscribe was served by r2")
    except BaseException:
        print(f"\n[fleet] logs in {fleet.logdir}")
        raise
    finally:
        fleet.teardown()
