// End-to-end: the TypeScript SDK client talks to mcpgate over Streamable HTTP (`/mcp`); the
// tests are suite.mjs's.
//
// Run through the harness, which starts the stack and sets MCPGATE_URL:
//   python3 tests/e2e/harness.py run -- target/tools/node/node_modules/.bin/node --test tests/e2e/ts/*.test.mjs
import { StreamableHTTPClientTransport } from './sdk.mjs';
import { sdkSuite } from './suite.mjs';

sdkSuite((url) => new StreamableHTTPClientTransport(url));
