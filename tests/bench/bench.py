#!/usr/bin/env python3
"""Latency and throughput of tools/call through mcpgate: prints figures, asserts nothing.

Drives the gateway at $MCPGATE_URL with WORKERS threads, each with its own session and a
keep-alive connection, calling the fixture's `echo` tool REQUESTS times in all (bounded in count
and time). Run it under a launcher, e.g.:

  python3 tests/e2e/harness.py run --upstreams stdio --prefix "" -- python3 tests/bench/bench.py
  python3 tests/fleet/fleet.py run --replicas 3 --upstreams stdio --prefix "" -- python3 tests/bench/bench.py
"""

import http.client
import json
import os
import statistics
import sys
import threading
import time
from urllib.parse import urlsplit

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "4000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "8"))
TIME_LIMIT = float(os.environ.get("BENCH_SECONDS", "60"))
TOOL = os.environ.get("BENCH_TOOL", "echo")


class Client:
    """One session on one keep-alive connection."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.path = parts.path
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        self.session = None
        self.next_id = 0
        body = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
        self.call("initialize", body)
        self.notify("notifications/initialized")

    def _send(self, message: dict) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.session:
            headers.update({"Mcp-Session-Id": self.session, "MCP-Protocol-Version": "2025-11-25"})
        self.conn.request("POST", self.path, json.dumps(message), headers)
        response = self.conn.getresponse()
        body = response.read()
        self.session = self.session or response.getheader("Mcp-Session-Id")
        return response.status, body

    def call(self, method: str, params: dict) -> dict:
        self.next_id += 1
        status, body = self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        if status != 200:
            raise RuntimeError(f"{method}: HTTP {status} {body[:200]!r}")
        return json.loads(body)

    def notify(self, method: str) -> None:
        self._send({"jsonrpc": "2.0", "method": method})


def worker(url: str, count: int, deadline: float, latencies: list, errors: list) -> None:
    client = Client(url)
    for n in range(count):
        if time.monotonic() > deadline:
            return
        started = time.perf_counter()
        try:
            reply = client.call("tools/call", {"name": TOOL, "arguments": {"text": f"ping {n}"}})
            if "result" not in reply:
                errors.append(reply)
        except Exception as error:  # counted and reported, the run goes on
            errors.append(repr(error))
            client = Client(url)
            continue
        latencies.append(time.perf_counter() - started)


def main() -> int:
    url = os.environ["MCPGATE_URL"]
    latencies: list[float] = []
    errors: list = []
    deadline = time.monotonic() + TIME_LIMIT
    per_worker = REQUESTS // WORKERS
    threads = [threading.Thread(target=worker, args=(url, per_worker, deadline, latencies, errors)) for _ in range(WORKERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if not latencies:
        print("no request succeeded", errors[:3])
        return 1
    ms = sorted(x * 1000 for x in latencies)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"tools/call {TOOL}: {len(ms)} ok, {len(errors)} errors, {WORKERS} workers, {elapsed:.1f} s")
    print(f"throughput {len(ms) / elapsed:.0f} req/s; latency ms p50 {pick(0.5):.2f} p90 {pick(0.9):.2f} "
          f"p99 {pick(0.99):.2f} max {ms[-1]:.2f} mean {statistics.mean(ms):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
