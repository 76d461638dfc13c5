"""A raw MCP POST over HTTP for the deployment tests (standard library only): shared by the
chart's live-reload test and the monitoring tests.

    status, answer, session = post(url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

PROTOCOL = "2025-11-25"


def post(url: str, message: dict, session: str | None = None, timeout: float = 10.0):
    """One MCP POST; returns (HTTP status, JSON-RPC answer or None, session id header). An HTTP
    error status comes back as (status, None, None)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": PROTOCOL}
    if session:
        headers["Mcp-Session-Id"] = session
    request = urllib.request.Request(url, data=json.dumps(message).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read().decode()
            ctype = response.headers.get("Content-Type", "")
            sid = response.headers.get("Mcp-Session-Id")
    except urllib.error.HTTPError as err:
        return err.code, None, None
    if "id" not in message or not body:
        return status, None, sid
    if ctype.startswith("text/event-stream"):
        for line in body.splitlines():
            if line.startswith("data:") and line[5:].strip():
                data = json.loads(line[5:])
                if data.get("id") == message["id"]:
                    return status, data, sid
        raise AssertionError(f"no answer to {message.get('method')} in the SSE body: {body[:300]}")
    return status, json.loads(body), sid
