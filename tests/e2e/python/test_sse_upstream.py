"""End-to-end: a real HTTP+SSE (2024-11-05) server from PyPI as mcpgate's `transport = "sse"`
upstream: the Python SDK's own `SseServerTransport` (sse_upstream_server.py), whose sessions
live as long as their GET stream. The Python SDK's Streamable HTTP client calls it through
the gateway; the upstream is then restarted on the same port (every connection killed, every
session forgotten), and the next call on the same client session re-initializes it behind
the client's back, counted in mcpgate_upstream_reinitializations_total."""

import sys
import tempfile
from pathlib import Path

import anyio
import pytest
from harness import GATEWAY_BIN, HarnessError, Proc, gateway_config, metric, missing_binary
from mcp import Client
from sdk_checks import TIMEOUT, texts

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).resolve().parent / "sse_upstream_server.py"
REINITIALIZED = 'mcpgate_upstream_reinitializations_total{upstream="py"}'


def start_server(logdir: Path, port: int) -> tuple[Proc, str]:
    """The SDK's SSE server on `port` (0: a free one), and its stream's URL."""
    server = Proc(f"sse-server-{port}", [sys.executable, str(SERVER), str(port)], logdir)
    return server, server.next_line().removeprefix("sse on ").strip()


@pytest.fixture
def stack():
    """(gateway /mcp URL, admin URL, restart) with the SDK's SSE server as upstream `py`."""
    if not GATEWAY_BIN.is_file():
        raise HarnessError(missing_binary(GATEWAY_BIN))
    logdir = Path(tempfile.mkdtemp(prefix="mcpgate-sse-upstream-"))
    server, url = start_server(logdir, 0)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    procs = [server]

    def restart() -> None:
        procs[0].stop()
        procs[0] = start_server(logdir, port)[0]

    config = logdir / "mcpgate.toml"
    config.write_text(gateway_config([{"name": "py", "transport": "sse", "url": url, "timeout": "10s"}]))
    gateway = Proc("mcpgate", [str(GATEWAY_BIN), "serve", "--config", str(config)], logdir)
    try:
        mcp_url = gateway.wait_listening()
        admin = gateway.next_line().removeprefix("admin on ").strip()
        yield mcp_url, admin, restart
    finally:
        gateway.stop()
        procs[0].stop()
        print(f"\n[sse upstream] logs:\n{gateway.tail()}\n{procs[0].tail()}")


async def test_a_restarted_sse_upstream_is_reinitialized_behind_the_client(stack):
    mcp_url, admin, restart = stack
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, read_timeout_seconds=15) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "py__echo" in names, sorted(names)
            result = await client.call_tool("py__echo", {"text": "before"})
            assert texts(result) == ["before"], result
            assert metric(admin, REINITIALIZED) == 0.0

            restart()
            result = await client.call_tool("py__echo", {"text": "after the restart"})
            assert not result.is_error, result
            assert texts(result) == ["after the restart"], result
            assert metric(admin, REINITIALIZED) == 1.0
