import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { ToolServerPolicy, ToolsPolicy } from '../policy/types.js';
import { SecretStore } from '../secrets/store.js';
import { hasCode } from '../test-support/errors.js';
import { startHttpMcpServer, type HttpMcpServer } from '../test-support/mcp-servers.js';
import { startToolsBroker } from './broker.js';
import { resolveToolCredentials } from './credentials.js';
import { ToolsError } from './errors.js';

const root = mkdtempSync(join(tmpdir(), 'aegis-tool-creds-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const dir = (): string => join(root, `s${n++}`, 'secrets');
const t0 = Date.UTC(2026, 10, 1);
const VALUE = 'Bearer tok-UNIQUE-9a8b7c';

const remote = (secret: string | null, host = 'mcp.example.com'): ToolsPolicy => ({
  servers: [
    {
      name: 'gmail',
      transport: { kind: 'http', url: `https://${host}/gmail`, host, port: 443, secret },
      allow: ['*'],
      timeoutMs: 5000,
    },
  ],
});

async function storeWith(
  d: string,
  hosts: string[],
  expiresAt: number | null = null,
  header: string | null = 'authorization',
): Promise<void> {
  await SecretStore.at(d).set({ name: 'gmail-token', hosts, header, value: Buffer.from(VALUE), now: t0, expiresAt, by: 'op' });
}

describe('resolveToolCredentials', () => {
  it('reads the bound secret for its server: header and value, and a secret.bind event without the value', async () => {
    const d = dir();
    await storeWith(d, ['mcp.example.com']);
    const c = await resolveToolCredentials(remote('gmail-token'), d, t0 + 1000);
    assert.deepEqual(c.byServer.get('gmail'), { header: 'authorization', value: VALUE });
    assert.deepEqual(c.events, [
      {
        action: 'secret.bind',
        decision: 'allow',
        payload: { secret: 'gmail-token', version: 1, toolServer: 'gmail', hosts: ['mcp.example.com'], header: 'authorization' },
      },
    ]);
    assert.ok(!JSON.stringify(c.events).includes('tok-UNIQUE'));
  });
  it('needs no store when no server names a secret', async () => {
    const c = await resolveToolCredentials(remote(null), join(root, 'never-created'), t0);
    assert.equal(c.byServer.size, 0);
  });
  describe('refuses the run (fail secure)', () => {
    it('when the secret is missing', async () => {
      await assert.rejects(resolveToolCredentials(remote('gmail-token'), dir(), t0), hasCode(ToolsError, 'tools.secret_unavailable'));
    });
    it('when it has expired', async () => {
      const d = dir();
      await storeWith(d, ['mcp.example.com'], t0 + 10);
      await assert.rejects(resolveToolCredentials(remote('gmail-token'), d, t0 + 20), hasCode(ToolsError, 'tools.secret_unavailable'));
    });
    it("when it is not bound to the server's host", async () => {
      const d = dir();
      await storeWith(d, ['api.openai.com']);
      await assert.rejects(resolveToolCredentials(remote('gmail-token'), d, t0), hasCode(ToolsError, 'tools.secret_unavailable'));
    });
  });
});

describe('the broker sends the credential to the server, never to the agent', () => {
  let upstream: HttpMcpServer;
  let headers: Record<string, string | string[] | undefined>[] = [];
  before(async () => {
    upstream = await startHttpMcpServer();
    upstream.server.on('request', (req) => headers.push(req.headers));
  });
  after(() => upstream.close());
  it('adds the header on its own requests to the server', async () => {
    headers = [];
    const spec: ToolServerPolicy = {
      name: 'remote',
      transport: { kind: 'http', url: upstream.url, host: '127.0.0.1', port: upstream.port, secret: 'gmail-token' },
      allow: ['echo'],
      timeoutMs: 5000,
    };
    const broker = await startToolsBroker({
      tools: { servers: [spec] },
      network: { rules: [], rateLimit: { perSecond: 1, burst: 1 }, byteQuota: null },
      audit: { append: () => undefined },
      actor: { execution: 'e' },
      host: '127.0.0.1',
      credentials: new Map([['remote', { header: 'authorization', value: VALUE }]]),
    });
    try {
      const c = new Client({ name: 'agent', version: '1' });
      await c.connect(new StreamableHTTPClientTransport(new URL(`${broker.url}/remote/mcp`)));
      const r = await c.callTool({ name: 'echo', arguments: { text: 'hi' } });
      assert.deepEqual(r.content, [{ type: 'text', text: 'hi' }]);
      assert.ok(!JSON.stringify(r).includes('tok-UNIQUE'));
      await c.close();
    } finally {
      await broker.close();
    }
    assert.ok(headers.length > 0);
    for (const h of headers) assert.equal(h.authorization, VALUE);
  });
});
