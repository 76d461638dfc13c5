// The SDK client's end-to-end suite, once per transport: gateway.test.mjs runs it over
// Streamable HTTP (`/mcp`), sse.test.mjs over the HTTP+SSE transport (`/sse`). mcpgate fronts
// the fixture over stdio (prefix `local`) and over Streamable HTTP (prefix `remote`); the
// harness (tests/e2e/harness.py, or tests/fleet/fleet.py for a fleet) sets MCPGATE_URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import { Client, CreateMessageRequestSchema, ResourceUpdatedNotificationSchema } from './sdk.mjs';

const URL_ = process.env.MCPGATE_URL;
const UPSTREAMS = ['local', 'remote'];
const TIMEOUT = 30_000; // ms, per test
const REQUEST = { timeout: 15_000 }; // ms, per request

assert.ok(URL_, 'MCPGATE_URL is not set: run these tests through tests/e2e/harness.py');

/**
 * Defines every test, each client connected through `transport(mcpUrl)`. With
 * `lastProgressMayBeLost`, the progress test accepts that the SDK dropped the last update
 * (progress 100): over SSEClientTransport, an EventSource chunk holding both that update and
 * the response dispatches them at once, and the SDK handles the response synchronously but a
 * notification in a microtask, after the progress handler is gone. The order on the wire is
 * asserted by tests/sse_transport.rs.
 */
export function sdkSuite(transport, { lastProgressMayBeLost = false } = {}) {
  /** Connects a client; `setup(client)` may register handlers before the handshake. */
  async function connect({ capabilities = {}, setup = () => {} } = {}) {
    const client = new Client({ name: 'mcpgate-e2e-ts', version: '0.0.0' }, { capabilities });
    setup(client);
    await client.connect(transport(new URL(URL_)), REQUEST);
    return client;
  }

  /** Runs `body(client)` on a fresh client and always closes it. */
  async function withClient(options, body) {
    const client = await connect(options);
    try {
      return await body(client);
    } finally {
      await client.close();
    }
  }

  const texts = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text);

  test('lists tools of both upstreams', { timeout: TIMEOUT }, async () => {
    const { tools } = await withClient({}, (c) => c.listTools({}, REQUEST));
    const names = new Set(tools.map((t) => t.name));
    for (const prefix of UPSTREAMS) {
      for (const tool of ['echo', 'whoami', 'test_tool_with_progress', 'test_sampling']) {
        assert.ok(names.has(`${prefix}__${tool}`), `missing ${prefix}__${tool} in ${[...names]}`);
      }
    }
    assert.ok(!names.has('echo') && !names.has('whoami'), 'unprefixed fixture tools leaked');
  });

  for (const upstream of UPSTREAMS) {
    const other = upstream === 'local' ? 'remote' : 'local';

    test(`${upstream}: echo`, { timeout: TIMEOUT }, async () => {
      const text = `hello ${upstream} ${randomUUID()}`;
      const result = await withClient({}, (c) =>
        c.callTool({ name: `${upstream}__echo`, arguments: { text } }, undefined, REQUEST),
      );
      assert.ok(!result.isError, JSON.stringify(result));
      assert.deepEqual(texts(result), [text]);
    });

    test(`${upstream}: whoami reaches the right upstream`, { timeout: TIMEOUT }, async () => {
      const result = await withClient({}, (c) =>
        c.callTool({ name: `${upstream}__whoami`, arguments: {} }, undefined, REQUEST),
      );
      assert.ok(!result.isError, JSON.stringify(result));
      assert.deepEqual(texts(result), [upstream], `expected the ${upstream} fixture, not ${other}`);
    });

    test(`${upstream}: progress notifications reach the client`, { timeout: TIMEOUT }, async () => {
      const updates = [];
      const result = await withClient({}, (c) =>
        c.callTool({ name: `${upstream}__test_tool_with_progress`, arguments: {} }, undefined, {
          ...REQUEST,
          onprogress: (p) => updates.push(p),
        }),
      );
      assert.ok(!result.isError, JSON.stringify(result));
      const progress = updates.map((u) => u.progress);
      const expected = lastProgressMayBeLost && progress.length === 2 ? [0, 50] : [0, 50, 100];
      assert.deepEqual(progress, expected, `progress updates: ${JSON.stringify(updates)}`);
      assert.equal(updates.at(-1).total, 100);
    });

    test(`${upstream}: sampling is answered by the client`, { timeout: TIMEOUT }, async () => {
      const prompt = `prompt for ${upstream} ${randomUUID()}`;
      const answer = `sampled answer ${randomUUID()}`;
      const seen = [];
      const setup = (client) =>
        client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
          for (const m of request.params.messages) {
            for (const block of [m.content].flat()) if (block.type === 'text') seen.push(block.text);
          }
          return { role: 'assistant', content: { type: 'text', text: answer }, model: 'e2e-model', stopReason: 'endTurn' };
        });
      const result = await withClient({ capabilities: { sampling: {} }, setup }, (c) =>
        c.callTool({ name: `${upstream}__test_sampling`, arguments: { prompt } }, undefined, REQUEST),
      );
      assert.ok(!result.isError, JSON.stringify(result));
      assert.ok(seen.includes(prompt), `sampling request did not carry the prompt: ${JSON.stringify(seen)}`);
      assert.ok(texts(result).some((t) => t.includes(answer)), JSON.stringify(result));
    });
  }

  // Both upstreams offer test://watched-resource, which the fixture changes every 2 seconds and
  // reports to its subscribers. However the gateway merges or namespaces it, every watched URI
  // it lists must deliver notifications/resources/updated to a subscriber.
  test('resource subscription delivers updates', { timeout: TIMEOUT }, async () => {
    const updated = new Set();
    let allUpdated;
    const done = new Promise((resolve) => (allUpdated = resolve));
    let uris = [];
    const setup = (client) =>
      client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
        updated.add(n.params.uri);
        if (uris.length > 0 && uris.every((u) => updated.has(u))) allUpdated();
      });
    await withClient({ setup }, async (c) => {
      assert.ok(c.getServerCapabilities()?.resources?.subscribe, 'gateway does not advertise resources.subscribe');
      const { resources } = await c.listResources({}, REQUEST);
      const watched = resources.map((r) => r.uri).filter((u) => u.includes('watched-resource'));
      assert.ok(watched.length > 0, 'no watched resource listed by the gateway');
      for (const uri of watched) await c.subscribeResource({ uri }, REQUEST);
      uris = watched;
      if (uris.every((u) => updated.has(u))) allUpdated();
      await done; // bounded by the test timeout
      assert.deepEqual([...updated].filter((u) => !uris.includes(u)), [], 'updates for URIs never subscribed');
      const { contents } = await c.readResource({ uri: uris[0] }, REQUEST);
      assert.match(contents[0].text, /revision/);
    });
  });
}
