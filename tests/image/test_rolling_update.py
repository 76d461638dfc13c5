"""A rolling update as Kubernetes does it, with the built image and the chart's own settings.

The chart is rendered by the real Helm engine (tests/deploy/chart.py) for 3 replicas on the
Redis store, and its Deployment is read: the strategy (maxSurge 1, maxUnavailable 0), the
preStop hook, terminationGracePeriodSeconds, the readiness probe, args, env and the mounted
ConfigMap and Secret. Pods are podman containers of the image, run as the chart says
(tests/image/kubelet.py), behind haproxy checking each pod's readiness probe, as a Service's
endpoints follow readiness (tests/fleet/fleet.py's HAProxy, one server slot per pod and one
spare for the surge pod).

While 100 sessions of the Python SDK call tools and hold their GET streams, the pods are
replaced one by one, as the Deployment controller and the kubelet do it: a new pod is started
(the surge), and once it is ready, the old pod is deleted. Its preStop hook runs (the pod keeps
serving; a second into it, the endpoint removal reaches the load balancer), then SIGTERM starts
the drain, and SIGKILL would follow after the grace period. No session may be lost and no
request may fail.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "deploy"), str(HERE.parent / "fleet"), str(HERE.parent / "e2e" / "python")]

import chart  # noqa: E402
from fleet import BACKEND, FIXTURE_BIN, HAProxy, Proc, Redis, parse_metrics  # noqa: E402
from kubelet import Pod, PodTemplate, podman  # noqa: E402
from test_fleet import Recorder, recording_client, texts  # noqa: E402

IMAGE = "localhost/mcpgate:test"
HMAC_KEY = "rolling-update-shared-hmac-key-0123456789"
SESSIONS = 100
CALL_PAUSE = 0.5  # seconds between one session's calls
ENDPOINT_LAG = 1.0  # seconds after the preStop starts until the load balancer drops the pod
DEADLINE = 300  # seconds for the whole load, roll included


@dataclass
class Slot:
    """A haproxy server slot, pointed at one pod at a time (what an endpoint is to a Service)."""

    name: str
    pod: Pod | None = None

    @property
    def port(self) -> int:
        return self.pod.http_port if self.pod else 1

    @property
    def admin_port(self) -> int:
        return self.pod.admin_port if self.pod else 1


@dataclass
class Tally:
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    crashed: dict[int, str] = field(default_factory=dict)
    wires: dict[int, Recorder] = field(default_factory=dict)


def values(redis_url: str, upstream_url: str) -> dict:
    return {
        "replicaCount": 3,
        "image": {"repository": "localhost/mcpgate", "tag": "test"},
        "hmacKey": {"value": HMAC_KEY},
        "redis": {"enabled": True, "url": redis_url, "timeout": "5s"},
        "drainGraceSeconds": 10,
        "preStopSeconds": 3,
        "upstreams": [{"name": "remote", "transport": "http", "url": upstream_url}],
    }


def test_a_rolling_update_loses_no_session_and_fails_no_request(tmp_path):
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"no image {IMAGE}: run tests/image/build.sh first")
    redis = Redis(tmp_path)
    redis.start()
    fixture = Proc("fixture", [str(FIXTURE_BIN), "http", "--listen", "127.0.0.1:0", "--name", "remote"], tmp_path)
    pods: list[Pod] = []
    lb = None
    try:
        objects = chart.render(values(redis.url, fixture.wait_listening()))
        template = PodTemplate.from_chart(objects)
        check_the_deployment(template)
        image = template.container["image"]
        start = lambda n: pods.append(template.start(f"mcpgate-roll-{n}", image, tmp_path)) or pods[-1]  # noqa: E731
        slots = [Slot(f"pod{i}") for i in range(template.replicas + template.strategy["rollingUpdate"]["maxSurge"])]
        for slot in slots[: template.replicas]:
            slot.pod = start(len(pods))
            slot.pod.wait_ready(timeout=60)
        lb = HAProxy(tmp_path, slots)
        lb.start()
        lb.command(f"set server {BACKEND}/{slots[-1].name} state maint")
        lb.wait_states({s.name: "UP" for s in slots[: template.replicas]})

        tally, roll = anyio.run(load_during_roll, lb, slots, start)
        report(tally, roll, pods, lb)
        assert not tally.crashed, f"{len(tally.crashed)} clients died"
        assert not tally.failures, f"{len(tally.failures)} of {tally.calls} calls failed; pod errors: {pod_errors(pods)}"
        assert roll["replaced"] == template.replicas, roll
        for n, wire in tally.wires.items():
            assert len(wire.initializes()) == 1, f"client {n} re-initialized"
            assert any(e.method == "GET" and e.status == 200 for e in wire.exchanges), f"client {n} had no GET stream"
        for pod in pods[: template.replicas]:
            assert pod.exit_code() == 0, f"{pod.name} did not stop cleanly:\n{pod.logs()[-2000:]}"
    except BaseException:
        for pod in pods:
            print(f"\n--- {pod.name} ---\n{pod.logs()[-3000:]}")
        raise
    finally:
        if lb is not None:
            lb.stop()
        for pod in pods:
            pod.remove()
        fixture.stop()
        redis.stop()


def check_the_deployment(template: PodTemplate) -> None:
    """What the roll relies on, read from the rendered Deployment."""
    assert template.strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert template.pre_stop_seconds == 3
    assert template.grace_seconds >= 3 + 10 + 1, "preStop + drain_grace + the 1 s flush"
    assert template.readiness_path == "/readyz"
    assert template.container["args"][:3] == ["serve", "--config", "/etc/mcpgate/config/mcpgate.toml"]


async def load_during_roll(lb: HAProxy, slots: list[Slot], start) -> tuple[Tally, dict]:
    tally = Tally()
    opened = anyio.Event()
    rolled = anyio.Event()
    ready_count = 0
    roll: dict = {"replaced": 0, "exits": []}

    async def session(n: int) -> None:
        nonlocal ready_count
        client, wire = recording_client(lb.url)
        tally.wires[n] = wire
        try:
            async with client as c:
                await call(c, n, "first")
                ready_count += 1
                if ready_count == SESSIONS:
                    opened.set()
                k = 0
                while not rolled.is_set():
                    await anyio.sleep(CALL_PAUSE)
                    k += 1
                    await call(c, n, f"call {k}")
                await call(c, n, "after the roll")
        except Exception as err:  # noqa: BLE001 - a client that dies is counted
            tally.crashed[n] = f"{type(err).__name__}: {err!r}"[:300]
            if len(tally.crashed) + ready_count >= SESSIONS:
                opened.set()

    async def call(c, n: int, note: str) -> None:
        text = f"s{n} {note} {uuid.uuid4()}"
        tally.calls += 1
        try:
            result = await c.call_tool("remote__echo", {"text": text})
            if result.is_error or texts(result) != [text]:
                tally.failures.append(f"session {n} {note}: {result}")
        except Exception as err:  # noqa: BLE001 - every failure is counted
            tally.failures.append(f"session {n} {note}: {type(err).__name__}: {err}")

    async def roller() -> None:
        await opened.wait()
        await anyio.sleep(2)
        await anyio.to_thread.run_sync(roll_every_pod, lb, slots, start, roll)
        await anyio.sleep(3)
        rolled.set()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(roller)
            for n in range(SESSIONS):
                tg.start_soon(session, n)
    return tally, roll


def roll_every_pod(lb: HAProxy, slots: list[Slot], start, roll: dict) -> None:
    """maxSurge 1, maxUnavailable 0: one new pod ready, then one old pod deleted, and again."""
    spare = slots[-1]
    for old_slot in slots[:-1]:
        began = time.monotonic()
        spare.pod = start(len(roll["exits"]) + len(slots))
        spare.pod.wait_ready(timeout=60)
        lb.point(spare)
        lb.command(f"set server {BACKEND}/{spare.name} state ready")
        lb.wait_states({spare.name: "UP"})
        old = old_slot.pod
        endpoint_removed = threading.Timer(ENDPOINT_LAG, lb.command, [f"set server {BACKEND}/{old_slot.name} state maint"])
        endpoint_removed.start()
        old.pre_stop()
        endpoint_removed.join()
        took = old.sigterm_and_wait()
        roll["exits"].append((old.name, round(took, 2), round(time.monotonic() - began, 2)))
        roll["replaced"] += 1
        spare, old_slot.pod = old_slot, None


def report(tally: Tally, roll: dict, pods: list[Pod], lb: HAProxy) -> None:
    gets = sum(1 for w in tally.wires.values() for e in w.exchanges if e.method == "GET")
    resumed = sum(1 for w in tally.wires.values() for e in w.exchanges if e.method == "GET" and e.last_event_id)
    served: dict[str, dict[int, int]] = {}
    for server, status in lb.served_by():
        served.setdefault(server, {}).setdefault(status, 0)
        served[server][status] += 1
    revived = sum(metric(pod, "mcpgate_sessions_revived_total") for pod in pods[-3:])
    print(f"\n[roll] {SESSIONS} sessions, {tally.calls} calls, {len(tally.failures)} failed, "
          f"{len(tally.crashed)} clients died")
    print(f"[roll] pods replaced (name, SIGTERM to exit s, surge to exit s): {roll['exits']}")
    print(f"[roll] GET streams opened {gets}, of which resumed with Last-Event-ID {resumed}")
    print(f"[roll] sessions revived on the new pods: {revived:.0f}")
    print(f"[roll] haproxy (server -> status -> requests): {served}")
    for failure in tally.failures[:20]:
        print(f"[roll]   failed: {failure}")
    for n, why in sorted(tally.crashed.items())[:20]:
        print(f"[roll]   client {n} died: {why}")


def pod_errors(pods: list[Pod]) -> list[str]:
    """The ERROR lines of every pod's log (what a failed call's 503 was logged as)."""
    return [f"{pod.name}: {line[:400]}" for pod in pods for line in pod.logs().splitlines() if '"level":"ERROR"' in line][:10]


def metric(pod: Pod, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{pod.admin_port}/metrics", timeout=2) as response:
        return parse_metrics(response.read().decode()).get(name, 0.0)
