// Loads @modelcontextprotocol/sdk from target/tools/node (installed by tests/tools/install.sh).
// The tests live outside that node_modules tree, so bare imports would not resolve;
// createRequire anchored there resolves the SDK through its own package exports.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';

const root = resolve(fileURLToPath(import.meta.url), '../../../..');
const require = createRequire(resolve(root, 'target/tools/node/package.json'));

export const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
export const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
export const { SSEClientTransport } = require('@modelcontextprotocol/sdk/client/sse.js');
export const {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
} = require('@modelcontextprotocol/sdk/types.js');

// The v2 client package (@modelcontextprotocol/client), the one that speaks 2026-07-28.
const modern = require('@modelcontextprotocol/client');
export const ModernClient = modern.Client;
export const ModernTransport = modern.StreamableHTTPClientTransport;
