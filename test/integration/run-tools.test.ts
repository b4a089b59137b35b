/**
 * End to end, as a user runs it (under crun and gVisor): `aegis run` of an agent whose manifest
 * declares three MCP tool servers and no network at all. The agent (Node 18 from the
 * egress-clients:bookworm image, with the official MCP SDK copied from node_modules into its code
 * folder) uses a real MCP client over `$AEGIS_TOOLS_URL`. Behind the broker:
 *  - `remote`: a real MCP server built with the SDK, over Streamable HTTP on HTTPS (a test CA
 *    given to the aegis process as NODE_EXTRA_CA_CERTS) at the fake internet's host address;
 *  - `secure`: the same kind of server reached by NAME (mcp.tools.test, answered by the fake
 *    internet's DNS, which is the gateway's upstream resolver: AEGIS_UPSTREAM_DNS) with a secret
 *    of the AEGIS store bound to that name: the server must receive the real credential, the
 *    agent must never see it (env, tools/list, results), the audit log must show its use;
 *  - `local`: an SDK server over stdio that AEGIS runs in an AEGIS sandbox of its own (its own
 *    manifest: the same image, a read-only volume, no network), on the run's runtime.
 *
 * The agent must see only the allowed tools, get the allowed call's result, be refused the
 * forbidden one, and fail to reach the HTTP server directly (the gateway refuses it) and the
 * local server's listener (another network namespace); the local server must reach neither the
 * network nor host files outside its grants, and be gone after the run (also after a SIGKILL of
 * aegis: the next start sweeps it); the audit log must hold each of these, and verify.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.js';
import { runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { toolSandboxId } from '../../src/tools/sandboxed-server.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';
import { startHttpMcpServer, type HttpMcpServer } from '../../src/test-support/mcp-servers.js';
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

const AGENT = `import { connect } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
const base = process.env.AEGIS_TOOLS_URL;
const say = (o) => console.log(JSON.stringify(o));
say({ step: 'env', base, node: process.versions.node, names: Object.keys(process.env).sort(), values: Object.values(process.env) });
async function client(name) {
  const c = new Client({ name: 'agent', version: '1.0.0' });
  await c.connect(new StreamableHTTPClientTransport(new URL(base + '/' + name + '/mcp')));
  return c;
}
for (const name of ['remote', 'local', 'secure']) {
  const c = await client(name);
  const listed = (await c.listTools()).tools;
  say({ step: 'list', server: name, tools: listed.map((t) => t.name).sort(), raw: listed });
  const r = await c.callTool({ name: 'echo', arguments: { text: 'hello from ' + name } });
  say({ step: 'echo', server: name, text: r.content[0].text, raw: r });
  if (name === 'local') {
    const p = await c.callTool({ name: 'probe', arguments: {} });
    try { say({ step: 'probe', got: JSON.parse(p.content[0].text) }); } catch { say({ step: 'probe', got: p }); }
  }
  try {
    await c.callTool({ name: 'send_email', arguments: { to: 'boss@attacker.example', body: 'all the mail' } });
    say({ step: 'forbidden', server: name, refused: false });
  } catch (e) {
    say({ step: 'forbidden', server: name, refused: true, code: e.code, reason: e.data && e.data.reason });
  }
  await c.close();
}
// The local server listens on 127.0.0.1:7777 in its own network namespace, not in the agent's.
const reach = await new Promise((r) => {
  const s = connect(7777, '127.0.0.1');
  s.once('connect', () => { s.destroy(); r('connected'); });
  s.once('error', (e) => r(e.code));
  setTimeout(() => { s.destroy(); r('timeout'); }, 3000);
});
say({ step: 'reach-local', result: reach });
try {
  const res = await fetch(process.env.DIRECT_URL, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'send_email', arguments: { to: 'x@attacker.example', body: 'direct' } } }),
    signal: AbortSignal.timeout(5000) });
  say({ step: 'direct', reached: true, status: res.status });
} catch (e) {
  say({ step: 'direct', reached: false, error: String(e.cause && e.cause.code || e.name) });
}
if (process.env.HOLD) { say({ step: 'up' }); setInterval(() => undefined, 1000); }
`;

/**
 * The local tool server: the official SDK over stdio, run by AEGIS in a sandbox of its own (its
 * manifest: server.yaml). `probe` reports what it can reach from there; at start it listens on
 * 127.0.0.1:7777 (in its own network namespace) to show the agent cannot reach it.
 */
const LOCAL_SERVER = `import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import * as z from 'zod';
const listening = await new Promise((r) => {
  const srv = createServer((s) => s.end('the tool server'));
  srv.once('error', (e) => r(e.code));
  srv.listen(7777, '127.0.0.1', () => r(true));
});
const s = new McpServer({ name: 'aegis-test-sandboxed', version: '1.0.0' });
const text = (t) => ({ content: [{ type: 'text', text: t }] });
s.registerTool('echo', { inputSchema: { text: z.string() } }, ({ text: t }) => text(t));
s.registerTool('send_email', { inputSchema: { to: z.string(), body: z.string() } }, () => text('sent'));
const tryConnect = (host, port) => new Promise((r) => {
  const c = connect(port, host);
  c.once('connect', () => { c.destroy(); r('connected'); });
  c.once('error', (e) => r(e.code));
  setTimeout(() => { c.destroy(); r('timeout'); }, 3000);
});
const code = (f) => { try { return f(); } catch (e) { return e.code; } };
s.registerTool('probe', {}, async () => {
  const [host, port] = process.env.TARGET.split(':');
  return text(JSON.stringify({
    listening,
    // (os.networkInterfaces() needs a netlink socket, which the default seccomp profile refuses.)
    interfaces: code(() => readFileSync('/proc/net/dev', 'utf8').split('\\n').slice(2).map((l) => l.split(':')[0].trim()).filter(Boolean).sort()),
    internet: await tryConnect(host, Number(port)),
    shared: code(() => readFileSync('/srv/shared/note.txt', 'utf8')),
    sharedWrite: code(() => { writeFileSync('/srv/shared/new.txt', 'x'); return 'written'; }),
    hostFile: code(() => readFileSync(process.env.HOST_FILE, 'utf8')),
    env: Object.keys(process.env).sort(),
  }));
});
await s.connect(new StdioServerTransport());
// The listener would keep it alive: it exits when AEGIS closes its stdin (the MCP stdio shutdown).
// (IGNORE_EOF: a server that does not, for the SIGKILL test: the sweep must stop it.)
if (!process.env.IGNORE_EOF) process.stdin.on('end', () => process.exit(0));
`;

const TOKEN = 'Bearer tok-E2E-3f9d1c7a5b';

/** Starts `aegis run`, resolves once the agent printed its `up` step. */
function startUntilUp(argv: string[], env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, [AEGIS_BIN, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent did not come up: ${err}`)), 90_000);
    child.stdout!.on('data', (c: Buffer) => {
      if (c.toString().includes('"step":"up"')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', () => reject(new Error(`aegis run ended early: ${err}`)));
  });
}

describe(
  'aegis run: MCP tools brokered by AEGIS',
  { ...requirementsOrSkip(['ip', 'nft', 'crun', 'runsc', 'openssl']), timeout: 400_000 },
  () => {
    let work = '';
    let home = '';
    let file = '';
    let inet: FakeInternet | undefined;
    let holdFile = '';
    let server: HttpMcpServer | undefined;
    let secure: HttpMcpServer | undefined;
    /** The headers of every request the `secure` and `remote` servers received. */
    const secureHeaders: Record<string, string | string[] | undefined>[] = [];
    const remoteHeaders: Record<string, string | string[] | undefined>[] = [];
    let unavailable: string | null = null;
    let caFile = '';
    let hostFile = '';
    const aegisEnv = (): NodeJS.ProcessEnv => ({
      ...process.env,
      AEGIS_HOME: home,
      // The gateway's upstream resolver, which the broker uses for the tool servers' names too.
      AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53`,
      AEGIS_ALERT_RULES: 'none',
      // The broker verifies the remote tool servers' certificates with Node's trust store.
      NODE_EXTRA_CA_CERTS: caFile,
    });
    /** Asynchronous: the HTTP MCP servers run in this process and must keep answering while aegis runs. */
    const aegis = (args: string[], input?: string) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = spawn(process.execPath, [AEGIS_BIN, ...args], {
          env: aegisEnv(),
          stdio: [input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
          timeout: 120_000,
        });
        if (input !== undefined) child.stdin!.end(input);
        let out = '';
        let err = '';
        child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
        child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
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
      // The local server: its code folder (with the SDK) and its own manifest.
      const localDir = join(work, 'local-server');
      mkdirSync(localDir);
      chmodSync(localDir, 0o755);
      writeFileSync(join(localDir, 'server.mjs'), LOCAL_SERVER);
      copyClientModules(localDir);
      const shared = join(work, 'shared');
      mkdirSync(shared);
      chmodSync(shared, 0o755);
      writeFileSync(join(shared, 'note.txt'), 'shared note');
      chmodSync(join(shared, 'note.txt'), 0o644);
      // A host file the server is given no grant to: it must not see it.
      hostFile = join(work, 'host-only.txt');
      writeFileSync(hostFile, 'host only');
      chmodSync(hostFile, 0o644);
      if (unavailable !== null) return;
      inet = await startFakeInternet();
      // The "remote" servers: on the fake internet's host-side address, where nothing routes the agent.
      const pkiDir = join(work, 'pki');
      mkdirSync(pkiDir);
      const pki = makeServerPki(pkiDir, INET_GW, [`IP:${INET_GW}`, 'DNS:mcp.tools.test']);
      caFile = pki.caFile;
      server = await startHttpMcpServer(INET_GW, 0, { cert: pki.cert, key: pki.key });
      server.server.on('request', (req) => remoteHeaders.push(req.headers));
      secure = await startHttpMcpServer(INET_GW, 0, { cert: pki.cert, key: pki.key });
      secure.server.on('request', (req) => secureHeaders.push(req.headers));
      const serverManifest = (extraEnv: string) =>
        [
          'version: "1.0"',
          'agent:',
          '  name: local-tools',
          '  runtime: "egress-clients:bookworm"',
          '  entrypoint: ["node", "server.mjs"]',
          `  env: { TARGET: "${INET_GW}:${server!.port}", HOST_FILE: "${hostFile}"${extraEnv} }`,
          'permissions:',
          '  fs:',
          '    read: ["/srv/shared"]',
          '  execution_time: 120s',
          '  memory: 256MiB',
          '',
        ].join('\n');
      writeFileSync(join(localDir, 'server.yaml'), serverManifest(''));
      writeFileSync(join(localDir, 'server-hold.yaml'), serverManifest(', IGNORE_EOF: "1"'));
      const tools = (serverFile: string) => [
        'tools:',
        '  - name: remote',
        `    mcp: { url: "${server!.url}" }`,
        '    allow: [echo]',
        '    timeout: 10s',
        '  - name: secure',
        `    mcp: { url: "https://mcp.tools.test:${secure!.port}/mcp", secret: "secret:mcp-token" }`,
        '    allow: [echo]',
        '    timeout: 10s',
        '  - name: local',
        `    mcp: { manifest: "../local-server/${serverFile}", volumes: ["${shared}:/srv/shared:ro"] }`,
        '    allow: [echo, probe]',
        '    timeout: 20s',
        '',
      ];
      const manifest = (name: string, env: string, serverFile: string) =>
        [
          'version: "1.0"',
          'agent:',
          `  name: ${name}`,
          '  runtime: "egress-clients:bookworm"',
          '  entrypoint: ["node", "agent.mjs"]',
          `  env: { DIRECT_URL: "${server!.url}"${env} }`,
          'permissions:',
          '  execution_time: 90s',
          '  memory: 512MiB',
          ...tools(serverFile),
        ].join('\n');
      file = join(code, 'agent.yaml');
      writeFileSync(file, manifest('tools-probe', '', 'server.yaml'));
      holdFile = join(code, 'hold.yaml');
      writeFileSync(holdFile, manifest('tools-hold', ', HOLD: "1"', 'server-hold.yaml'));
      // The credential of `secure`, bound to its host name.
      const set = await aegis(['secret', 'set', 'mcp-token', '--hosts', 'mcp.tools.test', '--header', 'authorization'], `${TOKEN}\n`);
      assert.equal(set.code, 0, set.err);
    });
    after(async () => {
      await server?.close();
      await secure?.close();
      await inet?.close();
      rmSync(work, { recursive: true, force: true });
    });

    for (const isolation of ['crun', 'gvisor'] as const)
      it(`under ${isolation}: lists only allowed tools, forwards the allowed call, refuses the forbidden one, and the server is out of direct reach`, async (t) => {
        if (!requireOrSkip(t, unavailable ?? (await sandboxUnavailable(isolation)))) return;
        const summary = join(work, `summary-${isolation}.json`);
        const seenBefore = server!.seen.length;
        const secureBefore = secure!.seen.length;
        secureHeaders.length = 0;
        remoteHeaders.length = 0;
        const state = join(work, 'state');
        const r = await aegis(['run', file, '--isolation', isolation, '--state-dir', state, '--summary', summary]);
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
        assert.deepEqual(step('list', 'local')?.tools, ['echo', 'probe']);
        assert.deepEqual(step('list', 'secure')?.tools, ['echo']);
        assert.equal(step('echo', 'remote')?.text, 'hello from remote');
        assert.equal(step('echo', 'local')?.text, 'hello from local');
        assert.equal(step('echo', 'secure')?.text, 'hello from secure');
        for (const s of ['remote', 'local', 'secure'])
          assert.deepEqual(step('forbidden', s), {
            step: 'forbidden',
            server: s,
            refused: true,
            code: -32602,
            reason: 'tool.denied.not_allowed',
          });

        // The local server, in its own sandbox: its volume read-only, no network, no host files, no AEGIS environment.
        const probe = step('probe')?.got as Record<string, unknown>;
        assert.equal(probe.listening, true, 'it listens on 127.0.0.1:7777 in its own namespace');
        assert.deepEqual(probe.interfaces, ['lo'], 'loopback only');
        assert.notEqual(probe.internet, 'connected', `the network is out of its reach: ${String(probe.internet)}`);
        assert.equal(probe.shared, 'shared note', 'it reads the volume it was given');
        assert.ok(['EROFS', 'EACCES'].includes(String(probe.sharedWrite)), `the ro volume refuses writes: ${String(probe.sharedWrite)}`);
        assert.equal(existsSync(join(work, 'shared', 'new.txt')), false);
        assert.ok(['ENOENT', 'EACCES'].includes(String(probe.hostFile)), `a host file outside its grants: ${String(probe.hostFile)}`);
        const serverEnv = probe.env as string[];
        for (const n of ['AEGIS_HOME', 'AEGIS_UPSTREAM_DNS', 'NODE_EXTRA_CA_CERTS', 'AEGIS_TOOLS_URL'])
          assert.ok(!serverEnv.includes(n), `${n} is not in the server's environment: ${serverEnv.join(' ')}`);
        assert.ok(serverEnv.includes('TARGET'), "its own manifest's env");
        // ... and the agent cannot reach that listener: another network namespace.
        assert.notEqual(step('reach-local')?.result, 'connected', JSON.stringify(step('reach-local')));

        // The bound secret: the server got the real credential on every request; the agent never saw it.
        assert.ok(secureHeaders.length > 0);
        for (const h of secureHeaders) assert.equal(h.authorization, TOKEN);
        for (const h of remoteHeaders) assert.equal(h.authorization, undefined, 'a secret goes to its own server only');
        assert.deepEqual(
          secure!.seen.slice(secureBefore).map((c) => c.tool),
          ['echo'],
        );
        assert.ok(!r.out.includes('tok-E2E'), 'the credential is nowhere in what the agent saw (env, tools/list, results)');
        assert.ok((step('env')?.names as string[]).includes('AEGIS_TOOLS_URL'), 'the env step lists the whole environment');
        assert.equal(step('direct')?.reached, false, JSON.stringify(step('direct')));
        assert.deepEqual(
          server!.seen.slice(seenBefore).map((c) => c.tool),
          ['echo'],
          'the server saw the allowed call only, never the refused or the direct one',
        );

        const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
        // The local server's sandbox is gone: run directory and cgroups.
        const sandboxId = toolSandboxId(executionId, 'local');
        assert.equal(existsSync(join(state, 'runs', sandboxId)), false);
        assert.deepEqual(runCgroupDirs(sandboxId), []);

        const q = await aegis(['audit', 'query', '--json', '--execution', executionId]);
        assert.equal(q.code, 0, q.err);
        assert.ok(!q.out.includes('tok-E2E'), 'the credential is nowhere in the log');
        const events = q.out
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { event: AuditEvent }).event);
        const calls = events.filter((e) => e.action === 'tool.call');
        assert.deepEqual(calls.map((e) => [e.payload.server, e.payload.tool, e.payload.outcome, e.decision]).sort(), [
          ['local', 'echo', 'result', 'allow'],
          ['local', 'probe', 'result', 'allow'],
          ['remote', 'echo', 'result', 'allow'],
          ['secure', 'echo', 'result', 'allow'],
        ]);
        const bind = events.filter((e) => e.action === 'secret.bind');
        assert.deepEqual(
          bind.map((e) => e.payload),
          [{ secret: 'mcp-token', version: 1, toolServer: 'secure', hosts: ['mcp.tools.test'], header: 'authorization' }],
        );
        // The local server's own lifecycle, in the execution, told apart from the agent's.
        const own = events.filter((e) => e.action.startsWith('tool.server.'));
        assert.deepEqual(
          own.map((e) => e.action).filter((a) => a !== 'tool.server.usage'),
          ['tool.server.spawn', 'tool.server.start', 'tool.server.exit'],
        );
        for (const e of own) {
          assert.equal(e.actor.execution, executionId);
          assert.equal(e.payload.server, 'local');
          assert.equal(e.payload.sandbox, sandboxId);
          assert.equal(e.payload.serverAgent, 'local-tools');
        }
        assert.equal(own[0]!.payload.isolation, isolation, "the server runs on the agent's runtime");
        assert.equal(events.filter((e) => e.action === 'run.spawn').length, 1, "run.* is the agent's alone");
        const spawnAt = events.findIndex((e) => e.action === 'run.spawn');
        assert.ok(events.findIndex((e) => e.action === 'tool.server.start') < spawnAt, 'the server started before the agent');
        assert.ok(events.findIndex((e) => e.action === 'tool.server.exit') > events.findIndex((e) => e.action === 'run.exit'));
        const remoteEcho = calls.find((e) => e.payload.server === 'remote')!;
        assert.equal(remoteEcho.payload.arguments, JSON.stringify({ text: 'hello from remote' }));
        assert.equal(remoteEcho.payload.argumentsBytes, JSON.stringify({ text: 'hello from remote' }).length);
        const denied = events.filter((e) => e.action === 'tool.denied');
        assert.deepEqual(denied.map((e) => [e.payload.server, e.payload.tool, e.reason]).sort(), [
          ['local', 'send_email', 'tool.denied.not_allowed'],
          ['remote', 'send_email', 'tool.denied.not_allowed'],
          ['secure', 'send_email', 'tool.denied.not_allowed'],
        ]);
        assert.ok(
          events.some((e) => e.action === 'net.blocked' && e.decision === 'deny'),
          `the direct attempt is a gateway refusal in the log:\n${events.map((e) => `${e.action} ${e.decision} ${e.reason ?? ''}`).join('\n')}`,
        );
        const v = await aegis(['audit', 'verify']);
        assert.equal(v.code, 0, v.out + v.err);
      });

    it('crun: a SIGKILLed aegis run leaves the local server behind, and the next start sweeps it (run.lost)', async (t) => {
      if (!requireOrSkip(t, unavailable ?? (await sandboxUnavailable('crun')))) return;
      const state = join(work, 'state-kill');
      const child = await startUntilUp(['run', holdFile, '--isolation', 'crun', '--state-dir', state], aegisEnv());
      const sandboxId = readdirSync(join(state, 'runs')).find((d) => d.includes('.tool-local'));
      assert.ok(sandboxId !== undefined, 'the local server has a run of its own');
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      assert.ok(runCgroupDirs(sandboxId).length > 0, 'the server outlives AEGIS');

      // Any next aegis run sweeps it (here one that fails fast on a missing manifest is not enough: it must start).
      const next = await aegis(['run', join(REPO_ROOT, 'examples/tools-demo/agent.yaml'), '--state-dir', state]);
      assert.equal(next.code, 0, next.err);
      assert.deepEqual(runCgroupDirs(sandboxId), []);
      assert.equal(existsSync(join(state, 'runs', sandboxId)), false);
      const q = await aegis(['audit', 'query', '--json', '--execution', sandboxId, '--action', 'run.lost']);
      assert.equal(q.code, 0, q.err);
      const lost = q.out
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { event: AuditEvent }).event);
      assert.equal(lost.length, 1, q.out);
      assert.equal(lost[0]!.actor.agent, 'local-tools');
      // Its server ignores the EOF that AEGIS's death gave it (server-hold.yaml): the sweep stopped it.
      const removed = lost[0]!.payload.removed as { container: boolean; cgroups: string[]; processes: number[]; runDir: string };
      assert.equal(removed.container, true);
      assert.ok(removed.processes.length > 0, 'the server was still running');
      assert.ok(removed.cgroups.length > 0 && removed.cgroups.every((d) => d.endsWith(`/aegis/${sandboxId}`)), removed.cgroups.join(' '));
      assert.equal(removed.runDir, join(state, 'runs', sandboxId));
    });

    it('fail secure: a local server that does not start, or whose manifest allows network, means the agent does not start', async (t) => {
      if (!requireOrSkip(t, unavailable ?? (await sandboxUnavailable('crun')))) return;
      const dir = join(work, 'refused');
      mkdirSync(dir, { recursive: true });
      chmodSync(dir, 0o755);
      const agentYaml = (server: string) =>
        `version: "1.0"\nagent: { name: refused, runtime: "python:3.11", entrypoint: ["python3", "-c", "print('agent ran')"] }\ntools:\n  - name: local\n    mcp: { manifest: ${server} }\n    allow: ["*"]\n    timeout: 5s\n`;
      const serverYaml = (extra: string) =>
        `version: "1.0"\nagent: { name: broken-tools, runtime: "python:3.11", entrypoint: ["python3", "-c", "import sys; print('no mcp here', file=sys.stderr)"] }\n${extra}`;
      writeFileSync(join(dir, 'dies.yaml'), serverYaml(''));
      writeFileSync(join(dir, 'networked.yaml'), serverYaml('permissions:\n  network:\n    allow: ["api.openai.com"]\n'));
      for (const [server, code, says] of [
        ['dies.yaml', 'tools.server_start_failed', /tool server local .* did not start: .*no mcp here/],
        ['networked.yaml', 'tools.server_manifest_invalid', /allows network access/],
      ] as const) {
        const file = join(dir, `agent-${server}`);
        writeFileSync(file, agentYaml(server));
        const summary = join(dir, `summary-${server}.json`);
        const r = await aegis(['run', file, '--isolation', 'crun', '--state-dir', join(work, 'state'), '--summary', summary]);
        assert.equal(r.code, 125, `${r.out}\n${r.err}`);
        assert.doesNotMatch(r.out, /agent ran/);
        assert.match(r.err, says);
        if (code === 'tools.server_manifest_invalid') {
          const q = await aegis(['audit', 'query', '--json', '--action', 'run.failed_to_start']);
          const last = q.out
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((l) => (JSON.parse(l) as { event: AuditEvent }).event)
            .at(-1);
          assert.equal(last?.reason, code);
        } else {
          // The services could not start: no agent sandbox was made, and the server's own failure is in the log.
          const ex = await aegis(['audit', 'query', '--json', '--action', 'tool.server.exit']);
          assert.equal(ex.code, 0, ex.err);
          assert.ok(ex.out.includes('"serverAgent":"broken-tools"'), ex.out);
        }
      }
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
