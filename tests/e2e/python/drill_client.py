"""A real MCP client (the Python SDK's `Client`) in a process of its own, so that a drill can
freeze it with SIGSTOP as a hibernating laptop would be. It connects to the URL given as its
argument, then obeys one command per stdin line and answers one JSON line on stdout:

    call <tool> <json arguments>    -> {"texts": [...], "is_error": bool}
    numbers <count> <seconds>       -> {"numbers": [...]}: the `n` of every numbered log
                                       message so far, after waiting (at most <seconds>) for
                                       <count> of them
    wire                            -> {"initializes": k, "sessions": [...], "statuses": [...]}

The first line it prints is {"ready": "<session id>"}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import mcp_types as types

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_fleet import recording_client, texts  # noqa: E402


def say(value: dict) -> None:
    print(json.dumps(value), flush=True)


async def main(url: str) -> None:
    numbers: list[int] = []
    arrived = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        nonlocal arrived
        if isinstance(params.data, dict) and isinstance(params.data.get("n"), int):
            numbers.append(params.data["n"])
            arrived.set()

    client, wire = recording_client(url, logging_callback=on_log)
    async with client as c:
        say({"ready": wire.initializes()[0].returned_session})
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            command, _, rest = line.strip().partition(" ")
            if command == "call":
                tool, _, arguments = rest.partition(" ")
                result = await c.call_tool(tool, json.loads(arguments or "{}"))
                say({"texts": texts(result), "is_error": bool(result.is_error)})
            elif command == "numbers":
                count, seconds = rest.split()
                with anyio.move_on_after(float(seconds)):
                    while len(numbers) < int(count):
                        arrived = anyio.Event()
                        await arrived.wait()
                say({"numbers": numbers})
            elif command == "wire":
                say({
                    "initializes": len(wire.initializes()),
                    "sessions": sorted(s for s in wire.session_ids_sent() if s),
                    "statuses": sorted({e.status for e in wire.exchanges if e.status}),
                })


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
