// End-to-end at protocol 2026-07-28: the TypeScript SDK's v2 client (@modelcontextprotocol/client)
// opts in with version negotiation in `auto` mode and talks to mcpgate without a session,
// answering an elicitation through multi round-trip requests and holding a
// `subscriptions/listen` stream.
//
// Runs two ways; both set MCPGATE_URL:
// - through the harness (one gateway; stdio upstream `local`, HTTP upstream `remote`), like
//   gateway.test.mjs:
//     python3 tests/e2e/harness.py run -- target/tools/node/node_modules/.bin/node --test tests/e2e/ts/modern.test.mjs
// - through the fleet (3 replicas behind round-robin haproxy; tests/fleet/run-all.sh), which
//   also sets MCPGATE_FLEET_CONTROL:
//     python3 tests/fleet/fleet.py run --replicas 3 --upstreams stdio,http -- \
//       target/tools/node/node_modules/.bin/node --test tests/e2e/ts/modern.test.mjs
//   There the list changes are triggered on `remote` only: its one fixture process is shared by
//   every replica, so a trigger on any replica reaches a listen stream on any other, while each
//   replica has a `local` child of its own. The replicas' metrics and haproxy's log then show
//   that the listen stream and the triggers were served by different replicas.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { ModernClient, ModernTransport } from './sdk.mjs';

const URL_ = process.env.MCPGATE_URL;
const FLEET_CONTROL = process.env.MCPGATE_FLEET_CONTROL; // set by tests/fleet/fleet.py run
const TIMEOUT = 30_000; // ms, per test
const SUBSCRIPTION_META = 'io.modelcontextprotocol/subscriptionId';
// Where a list change is triggered (see the header comment).
const TRIGGER_UPSTREAMS = FLEET_CONTROL ? ['remote'] : ['local', 'remote'];

assert.ok(URL_, 'MCPGATE_URL is not set: run these tests through tests/e2e/harness.py or tests/fleet/fleet.py');

/** The JSON-RPC messages of an SSE body (every `data:` event). */
function sseMessages(text) {
  const out = [];
  for (const event of text.replaceAll('\r\n', '\n').split('\n\n')) {
    const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    if (data.length && data.join('\n').trim()) out.push(JSON.parse(data.join('\n')));
  }
  return out;
}

/** Runs `body(client, wire)` on a fresh modern client; `wire` records every exchange, each
 * request tagged with a unique `?rq=` query (which haproxy logs with the replica serving it).
 * The body of a `subscriptions/listen` response is recorded too (`exchange.text`; its reading
 * ends in `exchange.read`). */
async function withModernClient(body) {
  const wire = [];
  const prefix = randomUUID().slice(0, 8);
  let counter = 0;
  const fetchRecorded = async (input, init) => {
    const tag = `${prefix}-${++counter}`;
    const url = new URL(String(input instanceof Request ? input.url : input));
    url.searchParams.set('rq', tag);
    const sent = typeof init?.body === 'string' ? JSON.parse(init.body) : null;
    const response = await fetch(url, init);
    const exchange = {
      tag,
      rpc: sent?.method ?? null,
      request: sent,
      status: response.status,
      version: new Headers(init?.headers).get('mcp-protocol-version'),
      sessionSent: new Headers(init?.headers).get('mcp-session-id'),
      sessionIssued: response.headers.get('mcp-session-id'),
      method: init?.method ?? 'GET',
      text: '',
      read: Promise.resolve(),
    };
    if (sent?.method === 'subscriptions/listen' && response.body) {
      const reader = response.clone().body.pipeThrough(new TextDecoderStream()).getReader();
      exchange.read = (async () => {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            exchange.text += value;
          }
        } catch {
          // the client closed the stream
        }
      })();
    }
    wire.push(exchange);
    return response;
  };
  const client = new ModernClient(
    { name: 'mcpgate-e2e-ts-modern', version: '0.0.0' },
    { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: 'auto' } },
  );
  client.setRequestHandler('elicitation/create', async () => ({
    action: 'accept',
    content: { name: 'Alice', color: 'blue' },
  }));
  await client.connect(new ModernTransport(new URL(URL_), { fetch: fetchRecorded }));
  try {
    return await body(client, wire);
  } finally {
    await client.close();
  }
}

/** No exchange carried or issued a session, and every one was a 2026-07-28 POST. */
function assertSessionless(wire) {
  assert.ok(wire.length > 0, 'nothing was recorded');
  for (const { text, read, request, ...exchange } of wire) {
    assert.equal(exchange.method, 'POST', JSON.stringify(exchange));
    assert.equal(exchange.version, '2026-07-28', JSON.stringify(exchange));
    assert.equal(exchange.sessionSent, null, JSON.stringify(exchange));
    assert.equal(exchange.sessionIssued, null, JSON.stringify(exchange));
  }
}

/** Under the fleet: tag -> [replica, status] from haproxy's log, waiting until every tag is
 * logged (haproxy logs a request when its response ends). */
async function servedBy(tags, timeout = 10_000) {
  const { logdir } = await (await fetch(`${FLEET_CONTROL}/fleet`)).json();
  const pattern = / replicas\/(\S+) \S+ (-?\d+) .*"[A-Z]+ \/mcp\?rq=([0-9a-f]+-\d+) /;
  const deadline = Date.now() + timeout;
  let found = new Map();
  while (Date.now() < deadline) {
    const log = await readFile(join(logdir, 'haproxy.stdout.log'), 'utf8').catch(() => '');
    found = new Map(log.split('\n').map((l) => l.match(pattern)).filter(Boolean).map((m) => [m[3], [m[1], Number(m[2])]]));
    if (tags.every((t) => found.has(t))) return new Map(tags.map((t) => [t, found.get(t)]));
    await sleep(50);
  }
  assert.fail(`haproxy never logged requests ${tags.filter((t) => !found.has(t))}`);
}

/** Under the fleet: replica -> how many subscriptions/listen requests it has answered
 * (counted when the stream opens), from the replicas' metrics. */
async function listensOpened() {
  const response = await fetch(`${FLEET_CONTROL}/metrics`);
  assert.equal(response.status, 200);
  const metrics = await response.json();
  const out = {};
  for (const [replica, series] of Object.entries(metrics)) {
    out[replica] = Object.entries(series ?? {})
      .filter(([key]) => key.startsWith('mcpgate_requests_total{') && key.includes('method="subscriptions/listen"'))
      .reduce((sum, [, value]) => sum + value, 0);
  }
  return out;
}

async function waitFor(condition, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const textOf = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');

test('auto negotiation settles on 2026-07-28 and serves tools and resources', { timeout: TIMEOUT }, async () => {
  await withModernClient(async (client, wire) => {
    assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const name of ['local__echo', 'remote__echo']) assert.ok(names.includes(name), names.join(','));
    for (const upstream of ['local', 'remote']) {
      const result = await client.callTool({ name: `${upstream}__whoami`, arguments: {} });
      assert.equal(textOf(result), upstream);
    }
    const read = await client.readResource({ uri: 'test://static-text' });
    assert.match(read.contents[0].text, /static text resource/);
    assertSessionless(wire);
  });
});

test('an elicitation is answered through multi round-trip requests', { timeout: TIMEOUT }, async () => {
  await withModernClient(async (client, wire) => {
    for (const upstream of ['local', 'remote']) {
      const hello = await client.callTool({ name: `${upstream}__test_input_required_result_elicitation`, arguments: {} });
      assert.equal(textOf(hello), 'Hello, Alice!');
      const before = wire.length;
      const rounds = await client.callTool({ name: `${upstream}__test_input_required_result_multi_round`, arguments: {} });
      assert.equal(rounds.isError ?? false, false, JSON.stringify(rounds));
      assert.ok(textOf(rounds).length > 0, JSON.stringify(rounds));
      assert.equal(wire.length - before, 3, 'the multi-round tool takes three POSTs');
    }
    assertSessionless(wire);
  });
});

test('a listen stream carries the tool list changes asked for and no prompt change', { timeout: TIMEOUT }, async () => {
  await withModernClient(async (client, wire) => {
    const seen = { tools: [], prompts: [] };
    client.setNotificationHandler('notifications/tools/list_changed', (n) => void seen.tools.push(n));
    client.setNotificationHandler('notifications/prompts/list_changed', (n) => void seen.prompts.push(n));
    // Listed before the listen stream opens, so that the triggers are the very next requests.
    await client.listTools();
    const before = FLEET_CONTROL && (await listensOpened());
    const subscription = await client.listen({ toolsListChanged: true });
    const after = FLEET_CONTROL && (await listensOpened());
    assert.deepEqual(subscription.honoredFilter, { toolsListChanged: true });
    const triggers = [];
    for (const upstream of TRIGGER_UPSTREAMS) {
      // A prompt change (not asked for) first, then a tool change.
      for (const trigger of ['test_trigger_prompt_change', 'test_trigger_tool_change']) {
        const result = await client.callTool({ name: `${upstream}__${trigger}`, arguments: {} });
        assert.match(textOf(result), FLEET_CONTROL ? /announced to [1-9]\d* listen stream/ : /announced to 1 listen stream/);
        triggers.push(wire.at(-1));
      }
      const want = triggers.length / 2;
      await waitFor(() => seen.tools.length >= want, `the tool list change from ${upstream}`);
    }
    await sleep(500); // room for anything unexpected to arrive
    await subscription.close();
    assert.equal(await subscription.closed, 'local');

    const listens = wire.filter((e) => e.rpc === 'subscriptions/listen');
    assert.equal(listens.length, 1, JSON.stringify(wire.map((e) => e.rpc)));
    const [listen] = listens;
    await listen.read;
    const id = listen.request.id;
    const frames = sseMessages(listen.text);
    const [ack, ...changes] = frames;
    assert.equal(ack?.method, 'notifications/subscriptions/acknowledged', JSON.stringify(frames));
    assert.equal(ack.params._meta[SUBSCRIPTION_META], id, JSON.stringify(ack));
    assert.deepEqual(ack.params.notifications, { toolsListChanged: true });
    assert.deepEqual(
      changes.map((m) => m.method),
      TRIGGER_UPSTREAMS.map(() => 'notifications/tools/list_changed'),
      `the stream carried ${JSON.stringify(frames)}`,
    );
    for (const change of changes) assert.equal(change.params._meta[SUBSCRIPTION_META], id, JSON.stringify(change));
    assert.equal(seen.tools.length, TRIGGER_UPSTREAMS.length);
    assert.equal(seen.prompts.length, 0, 'a prompt list change was delivered');
    assertSessionless(wire.filter((e) => e.rpc !== 'notifications/cancelled'));

    if (FLEET_CONTROL) {
      // The stream's replica: the one whose listen counter rose when it opened (haproxy logs a
      // request only when it ends, and the SDK leaves the stream's connection open after
      // close()). The triggers' replicas: from haproxy's log.
      const opened = Object.keys(after).filter((r) => after[r] !== before[r]);
      assert.deepEqual(opened.map((r) => after[r] - before[r]), [1], `listen streams opened: ${JSON.stringify({ before, after })}`);
      const [listenOn] = opened;
      const served = await servedBy(triggers.map((t) => t.tag));
      const triggersOn = triggers.map((t) => served.get(t.tag)[0]);
      console.log(`[fleet] listen stream on ${listenOn}, triggers (prompt, tool) on ${triggersOn.join(', ')}`);
      for (const [replica, status] of served.values()) assert.equal(status, 200, `${replica} answered ${status}`);
      assert.ok(!triggersOn.includes(listenOn), `a trigger was served by the listen stream's replica ${listenOn}`);
    }
  });
});
