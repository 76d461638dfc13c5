"""End-to-end through the fleet (tests/fleet/fleet.py: Redis, 3 replicas, haproxy round-robin
with no stickiness): the two multi round-trip bridges, with the Python `mcp` SDK's own clients.

* **Modern client, legacy upstream.** The SDK's ``Client`` in its default ``mode="auto"``
  (settles on 2026-07-28) calls ``legacy__test_input_required_result_multi_round``; upstream
  ``legacy`` is a fixture process configured ``era = "legacy"``, so the gateway calls it in a
  legacy upstream session and the fixture asks its two elicitations in the middle of the call.
  The gateway suspends the call on the replica that holds it and answers ``input_required``
  (the question under ``mcpgate-input``); each retry lands on another replica (round-robin),
  which hands the answer to the holding replica over the Redis bus.
* **Legacy client, modern-only upstream.** The SDK's ``Client`` pinned to ``mode="legacy"``
  (``initialize``, a session) calls ``modern__test_input_required_result_multi_round``;
  upstream ``modern`` is a fixture started with ``--modern-only`` (it refuses every legacy
  request) and configured ``era = "modern"``. Its ``input_required`` inputs reach the client
  as ordinary ``elicitation/create`` requests on the call's stream, the answers are POSTed to
  other replicas than the call's, and the result carries no modern field.

Which replica served what comes from haproxy's log (each request carries a ``?rq=`` tag, see
test_modern.py's ``Wire``). Marked ``fleet``: run by tests/fleet/run-all.sh, deselected by
tests/ci.sh's plain Python step. Run alone:

    target/tools/venv/bin/python -m pytest -v -s tests/e2e/python/test_bridges.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fleet"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import Fleet  # noqa: E402
from test_modern import (  # noqa: E402
    MODERN,
    MULTI_ROUND,
    Exchange,
    Wire,
    assert_modern_and_sessionless,
    assert_mrtr_exchange,
    modern_client,
    served_by,
    texts,
)

pytestmark = [pytest.mark.anyio, pytest.mark.fleet]

TIMEOUT = 30  # seconds for any one test's client work
LEGACY_UPSTREAM = {"name": "legacy", "transport": "http", "era": "legacy", "fixture": []}
MODERN_UPSTREAM = {"name": "modern", "transport": "http", "era": "modern", "fixture": ["--modern-only"]}
STEPS = ["Step 1: What is your name?", "Step 2: What is your favorite color?"]
BRIDGE_KEY = "mcpgate-input"  # where the gateway puts a legacy upstream's question
STATE_PREFIX = "mcpgate.s2."  # the gateway's sealed requestState
MODERN_FIELDS = ("resultType", "ttlMs", "cacheScope", "inputRequests", "requestState")
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"


@pytest.fixture(scope="module")
def fleet(request):
    """Redis + 3 replicas + haproxy; upstreams ``local`` (stdio, one child per replica),
    ``legacy`` (one HTTP fixture, ``era = "legacy"``) and ``modern`` (one HTTP fixture with
    ``--modern-only``, ``era = "modern"``), both fixtures shared by every replica."""
    stack = Fleet(replicas=3, upstreams=("stdio",), extra_upstreams=(LEGACY_UPSTREAM, MODERN_UPSTREAM))
    try:
        stack.start()
        yield stack
    finally:
        if request.session.testsfailed:
            print(f"\n[fleet] process logs (in {stack.logdir}):\n{stack.logs(30)}")
        stack.teardown()


def answering(name: str, color: str, seen: list[str]):
    """An elicitation callback that fills exactly the fields asked for: `name` or `color`."""

    async def elicit(context, params: types.ElicitRequestParams) -> types.ElicitResult:
        seen.append(params.message)
        answers = {"name": name, "color": color}
        wanted = params.requested_schema.get("properties", {})
        assert set(wanted) <= set(answers), f"asked for unknown fields {wanted}"
        return types.ElicitResult(action="accept", content={k: answers[k] for k in wanted})

    return elicit


def assert_rounds_on_different_replicas(fleet: Fleet, posts: list[Exchange], what: str) -> list[str]:
    served = served_by(fleet, [p.tag for p in posts])
    replicas = [served[p.tag][0] for p in posts]
    print(f"\n[fleet] {what}: served by {replicas}")
    assert all(status == 200 for _, status in served.values()), served
    for before, after in zip(replicas, replicas[1:]):
        assert before != after, f"two consecutive rounds on {before}: {replicas}"
    return replicas


# --- modern client, legacy upstream ------------------------------------------------------------


async def test_modern_client_answers_a_legacy_upstreams_elicitations_across_replicas(fleet):
    tool = f"legacy__{MULTI_ROUND}"
    seen: list[str] = []
    client, wire = modern_client(fleet.url, elicitation_callback=answering("Alice", "blue", seen))
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            assert c.protocol_version == MODERN, c.protocol_version
            result = await c.call_tool(tool, {})
    assert not result.is_error, result
    assert texts(result) == ["Alice's favorite color is blue."], result
    assert seen == STEPS, seen

    # On the wire: two input_required rounds, each bridged from the legacy upstream's
    # mid-call elicitation/create under `mcpgate-input`, with the gateway's sealed state; each
    # retry carries the SDK's answer under that key.
    posts = assert_mrtr_exchange(wire, tool, rounds=2)
    fields = ["name", "color"]
    for n, post in enumerate(posts[:2]):
        interim = post.result()
        assert set(interim["inputRequests"]) == {BRIDGE_KEY}, interim
        asked = interim["inputRequests"][BRIDGE_KEY]
        assert asked["method"] == "elicitation/create", asked
        assert asked["params"]["message"] == STEPS[n], asked
        assert list(asked["params"]["requestedSchema"]["properties"]) == [fields[n]], asked
        assert interim["requestState"].startswith(STATE_PREFIX), interim
        answer = posts[n + 1].body[0]["params"]["inputResponses"]
        assert set(answer) == {BRIDGE_KEY}, answer
        assert answer[BRIDGE_KEY]["action"] == "accept", answer
        assert answer[BRIDGE_KEY]["content"] == {fields[n]: ["Alice", "blue"][n]}, answer
    final = posts[2].result()
    assert final.get("resultType") == "complete", final
    assert_modern_and_sessionless(wire)

    # The call was suspended on the first POST's replica; both retries landed elsewhere.
    replicas = assert_rounds_on_different_replicas(fleet, posts, tool)
    assert replicas[0] not in replicas[1:], f"a retry landed on the suspending replica: {replicas}"


async def test_two_modern_clients_bridged_at_once_get_their_own_answers(fleet):
    """Two calls suspended at the same time (two clients of one principal, on whichever
    replicas round-robin gives them): client a answers its first question only once b's call
    is suspended too. Each result has its own client's answers."""
    tool = f"legacy__{MULTI_ROUND}"
    answers = {"a": ("Alice", "blue"), "b": ("Bob", "green")}
    seen = {k: [] for k in answers}
    results: dict[str, list[str]] = {}
    wires: dict[str, Wire] = {}
    gate_b = anyio.Event()  # b's first round is asked only after a's first round

    async def run(key: str) -> None:
        name, color = answers[key]
        inner = answering(name, color, seen[key])

        async def elicit(context, params):
            if key == "a" and len(seen["a"]) == 0:
                gate_b.set()
                with anyio.fail_after(TIMEOUT):
                    while len(seen["b"]) < 1:  # answer a's first question after b was asked
                        await anyio.sleep(0.02)
            return await inner(context, params)

        client, wires[key] = modern_client(fleet.url, elicitation_callback=elicit)
        async with client as c:
            if key == "b":
                await gate_b.wait()
            results[key] = texts(await c.call_tool(tool, {}))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a")
            tg.start_soon(run, "b")
    for key, (name, color) in answers.items():
        assert results[key] == [f"{name}'s favorite color is {color}."], results
        assert seen[key] == STEPS, seen
        assert_mrtr_exchange(wires[key], tool, rounds=2)
        assert_modern_and_sessionless(wires[key])


# --- legacy client, modern-only upstream -------------------------------------------------------


def legacy_client(url: str, **kwargs) -> tuple[Client, Wire]:
    """The SDK's Client pinned to a legacy session (initialize), over a recorded HTTP client."""
    wire = Wire()
    http = httpx2.AsyncClient(transport=wire, timeout=httpx2.Timeout(30, read=60))
    kwargs.setdefault("read_timeout_seconds", 15)
    return Client(streamable_http_client(url, http_client=http), mode="legacy", **kwargs), wire


async def get_stream_opened(wire: Wire, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not any(e.method == "GET" and e.status is not None for e in wire.exchanges):
            await anyio.sleep(0.02)
    (get,) = [e for e in wire.exchanges if e.method == "GET"]
    assert get.status == 200, (get.status, get.response_headers)


async def test_legacy_client_answers_a_modern_only_upstreams_inputs_across_replicas(fleet):
    tool = f"modern__{MULTI_ROUND}"
    seen: list[str] = []
    client, wire = legacy_client(fleet.url, elicitation_callback=answering("Carol", "teal", seen))
    with anyio.fail_after(TIMEOUT):
        async with client as c:
            assert c.protocol_version != MODERN, c.protocol_version
            # The SDK opens its GET stream after initialize; once haproxy placed it, the call
            # and the two answers are the next three requests, each on another replica.
            await get_stream_opened(wire)
            result = await c.call_tool(tool, {})
    assert not result.is_error, result
    assert texts(result) == ["Carol's favorite color is teal."], result
    assert seen == STEPS, seen

    # A legacy session: initialize issued a session id, every later POST carries it, and no
    # request spoke 2026-07-28.
    inits = [e for e in wire.exchanges if e.rpc == ["initialize"]]
    assert len(inits) == 1, [e.rpc for e in wire.exchanges]
    sid = inits[0].response_headers.get("mcp-session-id")
    assert sid, inits[0].response_headers
    for e in wire.exchanges[1:]:
        assert e.headers.get("mcp-session-id") == sid, (e.method, e.rpc, e.headers)
        assert e.headers.get("mcp-protocol-version") != MODERN, (e.rpc, e.headers)

    # The call's stream: the two inputs as ordinary elicitation/create requests, then the
    # result, with no modern field in it.
    (call,) = wire.calls("tools/call", tool)
    assert call.response_headers.get("content-type", "").startswith("text/event-stream"), call.response_headers
    frames = call.replies()
    asks = [m for m in frames if m.get("method") == "elicitation/create"]
    assert [m["params"]["message"] for m in asks] == STEPS, frames
    assert all("id" in m for m in asks), asks
    result_raw = call.result()
    for name in MODERN_FIELDS:
        assert name not in result_raw, f"{name} reached a legacy client: {result_raw}"
    assert SERVER_INFO_META not in result_raw.get("_meta", {}), result_raw
    assert [m.get("method") for m in frames].count("elicitation/create") == 2, frames

    # The answers: one JSON-RPC response POST per ask, each accepted (202) by a replica other
    # than the one holding the call.
    answer_posts = [e for e in wire.exchanges if e.method == "POST" and e.rpc == ["(response)"]]
    assert [p.body[0]["id"] for p in answer_posts] == [m["id"] for m in asks], \
        [(p.body, p.status) for p in answer_posts]
    assert [p.body[0]["result"]["content"] for p in answer_posts] == [{"name": "Carol"}, {"color": "teal"}], \
        [p.body for p in answer_posts]
    served = served_by(fleet, [call.tag] + [p.tag for p in answer_posts])
    call_on = served[call.tag][0]
    answers_on = [served[p.tag][0] for p in answer_posts]
    print(f"\n[fleet] {tool}: call on {call_on}, answers on {answers_on}")
    assert served[call.tag][1] == 200, served
    assert all(served[p.tag][1] == 202 for p in answer_posts), served
    assert call_on not in answers_on, f"an answer landed on the call's replica {call_on}: {answers_on}"
