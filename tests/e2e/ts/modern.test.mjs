// End-to-end at protocol 2026-07-28: the TypeScript SDK's v2 client (@modelcontextprotocol/client)
// opts in with version negotiation in `auto` mode and talks to mcpgate without a session,
// answering an elicitation through multi round-trip requests.
//
// Run through the harness (stdio upstream `local`, HTTP upstream `remote`), like gateway.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { ModernClient, ModernTransport } from './sdk.mjs';

const URL_ = process.env.MCPGATE_URL;
const TIMEOUT = 30_000; // ms, per test

assert.ok(URL_, 'MCPGATE_URL is not set: run these tests through tests/e2e/harness.py');

/** Runs `body(client, wire)` on a fresh modern client; `wire` records every exchange. */
async function withModernClient(body) {
  const wire = [];
  const fetchRecorded = async (input, init) => {
    const response = await fetch(input, init);
    wire.push({
      version: new Headers(init?.headers).get('mcp-protocol-version'),
      sessionSent: new Headers(init?.headers).get('mcp-session-id'),
      sessionIssued: response.headers.get('mcp-session-id'),
      method: init?.method ?? 'GET',
    });
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
  for (const exchange of wire) {
    assert.equal(exchange.method, 'POST', JSON.stringify(exchange));
    assert.equal(exchange.version, '2026-07-28', JSON.stringify(exchange));
    assert.equal(exchange.sessionSent, null, JSON.stringify(exchange));
    assert.equal(exchange.sessionIssued, null, JSON.stringify(exchange));
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
