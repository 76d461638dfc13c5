// Fleet end-to-end: the TypeScript SDK client talks to several mcpgate replicas sharing one
// redis-server, through haproxy balancing every request round-robin with no stickiness. Every
// replica is replaced while the client "sleeps"; the SAME client object (same session id, no
// new initialize) keeps calling tools, and its GET stream resumes with Last-Event-ID without
// skipping an event.
//
// Runs under tests/fleet/fleet.py, which sets MCPGATE_URL (the load balancer) and
// MCPGATE_FLEET_CONTROL (restart replicas, read their metrics); it fails without them:
//   python3 tests/fleet/fleet.py run --upstreams stdio -- target/tools/node/node_modules/.bin/node --test tests/fleet/fleet.test.mjs
//   python3 tests/fleet/fleet.py run --upstreams http  -- target/tools/node/node_modules/.bin/node --test tests/fleet/fleet.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import { Client, StreamableHTTPClientTransport, ResourceUpdatedNotificationSchema } from '../e2e/ts/sdk.mjs';

const URL_ = process.env.MCPGATE_URL;
const CONTROL = process.env.MCPGATE_FLEET_CONTROL;
const WATCHED = 'test://watched-resource'; // the fixture changes it every 2 s and notifies subscribers
const REQUEST = { timeout: 15_000 };
assert.ok(URL_ && CONTROL, 'needs a fleet: run through tests/fleet/fleet.py run');

async function control(method, path) {
  const response = await fetch(`${CONTROL}${path}`, { method });
  const body = await response.json();
  assert.equal(response.status, 200, `fleet control ${method} ${path}: ${JSON.stringify(body)}`);
  return body;
}

/** A fetch that records every exchange and the SSE event ids of GET streams. */
function recorder() {
  const wire = { exchanges: [], getEvents: [] };
  const sniff = async (stream) => {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let id = null;
    let hasData = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value.replaceAll('\r\n', '\n');
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line === '') {
            if (id !== null) wire.getEvents.push({ at: performance.now(), id, hasData });
            id = null;
            hasData = false;
          } else if (line.startsWith('id:')) id = line.slice(3).trim();
          else if (line.startsWith('data:') && line.slice(5).trim()) hasData = true;
        }
      }
    } catch {
      // the stream broke (replica gone) or the client closed it
    }
  };
  const recordingFetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    const entry = {
      started: performance.now(),
      method: init.method ?? 'GET',
      session: headers.get('mcp-session-id'),
      lastEventId: headers.get('last-event-id'),
      rpc: [],
    };
    if (entry.method === 'POST' && typeof init.body === 'string') {
      try {
        entry.rpc = [JSON.parse(init.body)].flat().map((m) => m.method ?? '(response)');
      } catch {
        entry.rpc = ['(unparsable)'];
      }
    }
    wire.exchanges.push(entry);
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      entry.error = String(error);
      throw error;
    }
    entry.status = response.status;
    entry.returnedSession = response.headers.get('mcp-session-id');
    if (entry.method === 'GET' && response.ok && response.body) {
      const [mine, theirs] = response.body.tee();
      sniff(theirs);
      return new Response(mine, { status: response.status, statusText: response.statusText, headers: response.headers });
    }
    return response;
  };
  return { wire, fetch: recordingFetch };
}

const texts = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text);
const sum = (metrics, name) =>
  Object.values(metrics)
    .filter(Boolean)
    .reduce((total, m) => total + Object.entries(m).filter(([k]) => k === name || k.startsWith(`${name}{`)).reduce((t, [, v]) => t + v, 0), 0);

test('the same client survives every replica being replaced', { timeout: 90_000 }, async () => {
  const fleet = await control('GET', '/fleet');
  const replicas = fleet.replicas.length;
  const { wire, fetch: recordingFetch } = recorder();
  const updates = [];
  let wake = () => {};
  const client = new Client({ name: 'mcpgate-fleet-ts', version: '0.0.0' }, { capabilities: {} });
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    if (n.params.uri === WATCHED) {
      updates.push(performance.now());
      wake();
    }
  });
  const waitUpdates = async (count, after, ms) => {
    const deadline = performance.now() + ms;
    while (updates.filter((t) => t > after).length < count) {
      const left = deadline - performance.now();
      assert.ok(left > 0, `fewer than ${count} notifications/resources/updated within ${ms} ms (got ${updates.filter((t) => t > after).length})`);
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, Math.min(left, 500));
      });
    }
  };
  const transport = new StreamableHTTPClientTransport(new URL(URL_), { fetch: recordingFetch });
  await client.connect(transport, REQUEST);
  let beforeRestart = Infinity;
  const report = () => {
    const t0 = Number.isFinite(beforeRestart) ? beforeRestart : 0;
    const gets = wire.exchanges.filter((e) => e.method === 'GET');
    console.log(`[fleet] GET exchanges: ${gets.map((e) => `t=${((e.started - t0) / 1000).toFixed(2)}s Last-Event-ID=${e.lastEventId} -> ${e.status ?? e.error}`).join('; ')}`);
    console.log(`[fleet] GET stream event ids: ${JSON.stringify(wire.getEvents.map((e) => [e.id, e.hasData]))}`);
    console.log(`[fleet] updates at (s from restart): ${JSON.stringify(updates.map((t) => +((t - t0) / 1000).toFixed(2)))}`);
  };
  try {
    const sessionId = transport.sessionId;
    assert.ok(sessionId, 'no session id after initialize');
    const { tools } = await client.listTools({}, REQUEST);
    const echoes = tools.map((t) => t.name).filter((n) => n.endsWith('__echo') || n === 'echo');
    assert.ok(echoes.length > 0, `no echo tool in ${tools.map((t) => t.name)}`);
    const echoEverywhere = async (note) => {
      for (let n = 0; n < replicas; n++) {
        for (const name of echoes) {
          const text = `${note} ${n} ${randomUUID()}`;
          const result = await client.callTool({ name, arguments: { text } }, undefined, REQUEST);
          assert.ok(!result.isError, JSON.stringify(result));
          assert.deepEqual(texts(result), [text]);
        }
      }
    };

    await echoEverywhere('before');
    await client.subscribeResource({ uri: WATCHED }, REQUEST);
    await waitUpdates(2, 0, 10_000);

    beforeRestart = performance.now();
    const timings = await control('POST', '/replicas/restart');
    const restarted = performance.now();
    console.log(`[fleet] replicas replaced: ${JSON.stringify(timings)}`);

    await echoEverywhere('after');
    assert.equal(transport.sessionId, sessionId, 'the client changed its session id');
    const metrics = await control('GET', '/metrics');
    const created = sum(metrics, 'mcpgate_sessions_created_total');
    const revived = sum(metrics, 'mcpgate_sessions_revived_total');
    console.log(`[fleet] new replicas: sessions_created_total=${created} sessions_revived_total=${revived}`);
    assert.equal(created, 0, 'a new replica created a session');
    assert.ok(revived >= 1, 'no replica counted a revival');
    const initializes = wire.exchanges.filter((e) => e.rpc.includes('initialize'));
    assert.equal(initializes.length, 1, 'the client initialized again');
    const sent = new Set(wire.exchanges.filter((e) => !e.rpc.includes('initialize')).map((e) => e.session));
    assert.deepEqual([...sent], [sessionId], 'a request went out with another session id');

    // The GET stream comes back by itself with Last-Event-ID, and updates keep arriving.
    await waitUpdates(2, restarted, 15_000);
    const resumed = wire.exchanges.filter((e) => e.method === 'GET' && e.started > beforeRestart && e.lastEventId);
    assert.ok(resumed.some((e) => e.status === 200), 'the GET stream was not resumed with Last-Event-ID');
    const seqs = wire.getEvents.filter((e) => e.hasData).map((e) => Number(e.id.split('-').at(-1)));
    assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i), `GET stream event ids not contiguous: ${seqs}`);
  } finally {
    report();
    await client.close();
  }
});
