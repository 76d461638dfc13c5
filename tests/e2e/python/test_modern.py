"""End-to-end at protocol revision 2026-07-28: the Python `mcp` SDK's ``Client`` in its default
``mode="auto"`` probes ``server/discover``, settles on 2026-07-28 (no initialize, no session)
and answers multi round-trip requests (MRTR: ``resultType: "input_required"``) through its
elicitation callback.

Two places:

* one gateway in front of both fixture upstreams (conftest's ``gateway``): the era, tools,
  resources, prompts, progress and MRTR, for each upstream (``local`` over stdio, ``remote``
  over Streamable HTTP), and a ``subscriptions/listen`` stream (``Client.listen``) that
  carries the tool list changes of both upstreams and not the prompt changes it did not ask
  for;
* the fleet (tests/fleet/fleet.py: Redis, 3 replicas, haproxy round-robin with no stickiness),
  marked ``fleet`` and run only by tests/fleet/run-all.sh (tests/ci.sh's plain Python step
  deselects them): every round of one MRTR exchange is served by another replica than the
  round before (from haproxy's log), a listen stream held on one replica gets the change
  triggered on another (``remote``: one fixture process shared by the replicas; a ``local``
  trigger would reach only its own replica's child), and no modern client leaves a key in
  Redis.

Every HTTP exchange is recorded below the SDK (``Wire``, an httpx transport): request headers,
JSON-RPC bodies both ways, status and response headers, so that the assertions speak about the
wire. Each request also gets a unique ``?rq=`` query tag, which haproxy logs with the replica
that served it.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
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
from mcp.client.subscriptions import Subscription, ToolsListChanged

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fleet"))

from fleet import Fleet  # noqa: E402

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
PROTOCOL_META = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
TIMEOUT = 30  # seconds for any one test's client work
UPSTREAMS = ("local", "remote")
ELICIT = "test_input_required_result_elicitation"
MULTI_ROUND = "test_input_required_result_multi_round"
MRTR_PROMPT = "test_input_required_result_prompt"
SUBSCRIPTION_META = "io.modelcontextprotocol/subscriptionId"
TOOL_TRIGGER = "test_trigger_tool_change"
PROMPT_TRIGGER = "test_trigger_prompt_change"


# --- the wire recorder ------------------------------------------------------------------------


@dataclass
class Exchange:
    tag: str  # the ?rq= query tag haproxy logs
    method: str  # HTTP method
    headers: dict[str, str]  # request headers (lower-case names)
    body: list[dict] = field(default_factory=list)  # JSON-RPC messages sent
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    raw: bytearray = field(default_factory=bytearray)  # response body as read by the SDK

    @property
    def rpc(self) -> list[str]:
        return [m.get("method", "(response)") for m in self.body]

    def replies(self) -> list[dict]:
        """JSON-RPC messages of the response (a JSON body or every SSE ``data:`` event)."""
        text = self.raw.decode(errors="replace")
        if self.response_headers.get("content-type", "").startswith("text/event-stream"):
            out, data = [], []
            for line in text.replace("\r\n", "\n").split("\n"):
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif line == "" and data:
                    joined = "\n".join(data)
                    data = []
                    if joined.strip():
                        out.append(json.loads(joined))
            if data and "\n".join(data).strip():
                out.append(json.loads("\n".join(data)))
            return out
        return [json.loads(text)] if text.strip() else []

    def result(self) -> dict:
        """The ``result`` of the response to this request (exactly one request per POST)."""
        ids = [m["id"] for m in self.body if "id" in m and "method" in m]
        assert len(ids) == 1, self.body
        answers = [m for m in self.replies() if m.get("id") == ids[0] and "method" not in m]
        assert len(answers) == 1 and "result" in answers[0], f"{self.rpc} -> {self.status}: {self.replies()}"
        return answers[0]["result"]


class _Tee(httpx2.AsyncByteStream):
    def __init__(self, inner, sink: bytearray):
        self.inner = inner
        self.sink = sink

    async def __aiter__(self):
        async for chunk in self.inner:
            self.sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class Wire(httpx2.AsyncBaseTransport):
    """Records every exchange (see ``Exchange``) and tags each request's URL with ``?rq=``."""

    def __init__(self):
        self.inner = httpx2.AsyncHTTPTransport(trust_env=False)
        self.prefix = uuid.uuid4().hex[:8]
        self.counter = itertools.count(1)
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        tag = f"{self.prefix}-{next(self.counter)}"
        request.url = request.url.copy_merge_params({"rq": tag})
        entry = Exchange(tag, request.method, {k.lower(): v for k, v in request.headers.items()})
        if request.method == "POST":
            body = json.loads(await request.aread())
            entry.body = body if isinstance(body, list) else [body]
        self.exchanges.append(entry)
        response = await self.inner.handle_async_request(request)
        entry.status = response.status_code
        entry.response_headers = {k.lower(): v for k, v in response.headers.items()}
        response.stream = _Tee(response.stream, entry.raw)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def calls(self, method: str, name: str) -> list[Exchange]:
        """The POSTs of JSON-RPC `method` whose params name `name` (tool or prompt)."""
        return [e for e in self.exchanges
                if e.rpc == [method] and e.body[0].get("params", {}).get("name") == name]


def modern_client(url: str, **kwargs) -> tuple[Client, Wire]:
    """The SDK's Client in its default mode ("auto") over a recorded HTTP client."""
    wire = Wire()
    http = httpx2.AsyncClient(transport=wire, timeout=httpx2.Timeout(30, read=60))
    kwargs.setdefault("read_timeout_seconds", 15)
    return Client(streamable_http_client(url, http_client=http), **kwargs), wire


def texts(result) -> list[str]:
    return [block.text for block in result.content if isinstance(block, types.TextContent)]


def prompt_texts(result: types.GetPromptResult) -> list[str]:
    return [m.content.text for m in result.messages if isinstance(m.content, types.TextContent)]


def assert_modern_and_sessionless(wire: Wire) -> None:
    """Every request spoke 2026-07-28 (header and `_meta`), there was no initialize, no GET
    stream, no DELETE, and no response ever issued an Mcp-Session-Id."""
    assert wire.exchanges, "nothing was recorded"
    rpcs = [e.rpc for e in wire.exchanges]
    assert rpcs[0] == ["server/discover"], f"the client did not start with server/discover: {rpcs}"
    assert not [r for r in rpcs if "initialize" in r or "notifications/initialized" in r], rpcs
    assert {e.method for e in wire.exchanges} == {"POST"}, [(e.method, e.rpc) for e in wire.exchanges]
    for e in wire.exchanges:
        assert e.status == 200, (e.rpc, e.status, bytes(e.raw[:300]))
        assert e.headers.get("mcp-protocol-version") == MODERN, (e.rpc, e.headers)
        assert "mcp-session-id" not in e.headers, (e.rpc, e.headers)
        assert "mcp-session-id" not in e.response_headers, f"{e.rpc} was issued a session: {e.response_headers}"
        for message in e.body:
            if "method" in message and "id" in message:
                meta = message.get("params", {}).get("_meta", {})
                assert meta.get(PROTOCOL_META) == MODERN, message
                assert CAPABILITIES_META in meta, message


def on_elicit_name(seen: list[str]):
    """An elicitation callback answering every field it is asked for: name Alice, color blue."""

    async def elicit(context, params: types.ElicitRequestParams) -> types.ElicitResult:
        seen.append(params.message)
        answers = {"name": "Alice", "color": "blue", "context": "the e2e context"}
        wanted = params.requested_schema.get("properties", {})
        return types.ElicitResult(action="accept", content={k: answers[k] for k in wanted})

    return elicit


def assert_mrtr_exchange(wire: Wire, tool: str, rounds: int) -> list[Exchange]:
    """The tools/call POSTs of one MRTR exchange of `tool`: `rounds` input_required results,
    each retry echoing the previous requestState byte-exact with the answers, and then the
    complete result. Returns the POSTs, in order."""
    posts = wire.calls("tools/call", tool)
    assert len(posts) == rounds + 1, [e.rpc for e in wire.exchanges]
    states = []
    for n, post in enumerate(posts):
        params = post.body[0]["params"]
        result = post.result()
        if n == 0:
            assert "inputResponses" not in params and "requestState" not in params, params
        else:
            assert params.get("inputResponses"), f"retry {n} carries no inputResponses: {params}"
            if states[-1] is not None:
                assert params.get("requestState") == states[-1], f"retry {n} did not echo the requestState"
        if n < rounds:
            assert result.get("resultType") == "input_required", result
            assert result.get("inputRequests"), result
            states.append(result.get("requestState"))
        else:
            assert result.get("resultType", "complete") == "complete", result
    sealed = [s for s in states if s is not None]
    assert len(set(sealed)) == len(sealed), f"a requestState was repeated across rounds: {sealed}"
    return posts


def listen_exchange(wire: Wire) -> Exchange:
    """The one subscriptions/listen POST."""
    posts = [e for e in wire.exchanges if e.rpc == ["subscriptions/listen"]]
    assert len(posts) == 1, [e.rpc for e in wire.exchanges]
    return posts[0]


async def next_change(sub: Subscription, timeout: float = 10):
    with anyio.fail_after(timeout):
        return await anext(sub)


async def trigger_changes(c: Client, upstream: str) -> list[str]:
    """Announces a prompt list change, then a tool list change, on `upstream`; returns the
    trigger results' texts ("... announced to N listen stream(s)")."""
    out = []
    for trigger in (PROMPT_TRIGGER, TOOL_TRIGGER):
        result = await c.call_tool(f"{upstream}__{trigger}", {})
        assert not result.is_error, result
        out.extend(texts(result))
    return out


def assert_listen_stream(post: Exchange, tool_changes: int) -> None:
    """On the wire: the listen request asked for tool list changes only, and its stream
    carried the acknowledgement (with the request id and the honoured filter) and then exactly
    `tool_changes` tool list changes, each tagged with the request id, and no prompt change
    (the triggers announce a prompt change before every tool change, so one relayed would be
    on the stream before the last tool change)."""
    (request,) = post.body
    sid = request["id"]
    assert request["params"]["notifications"] == {"toolsListChanged": True}, request
    assert post.response_headers.get("content-type", "").startswith("text/event-stream"), post.response_headers
    frames = post.replies()
    assert frames, "the listen stream carried nothing"
    ack = frames[0]
    assert ack.get("method") == "notifications/subscriptions/acknowledged", frames
    assert ack["params"]["_meta"][SUBSCRIPTION_META] == sid, ack
    assert ack["params"]["notifications"] == {"toolsListChanged": True}, ack
    changes = frames[1:]
    assert [m.get("method") for m in changes] == ["notifications/tools/list_changed"] * tool_changes, frames
    for change in changes:
        assert change["params"]["_meta"][SUBSCRIPTION_META] == sid, change


# --- one gateway --------------------------------------------------------------------------------


async def test_auto_mode_settles_on_2026_07_28(gateway):
    client, wire = modern_client(gateway.url)
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            version = c.protocol_version
            info = c.server_info
            names = {tool.name for tool in (await c.list_tools()).tools}
    assert version == MODERN, version
    assert info is not None and info.name == "mcpgate", info
    assert {"local__echo", "remote__echo"} <= names, sorted(names)
    discover = wire.exchanges[0].result()
    assert MODERN in discover["supportedVersions"], discover
    assert_modern_and_sessionless(wire)


async def test_tools_resources_and_prompts_of_both_upstreams(gateway):
    client, wire = modern_client(gateway.url)
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            names = {tool.name for tool in (await c.list_tools()).tools}
            for upstream in UPSTREAMS:
                for tool in ("echo", "whoami", "test_tool_with_progress", ELICIT, MULTI_ROUND):
                    assert f"{upstream}__{tool}" in names, sorted(names)
                text = f"modern {upstream} {uuid.uuid4()}"
                echoed = await c.call_tool(f"{upstream}__echo", {"text": text})
                assert not echoed.is_error and texts(echoed) == [text], echoed
                who = await c.call_tool(f"{upstream}__whoami", {})
                assert not who.is_error and texts(who) == [upstream], who

            uris = {str(r.uri) for r in (await c.list_resources()).resources}
            assert "test://static-text" in uris, uris
            read = await c.read_resource("test://static-text")
            assert [x.text for x in read.contents] == ["This is the content of the static text resource."], read

            prompts = {p.name for p in (await c.list_prompts()).prompts}
            for upstream in UPSTREAMS:
                assert f"{upstream}__test_prompt_with_arguments" in prompts, sorted(prompts)
                got = await c.get_prompt(f"{upstream}__test_prompt_with_arguments", {"arg1": upstream, "arg2": "two"})
                assert prompt_texts(got) == [f"Prompt with arguments: arg1='{upstream}', arg2='two'"], got
    assert not {"echo", "whoami"} & names, "unprefixed fixture tools leaked into the catalog"
    assert_modern_and_sessionless(wire)


async def test_progress_notifications_reach_the_client(gateway, upstream):
    updates: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    client, wire = modern_client(gateway.url)
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            result = await c.call_tool(f"{upstream}__test_tool_with_progress", {}, progress_callback=on_progress)
    assert not result.is_error, result
    progress = [p for p, _ in updates]
    assert len(progress) >= 3, updates
    assert progress == sorted(progress), f"progress went backwards: {updates}"
    assert progress[-1] == 100 and updates[-1][1] == 100, updates
    # On the wire: the tool call's own response stream carried the progress notifications.
    (post,) = wire.calls("tools/call", f"{upstream}__test_tool_with_progress")
    token = post.body[0]["params"]["_meta"]["progressToken"]
    notes = [m for m in post.replies() if m.get("method") == "notifications/progress"]
    assert len(notes) == len(updates) and all(m["params"]["progressToken"] == token for m in notes), notes
    assert_modern_and_sessionless(wire)


async def test_an_elicitation_answered_through_mrtr(gateway, upstream):
    seen: list[str] = []
    client, wire = modern_client(gateway.url, elicitation_callback=on_elicit_name(seen))
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            result = await c.call_tool(f"{upstream}__{ELICIT}", {})
    assert not result.is_error, result
    assert texts(result) == ["Hello, Alice!"], result
    assert seen == ["What is your name?"], seen
    posts = assert_mrtr_exchange(wire, f"{upstream}__{ELICIT}", rounds=1)
    asked = posts[0].result()["inputRequests"]
    assert set(asked) == {"user_name"} and asked["user_name"]["method"] == "elicitation/create", asked
    assert posts[1].body[0]["params"]["inputResponses"]["user_name"]["content"] == {"name": "Alice"}, posts[1].body
    assert_modern_and_sessionless(wire)


async def test_a_multi_round_exchange(gateway, upstream):
    seen: list[str] = []
    client, wire = modern_client(gateway.url, elicitation_callback=on_elicit_name(seen))
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            result = await c.call_tool(f"{upstream}__{MULTI_ROUND}", {})
    assert not result.is_error, result
    assert texts(result) == ["Alice's favorite color is blue."], result
    assert seen == ["Step 1: What is your name?", "Step 2: What is your favorite color?"], seen
    posts = assert_mrtr_exchange(wire, f"{upstream}__{MULTI_ROUND}", rounds=2)
    assert all(p.result().get("requestState") for p in posts[:2]), "a round without a requestState"
    assert_modern_and_sessionless(wire)


async def test_a_prompt_that_needs_input(gateway, upstream):
    seen: list[str] = []
    client, wire = modern_client(gateway.url, elicitation_callback=on_elicit_name(seen))
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            result = await c.get_prompt(f"{upstream}__{MRTR_PROMPT}")
    assert prompt_texts(result) == ["Answer with this context in mind: the e2e context"], result
    assert seen == ["What context should the prompt use?"], seen
    posts = wire.calls("prompts/get", f"{upstream}__{MRTR_PROMPT}")
    assert [p.result().get("resultType") for p in posts] == ["input_required", "complete"], \
        [p.result() for p in posts]
    assert_modern_and_sessionless(wire)


async def test_a_listen_stream_carries_only_the_changes_asked_for(gateway):
    client, wire = modern_client(gateway.url)
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            async with c.listen(tools_list_changed=True) as sub:
                assert sub.honored.tools_list_changed and not sub.honored.prompts_list_changed, sub.honored
                for upstream in UPSTREAMS:
                    announced = await trigger_changes(c, upstream)
                    assert all("announced to 1 listen stream" in t for t in announced), announced
                    assert await next_change(sub) == ToolsListChanged(), upstream
                    # Also through the SDK: the next event is not there yet.
                    with anyio.move_on_after(0.5) as idle:
                        extra = await anext(sub)
                    assert idle.cancelled_caught, f"an unexpected event after {upstream}'s changes: {extra}"
                subscription_id = sub.subscription_id
    post = listen_exchange(wire)
    assert post.body[0]["id"] == subscription_id, post.body
    assert_listen_stream(post, tool_changes=len(UPSTREAMS))
    assert_modern_and_sessionless(wire)


# --- the fleet ----------------------------------------------------------------------------------


def redis_keys(fleet: Fleet, pattern: str = "mcpgate:*") -> list[str]:
    out = subprocess.run(["redis-cli", "-p", str(fleet.redis.port), "--scan", "--pattern", pattern],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return sorted(line for line in out.splitlines() if line)


def served_by(fleet: Fleet, tags: list[str], timeout: float = 10.0) -> dict[str, tuple[str, int]]:
    """tag -> (replica, status) from haproxy's log, waiting until every tag is logged."""
    wanted = set(tags)
    pattern = re.compile(r" replicas/(\S+) \S+ (-?\d+) .*\"[A-Z]+ /mcp\?rq=([0-9a-f]+-\d+) ")
    deadline = time.monotonic() + timeout
    found: dict[str, tuple[str, int]] = {}
    while time.monotonic() < deadline:
        text = fleet.lb.proc.stdout_log.read_text(errors="replace")
        found = {m.group(3): (m.group(1), int(m.group(2))) for m in map(pattern.search, text.splitlines()) if m}
        if wanted <= set(found):
            return {t: found[t] for t in tags}
        time.sleep(0.05)
    raise AssertionError(f"haproxy never logged requests {sorted(wanted - set(found))}")


def listens_opened(fleet: Fleet) -> dict[str, float]:
    """replica -> how many subscriptions/listen requests it has answered (counted when the
    stream opens)."""
    return {r.name: fleet.metric(r.index, "mcpgate_requests_total", method="subscriptions/listen")
            for r in fleet.replicas}


@pytest.fixture(scope="module")
def fleet(request):
    """Redis + 3 replicas + haproxy, both fixture upstreams (``remote`` is one fixture process
    all replicas share; ``local`` is a stdio child of each replica). Redis is emptied once the
    fleet is up (the readiness probes' legacy sessions leave tombstones)."""
    stack = Fleet(replicas=3, upstreams=("stdio", "http"))
    try:
        stack.start()
        assert stack.redis.command("FLUSHALL") == "+OK"
        yield stack
    finally:
        if request.session.testsfailed:
            print(f"\n[fleet] process logs (in {stack.logdir}):\n{stack.logs(30)}")
        stack.teardown()


@pytest.mark.fleet
async def test_fleet_auto_mode_tools_resources_and_prompts(fleet):
    client, wire = modern_client(fleet.url)
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            assert c.protocol_version == MODERN, c.protocol_version
            for upstream in UPSTREAMS:
                for n in range(3):  # round-robin: every replica serves each upstream once
                    text = f"fleet {upstream} {n} {uuid.uuid4()}"
                    echoed = await c.call_tool(f"{upstream}__echo", {"text": text})
                    assert not echoed.is_error and texts(echoed) == [text], echoed
            read = await c.read_resource("test://static-text")
            assert [x.text for x in read.contents] == ["This is the content of the static text resource."], read
            got = await c.get_prompt("remote__test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
            assert prompt_texts(got) == ["Prompt with arguments: arg1='a', arg2='b'"], got
    assert_modern_and_sessionless(wire)
    replicas = {server for server, _ in served_by(fleet, [e.tag for e in wire.exchanges]).values()}
    assert replicas == {r.name for r in fleet.replicas}, f"not every replica served this client: {replicas}"


# The multi-round tool keeps its progress in a requestState that the fixture seals too: the
# stdio children of the replicas (`local`) share that key (fleet.py sets
# MCPGATE_FIXTURE_STATE_KEY), as the instances of a scaled-out upstream would.
@pytest.mark.fleet
@pytest.mark.parametrize("tool,rounds", [(ELICIT, 1), (MULTI_ROUND, 2)])
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_fleet_mrtr_rounds_are_served_by_different_replicas(fleet, tool, rounds, upstream):
    seen: list[str] = []
    client, wire = modern_client(fleet.url, elicitation_callback=on_elicit_name(seen))
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            result = await c.call_tool(f"{upstream}__{tool}", {})
    assert not result.is_error, result
    expected = {ELICIT: "Hello, Alice!", MULTI_ROUND: "Alice's favorite color is blue."}[tool]
    assert texts(result) == [expected], result
    assert len(seen) == rounds, seen
    posts = assert_mrtr_exchange(wire, f"{upstream}__{tool}", rounds)
    assert_modern_and_sessionless(wire)

    served = served_by(fleet, [p.tag for p in posts])
    replicas = [served[p.tag][0] for p in posts]
    print(f"\n[fleet] {upstream}__{tool}: rounds served by {replicas}")
    assert all(status == 200 for _, status in served.values()), served
    for before, after in zip(replicas, replicas[1:]):
        assert before != after, f"two consecutive rounds on {before}: {replicas}"


@pytest.mark.fleet
async def test_fleet_a_listen_stream_gets_a_change_triggered_on_another_replica(fleet):
    """The listen stream is held on one replica; the remote (shared HTTP fixture) triggers go
    to the next replicas (round-robin), and the tool change reaches the stream, tagged with
    its subscription id; the prompt change, not asked for, does not. Both triggers were
    served by other replicas than the listen stream: the stream's replica is the one whose
    listen counter rose when it opened (haproxy logs a request only when it ends, and the
    SDK leaves the stream's connection open after the listen), the triggers' replicas are
    in haproxy's log."""
    client, wire = modern_client(fleet.url)
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            # The SDK lists the tools after its first tool call (for their output schemas);
            # listed now, the two triggers are the next two requests after the listen, each
            # on another replica than the stream.
            await c.list_tools()
            before = listens_opened(fleet)
            async with c.listen(tools_list_changed=True) as sub:
                after = listens_opened(fleet)
                assert sub.honored.tools_list_changed and not sub.honored.prompts_list_changed, sub.honored
                announced = await trigger_changes(c, "remote")
                assert all("announced to" in t for t in announced), announced
                assert await next_change(sub) == ToolsListChanged()
                with anyio.move_on_after(0.5) as idle:
                    extra = await anext(sub)
                assert idle.cancelled_caught, f"an unexpected event: {extra}"
    post = listen_exchange(wire)
    assert_listen_stream(post, tool_changes=1)
    assert_modern_and_sessionless(wire)

    opened = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    assert list(opened.values()) == [1], f"listen streams opened per replica: {opened}"
    (listen_on,) = opened
    triggers = {t: wire.calls("tools/call", f"remote__{t}") for t in (PROMPT_TRIGGER, TOOL_TRIGGER)}
    assert all(len(posts) == 1 for posts in triggers.values()), triggers
    served = served_by(fleet, [posts[0].tag for posts in triggers.values()])
    on = {t: served[posts[0].tag][0] for t, posts in triggers.items()}
    print(f"\n[fleet] listen stream on {listen_on}, triggers on {on}")
    assert all(status == 200 for _, status in served.values()), served
    assert listen_on not in on.values(), f"a trigger was served by the listen stream's replica {listen_on}: {on}"


@pytest.mark.fleet
async def test_fleet_modern_clients_leave_nothing_in_redis(fleet):
    """Runs after the fleet tests above (and makes modern traffic of its own): not one
    mcpgate:* key. Then a legacy session, as a control, does write some."""
    seen: list[str] = []
    client, wire = modern_client(fleet.url, elicitation_callback=on_elicit_name(seen))
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            for upstream in UPSTREAMS:
                assert texts(await c.call_tool(f"{upstream}__{ELICIT}", {})) == ["Hello, Alice!"]
                assert texts(await c.call_tool(f"{upstream}__whoami", {})) == [upstream]
            assert texts(await c.call_tool(f"remote__{MULTI_ROUND}", {})) == ["Alice's favorite color is blue."]
    assert_modern_and_sessionless(wire)
    assert redis_keys(fleet) == [], "modern (sessionless) requests wrote to Redis"

    # Control: the same check sees what a legacy session writes.
    sid = _legacy_initialize(fleet.url)
    keys = redis_keys(fleet)
    assert any(sid in key for key in keys), f"legacy session {sid} not found in Redis: {keys}"


def _legacy_initialize(url: str) -> str:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "modern-e2e-control", "version": "0"}}}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    with urllib.request.urlopen(request, timeout=10) as response:
        sid = response.headers.get("Mcp-Session-Id")
        response.read()
    assert sid, "a legacy initialize through the fleet got no Mcp-Session-Id"
    return sid
