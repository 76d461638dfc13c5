// End-to-end: the TypeScript SDK's SSEClientTransport (the 2024-11-05 HTTP+SSE transport)
// talks to mcpgate's `/sse`; the tests are suite.mjs's. Run like gateway.test.mjs, and by
// tests/fleet/run-all.sh against 3 replicas, where the stream and the POSTs land on different
// replicas.
import { SSEClientTransport } from './sdk.mjs';
import { sdkSuite } from './suite.mjs';

sdkSuite((url) => new SSEClientTransport(new URL(url.href.replace(/\/mcp$/, '/sse'))), {
  lastProgressMayBeLost: true,
});
