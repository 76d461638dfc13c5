// Fleet end-to-end: the two multi round-trip bridges with the TypeScript SDKs' own clients,
// through 3 replicas behind round-robin haproxy (tests/fleet/fleet.py).
//
// - Modern client, legacy upstream: the v2 client (@modelcontextprotocol/client, version
//   negotiation `auto`, which settles on 2026-07-28) calls
//   `legacy__test_input_required_result_multi_round`; upstream `legacy` is an HTTP fixture
//   configured `era = "legacy"`, which asks its two elicitations in the middle of the call. The
//   gateway suspends the call on one replica and answers `input_required` (the question under
//   `mcpgate-input`); the SDK's elicitation handler answers and each retry lands on another
//   replica, which resumes the call over the Redis bus.
// - Legacy client, modern-only upstream: the v1 client (@modelcontextprotocol/sdk, a legacy
//   session) calls `modern__test_input_required_result_multi_round`; upstream `modern` is an
//   HTTP fixture started with `--modern-only` and configured `era = "modern"`. Its inputs reach
//   the client as elicitation/create requests on the call's stream, the answers are POSTed to
//   other replicas, and the result carries no `resultType`.
//
// Needs a fleet with those two upstreams (tests/fleet/run-all.sh runs it so):
//   python3 tests/fleet/fleet.py run --replicas 3 --upstreams stdio \
//     --extra-upstream '{"name": "legacy", "transport": "http", "era": "legacy", "fixture": []}' \
//     --extra-upstream '{"name": "modern", "transport": "http", "era": "modern", "fixture": ["--modern-only"]}' \
//     -- target/tools/node/node_modules/.bin/node --test tests/fleet/bridges.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  Client,
  StreamableHTTPClientTransport,
  ElicitRequestSchema,
  ModernClient,
  ModernTransport,
} from '../e2e/ts/sdk.mjs';

const URL_ = process.env.MCPGATE_URL;
const CONTROL = process.env.MCPGATE_FLEET_CONTROL;
const TIMEOUT = 30_000; // ms, per test
const REQUEST = { timeout: 15_000 }; // ms, per request (v1 client)
const MULTI_ROUND = 'test_input_required_result_multi_round';
const STEPS = ['Step 1: What is your name?', 'Step 2: What is your favorite color?'];
const BRIDGE_KEY = 'mcpgate-input';
const STATE_PREFIX = 'mcpgate.s2.';
const MODERN_FIELDS = ['resultType', 'ttlMs', 'cacheScope', 'inputRequests', 'requestState'];
assert.ok(URL_ && CONTROL, 'needs a fleet: run through tests/fleet/fleet.py run (see the header)');

/** The JSON-RPC messages of a response body read so far: JSON, or every complete SSE event. */
function messagesOf({ contentType, text, done }) {
  if (!contentType?.startsWith('text/event-stream')) {
    try {
      return text.trim() ? [JSON.parse(text)] : [];
    } catch {
      return []; // not all read yet
    }
  }
  const events = text.replaceAll('\r\n', '\n').split('\n\n');
  if (!done) events.pop(); // maybe incomplete
  const out = [];
  for (const event of events) {
    const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    if (data.length && data.join('\n').trim()) out.push(JSON.parse(data.join('\n')));
  }
  return out;
}

/** A fetch that tags every request with a unique `?rq=` (haproxy logs it with the replica that
 * served it) and records it: the JSON-RPC body sent, status, headers, and for a POST of a
 * request the text of its response as it arrives (from a clone of the body; see `settled`).
 * The empty 202 bodies of notifications and answers are left to the SDK. */
function recorder() {
  const wire = [];
  const prefix = randomUUID().slice(0, 8);
  let counter = 0;
  const recordingFetch = async (input, init = {}) => {
    const tag = `${prefix}-${++counter}`;
    const url = new URL(String(input instanceof Request ? input.url : input));
    url.searchParams.set('rq', tag);
    const headers = new Headers(init.headers);
    const sent = typeof init.body === 'string' ? JSON.parse(init.body) : null;
    const response = await fetch(url, init);
    const exchange = {
      tag,
      method: init.method ?? 'GET',
      request: sent,
      rpc: sent ? (sent.method ?? '(response)') : null,
      status: response.status,
      version: headers.get('mcp-protocol-version'),
      sessionSent: headers.get('mcp-session-id'),
      sessionIssued: response.headers.get('mcp-session-id'),
      contentType: response.headers.get('content-type'),
      text: '',
      done: false,
    };
    if (exchange.method === 'POST' && sent?.method && 'id' in sent && response.body) {
      const reader = response.clone().body.pipeThrough(new TextDecoderStream()).getReader();
      (async () => {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            exchange.text += value;
          }
        } catch {
          // the client closed the connection
        }
        exchange.done = true;
      })();
    }
    wire.push(exchange);
    return response;
  };
  return { wire, fetch: recordingFetch };
}

/** The messages of `exchange`'s response, once the response to its request is among them
 * (the SDK may close an SSE body right after it, before the clone sees its end). */
async function settled(exchange, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const messages = messagesOf(exchange);
    if (exchange.done || messages.some((m) => m.id === exchange.request.id && !('method' in m))) return messages;
    if (Date.now() > deadline) assert.fail(`the response to ${exchange.rpc} (${exchange.tag}) was never recorded: ${exchange.text}`);
    await sleep(20);
  }
}

/** tag -> [replica, status] from haproxy's log, waiting until every tag is logged. */
async function servedBy(tags, timeout = 10_000) {
  const { logdir } = await (await fetch(`${CONTROL}/fleet`)).json();
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

async function waitFor(condition, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Fills exactly the fields an elicitation asks for (`name` or `color`); notes its message. */
function answerer(answers, seen) {
  return (params) => {
    seen.push(params.message);
    const wanted = Object.keys(params.requestedSchema?.properties ?? {});
    for (const field of wanted) assert.ok(field in answers, `asked for an unknown field ${field}`);
    return { action: 'accept', content: Object.fromEntries(wanted.map((f) => [f, answers[f]])) };
  };
}

const textOf = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');

/** The `result` of the response to `exchange`'s request, and every message of its response. */
async function resultOf(exchange) {
  const messages = await settled(exchange);
  const answers = messages.filter((m) => m.id === exchange.request.id && !('method' in m));
  assert.equal(answers.length, 1, JSON.stringify(messages));
  assert.ok(answers[0].result, JSON.stringify(answers[0]));
  return answers[0].result;
}

test('modern client (v2, auto): a legacy upstream\'s mid-call elicitations, rounds on different replicas', { timeout: TIMEOUT }, async () => {
  const tool = `legacy__${MULTI_ROUND}`;
  const { wire, fetch: recordingFetch } = recorder();
  const seen = [];
  const answer = answerer({ name: 'Dave', color: 'red' }, seen);
  const client = new ModernClient(
    { name: 'mcpgate-e2e-ts-bridges', version: '0.0.0' },
    { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: 'auto' } },
  );
  client.setRequestHandler('elicitation/create', async (request) => answer(request.params));
  await client.connect(new ModernTransport(new URL(URL_), { fetch: recordingFetch }));
  let result;
  try {
    assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
    result = await client.callTool({ name: tool, arguments: {} });
  } finally {
    await client.close();
  }
  assert.equal(result.isError ?? false, false, JSON.stringify(result));
  assert.equal(textOf(result), "Dave's favorite color is red.");
  assert.deepEqual(seen, STEPS);

  for (const e of wire) {
    assert.equal(e.method, 'POST', JSON.stringify(e));
    assert.equal(e.version, '2026-07-28', JSON.stringify(e));
    assert.equal(e.sessionSent, null, JSON.stringify(e));
    assert.equal(e.sessionIssued, null, JSON.stringify(e));
  }
  const posts = wire.filter((e) => e.rpc === 'tools/call' && e.request.params.name === tool);
  assert.equal(posts.length, 3, `the call took ${posts.length} POSTs: ${JSON.stringify(wire.map((e) => e.rpc))}`);
  const fields = ['name', 'color'];
  const given = ['Dave', 'red'];
  for (const n of [0, 1]) {
    const interim = await resultOf(posts[n]);
    assert.equal(interim.resultType, 'input_required', JSON.stringify(interim));
    assert.deepEqual(Object.keys(interim.inputRequests), [BRIDGE_KEY], JSON.stringify(interim));
    const asked = interim.inputRequests[BRIDGE_KEY];
    assert.equal(asked.method, 'elicitation/create');
    assert.equal(asked.params.message, STEPS[n]);
    assert.deepEqual(Object.keys(asked.params.requestedSchema.properties), [fields[n]]);
    assert.ok(interim.requestState?.startsWith(STATE_PREFIX), JSON.stringify(interim));
    const retry = posts[n + 1].request.params;
    assert.equal(retry.requestState, interim.requestState, 'the retry did not echo the requestState');
    assert.deepEqual(Object.keys(retry.inputResponses), [BRIDGE_KEY]);
    assert.deepEqual(retry.inputResponses[BRIDGE_KEY].content, { [fields[n]]: given[n] });
  }
  assert.notEqual((await resultOf(posts[0])).requestState, (await resultOf(posts[1])).requestState, 'a requestState was repeated');
  assert.equal((await resultOf(posts[2])).resultType, 'complete');

  const served = await servedBy(posts.map((p) => p.tag));
  const replicas = posts.map((p) => served.get(p.tag)[0]);
  console.log(`[fleet] ${tool}: rounds served by ${replicas.join(', ')}`);
  for (const [replica, status] of served.values()) assert.equal(status, 200, `${replica} answered ${status}`);
  for (let i = 1; i < replicas.length; i++) assert.notEqual(replicas[i], replicas[i - 1], `consecutive rounds on one replica: ${replicas}`);
  assert.ok(!replicas.slice(1).includes(replicas[0]), `a retry landed on the suspending replica: ${replicas}`);
});

test('legacy client (v1): a modern-only upstream\'s inputs as elicitation requests, answered on other replicas', { timeout: TIMEOUT }, async () => {
  const tool = `modern__${MULTI_ROUND}`;
  const { wire, fetch: recordingFetch } = recorder();
  const seen = [];
  const answer = answerer({ name: 'Erin', color: 'amber' }, seen);
  const client = new Client({ name: 'mcpgate-e2e-ts-bridges', version: '0.0.0' }, { capabilities: { elicitation: {} } });
  client.setRequestHandler(ElicitRequestSchema, async (request) => answer(request.params));
  await client.connect(new StreamableHTTPClientTransport(new URL(URL_), { fetch: recordingFetch }), REQUEST);
  let result;
  try {
    // The SDK opens its GET stream after initialize; once haproxy placed it, the call and the
    // two answers are the next three requests, each on another replica.
    await waitFor(() => wire.some((e) => e.method === 'GET'), 'the GET stream');
    const gets = wire.filter((e) => e.method === 'GET');
    assert.deepEqual(gets.map((e) => e.status), [200], 'one GET stream, opened');
    result = await client.callTool({ name: tool, arguments: {} }, undefined, REQUEST);
  } finally {
    await client.close();
  }
  assert.equal(result.isError ?? false, false, JSON.stringify(result));
  assert.equal(textOf(result), "Erin's favorite color is amber.");
  assert.deepEqual(seen, STEPS);
  for (const field of MODERN_FIELDS) assert.ok(!(field in result), `${field} reached the client: ${JSON.stringify(result)}`);

  // A legacy session: initialize issued an id, every later request carries it, none is modern.
  const [init, ...rest] = wire;
  assert.equal(init.rpc, 'initialize');
  assert.ok(init.sessionIssued, 'initialize issued no session id');
  assert.notEqual((await resultOf(init)).protocolVersion, '2026-07-28');
  for (const e of rest) {
    assert.equal(e.sessionSent, init.sessionIssued, JSON.stringify(e));
    assert.notEqual(e.version, '2026-07-28', JSON.stringify(e));
  }

  // The call's stream: two elicitation/create requests, then the result with no modern field.
  const calls = wire.filter((e) => e.rpc === 'tools/call' && e.request.params.name === tool);
  assert.equal(calls.length, 1, JSON.stringify(wire.map((e) => e.rpc)));
  const [call] = calls;
  const raw = await resultOf(call);
  const frames = await settled(call);
  assert.ok(call.contentType?.startsWith('text/event-stream'), call.contentType);
  const asks = frames.filter((m) => m.method === 'elicitation/create');
  assert.deepEqual(asks.map((m) => m.params.message), STEPS, JSON.stringify(frames));
  for (const field of MODERN_FIELDS) assert.ok(!(field in raw), `${field} on the wire: ${JSON.stringify(raw)}`);
  assert.ok(!('io.modelcontextprotocol/serverInfo' in (raw._meta ?? {})), JSON.stringify(raw));

  // The answers: one response POST per ask, accepted (202) by replicas other than the call's.
  const answers = wire.filter((e) => e.rpc === '(response)');
  assert.deepEqual(answers.map((a) => a.request.id), asks.map((m) => m.id), JSON.stringify(answers.map((a) => a.request)));
  assert.deepEqual(answers.map((a) => a.request.result.content), [{ name: 'Erin' }, { color: 'amber' }]);
  const served = await servedBy([call.tag, ...answers.map((a) => a.tag)]);
  const callOn = served.get(call.tag)[0];
  const answersOn = answers.map((a) => served.get(a.tag)[0]);
  console.log(`[fleet] ${tool}: call on ${callOn}, answers on ${answersOn.join(', ')}`);
  assert.equal(served.get(call.tag)[1], 200);
  for (const a of answers) assert.equal(served.get(a.tag)[1], 202, `answer ${a.tag}: ${served.get(a.tag)}`);
  assert.ok(!answersOn.includes(callOn), `an answer landed on the call's replica ${callOn}: ${answersOn}`);
});
