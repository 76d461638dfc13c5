// The TypeScript SDK's Client in a process of its own, for the drill in
// tests/e2e/python/test_drill.py (which freezes it with SIGSTOP). Same line protocol as
// tests/e2e/python/drill_client.py: it connects to the URL given as its last argument (over
// Streamable HTTP, or with `--sse` before it over the HTTP+SSE transport at that URL's `/sse`,
// whose EventSource reconnects with `Last-Event-ID`), prints {"ready": "<session id>"}, then
// answers one JSON line per command read from stdin:
//   call <tool> <json arguments>  -> {"texts": [...], "is_error": bool}
//   numbers <count> <seconds>     -> {"numbers": [...]} (the `n` of each numbered log message)
//   wire                          -> {"initializes": k, "sessions": [...], "statuses": [...]}
import { createInterface } from 'node:readline';

import {
  Client,
  LoggingMessageNotificationSchema,
  SSEClientTransport,
  StreamableHTTPClientTransport,
} from './sdk.mjs';

const say = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
const REQUEST = { timeout: 15_000 };

/** A fetch that notes the initializes, session ids and statuses it carried. */
function recorder() {
  const wire = { initializes: 0, sessions: new Set(), statuses: new Set() };
  const recordingFetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    const body = typeof init.body === 'string' ? init.body : '';
    const session = headers.get('mcp-session-id') ?? new URL(url).searchParams.get('sessionId');
    if (body.includes('"method":"initialize"')) wire.initializes += 1;
    else if (session) wire.sessions.add(session);
    const response = await fetch(url, init);
    wire.statuses.add(response.status);
    return response;
  };
  return { wire, fetch: recordingFetch };
}

const numbers = [];
let wake = () => {};
const client = new Client({ name: 'mcpgate-drill-ts', version: '0.0.0' }, { capabilities: {} });
client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
  if (Number.isInteger(n.params.data?.n)) {
    numbers.push(n.params.data.n);
    wake();
  }
});
const { wire, fetch: recordingFetch } = recorder();
// The SDK's SSEClientTransport gives its EventSource a fetch that replaces the request's
// headers with its own (`_startOrAuth` in sdk/dist/esm/client/sse.js, SDK 1.32), which drops the
// Last-Event-ID the EventSource sends when it reconnects: with any server, the SDK then starts
// a new session. The drill puts the header back, from the last event id the EventSource saw,
// as a conforming EventSource (a browser's) sends it.
let lastEventId = null;
const resumingFetch = (url, init = {}) => {
  const headers = new Headers(init.headers);
  if (lastEventId) headers.set('last-event-id', lastEventId);
  return recordingFetch(url, { ...init, headers });
};

const url = new URL(process.argv.at(-1));
const overSse = process.argv.includes('--sse');
const transport = overSse
  ? new SSEClientTransport(new URL(url.href.replace(/\/mcp$/, '/sse')), {
      fetch: recordingFetch,
      eventSourceInit: { fetch: resumingFetch },
    })
  : new StreamableHTTPClientTransport(url, { fetch: recordingFetch });
await client.connect(transport, REQUEST);
for (const type of ['endpoint', 'message']) {
  transport._eventSource?.addEventListener(type, (event) => {
    if (event.lastEventId) lastEventId = event.lastEventId;
  });
}
say({ ready: overSse ? transport._endpoint.searchParams.get('sessionId') : transport.sessionId });

const commands = {
  async call(rest) {
    const space = rest.indexOf(' ');
    const name = space < 0 ? rest : rest.slice(0, space);
    const args = space < 0 ? {} : JSON.parse(rest.slice(space + 1));
    const result = await client.callTool({ name, arguments: args }, undefined, REQUEST);
    const texts = result.content.filter((c) => c.type === 'text').map((c) => c.text);
    return { texts, is_error: Boolean(result.isError) };
  },
  async numbers(rest) {
    const [count, seconds] = rest.split(' ').map(Number);
    const deadline = performance.now() + seconds * 1000;
    while (numbers.length < count && performance.now() < deadline) {
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 200);
      });
    }
    return { numbers };
  },
  async wire() {
    return {
      initializes: wire.initializes,
      sessions: [...wire.sessions].sort(),
      statuses: [...wire.statuses].sort((a, b) => a - b),
    };
  },
};

for await (const line of createInterface({ input: process.stdin })) {
  const trimmed = line.trim();
  const space = trimmed.indexOf(' ');
  const [command, rest] = space < 0 ? [trimmed, ''] : [trimmed.slice(0, space), trimmed.slice(space + 1)];
  say(await commands[command](rest));
}
await client.close();
