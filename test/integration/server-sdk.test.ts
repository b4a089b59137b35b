/**
 * The SDK (sdk/) end to end against a real `aegis serve` with real sandboxes: keys made through
 * the API, an agent deployed with its code folder, executed with args and stdin, its output
 * streamed (SSE), waited for, its outputs downloaded; the same over the unix socket; errors typed
 * by code (manifest_invalid with line/column, 401, 403, 404); cancel mid-run; and the SDK's
 * route list checked against the server's OpenAPI document.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  Aegis,
  AegisApiError,
  AegisClientError,
  EXECUTION_STATUSES,
  LIST_FIELDS,
  RESPONSE_FIELDS,
  ROUTES,
  type ExecutionEvent,
} from '../../sdk/src/index.js';
import { requireOrSkip } from './sandbox-conformance.js';
import { makeServerPki } from '../../src/test-support/tls.js';
import { cli, serverTestsUnavailable, startServer, writeAgent, type TestServer } from './server-client-support.js';

/** Every file under `dir`, as relative paths. */
function files(dir: string, rel = ''): string[] {
  return readdirSync(join(dir, rel)).flatMap((n) => {
    const r = rel === '' ? n : `${rel}/${n}`;
    return statSync(join(dir, r)).isDirectory() ? files(dir, r) : [r];
  });
}

const apiError = (code: string, status: number) => (e: unknown) => e instanceof AegisApiError && e.code === code && e.status === status;

describe('the SDK against aegis serve (real sandboxes)', { timeout: 600_000 }, () => {
  let unavailable: string | null = null;
  let srv: TestServer | undefined;
  let admin: Aegis;
  let deployer: Aegis;
  let operator: Aegis;
  let deployerKey = '';
  let operatorKey = '';

  before(async () => {
    unavailable = await serverTestsUnavailable();
    if (unavailable !== null) return;
    srv = await startServer();
    admin = new Aegis({ url: srv.url, apiKey: srv.adminKey });
    deployerKey = (await admin.keys.create({ role: 'deployer' })).key;
    operatorKey = (await admin.keys.create({ role: 'operator', expires: '1d' })).key;
    deployer = new Aegis({ url: srv.url, apiKey: deployerKey });
    operator = new Aegis({ url: srv.url, apiKey: operatorKey });
  });
  after(async () => {
    await srv?.stop();
  });

  it('deploys, executes with args and stdin, streams, waits, and downloads the outputs', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const manifest = writeAgent(
      srv!.work,
      'sdk-echo',
      'echo "out:$1"\ncat\ncat data.txt\necho "$1" > /data/out/result.txt\necho "err:$1" >&2\nexit 3\n',
    );
    const deployed = await deployer.agents.deploy({ manifestPath: manifest, codeDir: join(srv!.work, 'agents', 'sdk-echo') });
    assert.equal(deployed.name, 'sdk-echo');
    assert.equal(deployed.version, 1);
    assert.match(deployed.info.manifestDigest, /^sha256:[0-9a-f]{64}$/);
    assert.match(deployed.info.codeDigest, /^sha256:[0-9a-f]{64}$/);

    const agent = await operator.agents.get('sdk-echo');
    const run = await agent.execute({ args: ['first'], stdin: 'from-stdin\n' });
    assert.match(run.id, /^[0-9a-f-]{36}$/);
    const events: ExecutionEvent[] = [];
    for await (const ev of run.stream()) events.push(ev);
    const text = (type: 'stdout' | 'stderr'): string =>
      events
        .filter((e): e is Extract<ExecutionEvent, { type: 'stdout' | 'stderr' }> => e.type === type)
        .map((e) => e.data)
        .join('');
    assert.equal(text('stdout'), 'out:first\nfrom-stdin\ndata of sdk-echo\n', srv!.log());
    assert.equal(text('stderr'), 'err:first\n');
    assert.ok(
      events.some((e) => e.type === 'audit'),
      'audit events in the stream',
    );
    const exit = events.at(-1);
    assert.equal(exit?.type, 'exit');
    if (exit?.type === 'exit') assert.deepEqual([exit.status, exit.exitCode], ['exited', 3]);

    const info = await run.wait({ timeoutMs: 60_000 });
    assert.equal(info.status, 'exited');
    assert.equal(info.exitCode, 3);
    assert.deepEqual(info.args, ['first']);
    assert.equal(info.summary?.['exitCode'], 3);

    const out = join(srv!.work, 'downloaded');
    const got = await run.outputs.download(out);
    assert.equal(got.files, 1);
    const found = files(out).filter((f) => f.endsWith('result.txt'));
    assert.equal(found.length, 1, JSON.stringify(files(out)));
    assert.equal(readFileSync(join(out, found[0]!), 'utf8'), 'first\n');

    // Redeploying the same name is a new version; the listing shows the latest.
    const again = await deployer.agents.deploy({ manifestPath: manifest, codeDir: join(srv!.work, 'agents', 'sdk-echo') });
    assert.equal(again.version, 2);
    assert.equal(again.info.codeDigest, deployed.info.codeDigest, 'the same folder packs to the same archive');
    const listed = (await deployer.agents.list()).find((a) => a.name === 'sdk-echo');
    assert.equal(listed?.version, 2);
    const execs = await operator.executions.list({ agent: 'sdk-echo' });
    assert.ok(execs.some((e) => e.id === run.id && e.status === 'exited'));
  });

  it('works over the unix socket with a key', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    writeAgent(srv!.work, 'sdk-sock', 'echo "sock:$1"\n');
    const viaSocket = new Aegis({ url: `unix:${srv!.socket}`, apiKey: deployerKey });
    const agent = await viaSocket.agents.deploy({
      manifestPath: join(srv!.work, 'agents', 'sdk-sock', 'agent.yaml'),
      codeDir: join(srv!.work, 'agents', 'sdk-sock'),
    });
    const run = await new Aegis({ url: `unix:${srv!.socket}`, apiKey: operatorKey }).agents
      .get(agent.name)
      .then((a) => a.execute({ args: ['x'] }));
    let out = '';
    for await (const ev of run.stream()) if (ev.type === 'stdout') out += ev.data;
    assert.equal(out, 'sock:x\n');
  });

  it('types errors by code: manifest_invalid with positions, 401, 403, 404', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const code = join(srv!.work, 'agents', 'sdk-sock');
    await assert.rejects(
      deployer.agents.deploy({
        manifest: 'version: "1.0"\nagent:\n  name: Bad_Name\n  runtime: "python:3.11"\n  entrypoint: ["sh"]\n',
        codeDir: code,
      }),
      (e: unknown) =>
        e instanceof AegisApiError &&
        e.code === 'manifest_invalid' &&
        e.status === 400 &&
        e.issues.some((i) => i.path === 'agent.name' && i.line === 3 && i.column === 9),
    );
    await assert.rejects(new Aegis({ url: srv!.url, apiKey: 'ak_0000000000000000.wrong' }).agents.list(), apiError('unauthorized', 401));
    await assert.rejects(new Aegis({ url: srv!.url }).agents.list(), apiError('unauthorized', 401));
    await assert.rejects(operator.agents.deploy({ manifestPath: join(code, 'agent.yaml'), codeDir: code }), apiError('forbidden', 403));
    await assert.rejects(deployer.keys.list(), apiError('forbidden', 403));
    await assert.rejects(operator.executions.info('00000000-0000-4000-8000-000000000000'), apiError('not_found', 404));
    await assert.rejects(
      operator.agents.get('no-such-agent').then((a) => a.execute()),
      apiError('not_found', 404),
    );
  });

  it('cancels a running execution: it ends killed', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const manifest = writeAgent(srv!.work, 'sdk-sleeper', 'echo ready\nsleep 60\n');
    await deployer.agents.deploy({ manifestPath: manifest, codeDir: join(srv!.work, 'agents', 'sdk-sleeper') });
    const run = await (await operator.agents.get('sdk-sleeper')).execute();
    for await (const ev of run.stream()) {
      if (ev.type === 'stdout' && ev.data.includes('ready')) {
        await run.cancel();
      }
    }
    const info = await run.wait({ timeoutMs: 60_000 });
    assert.equal(info.status, 'killed');
  });

  it('revoked keys are refused at once', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const k = await admin.keys.create({ role: 'auditor' });
    const listed = await admin.keys.list();
    assert.ok(listed.some((x) => x.id === k.id && x.revoked === null && x.role === 'auditor'));
    await admin.keys.revoke(k.id);
    assert.notEqual((await admin.keys.list()).find((x) => x.id === k.id)?.revoked, null);
    await assert.rejects(new Aegis({ url: srv!.url, apiKey: k.key }).executions.list(), apiError('unauthorized', 401));
  });

  it("the SDK's routes, answer fields and statuses are the server's OpenAPI document's", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const res = await fetch(`${srv!.url}/v1/openapi.json`, { headers: { authorization: `Bearer ${srv!.adminKey}` } });
    assert.equal(res.status, 200);
    type Schema = { properties?: Record<string, Schema>; items?: Schema; enum?: unknown[] };
    type Op = { responses: Record<string, { content?: Record<string, { schema: Schema }> }> };
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, Op>> };
    assert.match(doc.openapi, /^3\.1\./);
    const missing = ROUTES.filter(([method, path]) => doc.paths[path]?.[method] === undefined).map(([m, p]) => `${m} ${p}`);
    assert.deepEqual(missing, []);
    const schemaOf = (key: string): Schema => {
      const [method, path, status] = key.split(' ') as [string, string, string];
      const s = doc.paths[path]?.[method]?.responses[status]?.content?.['application/json']?.schema;
      assert.ok(s?.properties, `${key}: a JSON object schema in the document`);
      return s;
    };
    const sorted = (a: Iterable<string>): string[] => [...a].sort();
    for (const [key, fields] of Object.entries(RESPONSE_FIELDS)) {
      assert.deepEqual(sorted(Object.keys(schemaOf(key).properties!)), sorted(fields), key);
    }
    for (const [key, { key: listKey, item }] of Object.entries(LIST_FIELDS)) {
      const items = schemaOf(key).properties![listKey]?.items;
      assert.ok(items?.properties, `${key}: ${listKey} is a list of objects`);
      assert.deepEqual(sorted(Object.keys(items.properties)), sorted(item), key);
    }
    const status = schemaOf('get /v1/executions/{id} 200').properties!['status'];
    assert.deepEqual(status?.enum, [...EXECUTION_STATUSES]);
  });
});

describe('the SDK and the CLI over TLS', { timeout: 300_000 }, () => {
  let srv: TestServer | undefined;
  let pkiDir = '';
  let pki: ReturnType<typeof makeServerPki> | undefined;
  before(async () => {
    pkiDir = mkdtempSync(join(tmpdir(), 'aegis-client-tls-'));
    pki = makeServerPki(pkiDir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
    srv = await startServer({ tls: { certFile: pki.certFile, keyFile: pki.keyFile, ca: pki.ca } });
  });
  after(async () => {
    await srv?.stop();
    rmSync(pkiDir, { recursive: true, force: true });
  });

  it('trusts the server with the CA given (SDK: ca; CLI: NODE_EXTRA_CA_CERTS) and refuses it without', async () => {
    assert.match(srv!.url, /^https:/);
    const keys = await new Aegis({ url: srv!.url, apiKey: srv!.adminKey, ca: pki!.ca }).keys.list();
    assert.ok(keys.length >= 1);
    await assert.rejects(
      new Aegis({ url: srv!.url, apiKey: srv!.adminKey }).keys.list(),
      (e: unknown) => e instanceof AegisClientError && e.code === 'unreachable' && /SELF_SIGNED|UNABLE_TO|CERT/.test(e.message),
    );
    const ok = cli(['keys', 'ls', '--json'], { ...srv!.env(srv!.adminKey), NODE_EXTRA_CA_CERTS: pki!.caFile });
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(Array.isArray(JSON.parse(ok.stdout)));
    const untrusted = cli(['keys', 'ls'], srv!.env(srv!.adminKey));
    assert.equal(untrusted.code, 3);
    assert.match(untrusted.stderr, /cannot reach the AEGIS server at https:/);
  });
});
