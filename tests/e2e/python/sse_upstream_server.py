"""A real HTTP+SSE (2024-11-05) MCP server from PyPI: the Python SDK's `MCPServer.sse_app`
(`mcp.server.sse.SseServerTransport`, whose sessions live as long as their GET stream) with
one tool, `echo`. ``python sse_upstream_server.py PORT`` (0: a free port) binds 127.0.0.1,
prints ``sse on http://127.0.0.1:PORT/sse`` and serves until killed. Used by
test_sse_upstream.py as mcpgate's `transport = "sse"` upstream."""

import socket
import sys

import anyio
import uvicorn
from mcp.server import MCPServer

server = MCPServer("pysse")


@server.tool()
def echo(text: str) -> str:
    """Returns its text."""
    return text


async def main(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"sse on http://127.0.0.1:{sock.getsockname()[1]}/sse", flush=True)
    config = uvicorn.Config(server.sse_app(), log_level="warning")
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]))
