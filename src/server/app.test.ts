import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { extract as tarExtract } from 'tar-stream';
import { openAuditLog, openAuditReader, type AuditLog } from '../audit/index.js';
import { CheckedApi, deployForm, rawRequest } from '../test-support/api.js';
import { buildServer } from './app.js';
import { uploadChecker } from './deploy-check.js';
import { newKey } from './keys.js';
import { ROLE_MATRIX, type RouteId } from './roles.js';
import { ROUTES } from './routes.js';
import { openSqliteStore } from './store/sqlite.js';
import type { Role, Store } from './store/types.js';
import { codeArchive, manifest, targz } from './test-fixtures.js';
import { listen, type Listening } from './transport.js';

const ROLES: Role[] = ['admin', 'deployer', 'operator', 'auditor'];
const UUID = '00000000-0000-4000-8000-000000000000';

interface Env {
  dir: string;
  store: Store;
  log: AuditLog;
  api: CheckedApi;
  listening: Listening;
  keys: Record<Role, string>;
  close(): Promise<void>;
}

async function start(o: { throttle?: { windowMs: number; maxFailures: number; blockMs: number } } = {}): Promise<Env> {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-server-'));
  const home = join(dir, 'home');
  await mkdir(home, { mode: 0o700 });
  const store = await openSqliteStore(join(dir, 'state.db'));
  const log = await openAuditLog({ home, env: {} });
  const app = await buildServer({
    store,
    audit: log,
    openAuditReader: () => openAuditReader({ home, env: {} }),
    checkUpload: uploadChecker(join(dir, 'tmp')),
    outputsRoot: join(dir, 'outputs'),
    secrets: { dir: join(home, 'secrets'), rotationOverlapMs: 60_000 },
    version: 'test',
    streamPollMs: 20,
    limits: { codeBytes: 1 << 20 },
    ...(o.throttle !== undefined ? { throttle: o.throttle } : {}),
  });
  const listening = await listen(app, { listen: '127.0.0.1:0' });
  const keys = {} as Record<Role, string>;
  for (const role of ROLES) {
    const k = await newKey(role, { now: Date.now(), expiresAt: null, createdBy: 'test' });
    await store.createKey(k.record);
    keys[role] = k.key;
  }
  const api = await CheckedApi.connect({ url: listening.url! });
  return {
    dir,
    store,
    log,
    api,
    listening,
    keys,
    close: async () => {
      await listening.close();
      await app.close();
      await log.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function auditActions(env: Env, action: string): Promise<Record<string, unknown>[]> {
  await env.log.flush();
  const r = await env.api.call('GET', `/v1/audit/events?action=${action}&limit=1000`, { key: env.keys.auditor });
  assert.equal(r.status, 200);
  return (r.json as { events: { event: { payload: Record<string, unknown> } }[] }).events.map((e) => e.event.payload);
}

/** A concrete path for a route template (ids that exist or not: only authorization is looked at). */
function concrete(path: string): string {
  return path.replace('{name}', 'nosuch').replace('{id}', path.startsWith('/v1/keys') ? 'ak_0000000000000000' : UUID);
}

describe('server API (in-process, loopback)', () => {
  let env: Env;
  before(async () => {
    env = await start();
  });
  after(async () => {
    await env.close();
  });

  it('secrets (admin): set, list without values, rotate, refuse bad input and duplicates, remove; the value is never answered or logged', async () => {
    const admin = { key: env.keys.admin };
    const value = 'sk-live-VERY-SECRET-123';
    const set = await env.api.call('POST', '/v1/secrets', {
      ...admin,
      json: { name: 'openai', hosts: ['api.openai.com', '*.openai.azure.com'], header: 'authorization', value, expires: '30d' },
    });
    assert.equal(set.status, 201, set.text);
    assert.deepEqual(set.json, { name: 'openai', version: 1 });
    const dup = await env.api.call('POST', '/v1/secrets', { ...admin, json: { name: 'openai', hosts: ['api.openai.com'], value } });
    assert.deepEqual([dup.status, (dup.json as { error: { code: string } }).error.code], [409, 'conflict']);
    for (const bad of [
      { name: 'Bad Name', hosts: ['a.example.com'], value },
      { name: 'x', hosts: ['10.0.0.1'], value },
      { name: 'x', hosts: ['a.example.com'], value: 'line\nbreak' },
      { name: 'x', hosts: ['a.example.com'], header: 'host', value },
      { name: 'x', hosts: ['a.example.com'], value, extra: 1 },
    ]) {
      const r = await env.api.call('POST', '/v1/secrets', { ...admin, json: bad });
      assert.equal(r.status, 400, JSON.stringify(bad) + r.text);
    }
    const rot = await env.api.call('POST', '/v1/secrets/openai/rotate', { ...admin, json: { value: 'sk-live-NEWER-456' } });
    assert.deepEqual([rot.status, rot.json], [200, { name: 'openai', version: 2 }]);
    const ls = await env.api.call('GET', '/v1/secrets', admin);
    assert.equal(ls.status, 200);
    assert.ok(!ls.text.includes('VERY-SECRET') && !ls.text.includes('NEWER'), 'no value in the listing');
    const listed = (ls.json as { secrets: { name: string; version: number; hosts: string[]; versions: unknown[] }[] }).secrets;
    assert.deepEqual(
      listed.map((x) => [x.name, x.version, x.hosts, x.versions.length]),
      [['openai', 2, ['*.openai.azure.com', 'api.openai.com'], 2]],
    );
    assert.equal((await env.api.call('GET', '/v1/secrets', { key: env.keys.operator })).status, 403);
    const rm1 = await env.api.call('DELETE', '/v1/secrets/openai', admin);
    assert.equal(rm1.status, 200, rm1.text);
    assert.equal((await env.api.call('DELETE', '/v1/secrets/openai', admin)).status, 404);
    assert.equal((await env.api.call('POST', '/v1/secrets/nosuch/rotate', { ...admin, json: { value } })).status, 404);
    const events = [
      ...(await auditActions(env, 'secret.set')),
      ...(await auditActions(env, 'secret.rotate')),
      ...(await auditActions(env, 'secret.rm')),
    ];
    assert.equal(events.length, 3);
    assert.ok(!JSON.stringify(events).includes('VERY-SECRET') && !JSON.stringify(events).includes('NEWER'), 'no value in the audit log');
  });

  it('serves an OpenAPI 3.1 document with every route of the table and its roles', async () => {
    const doc = env.api.doc as unknown as { openapi: string; paths: Record<string, Record<string, { 'x-aegis-roles': unknown }>> };
    assert.equal(doc.openapi, '3.1.0');
    for (const r of ROUTES) assert.deepEqual(doc.paths[r.path]?.[r.method.toLowerCase()]?.['x-aegis-roles'], ROLE_MATRIX[r.id], r.id);
  });

  it('the route table and the role matrix name the same routes, each once', () => {
    assert.deepEqual(ROUTES.map((r) => r.id).sort(), Object.keys(ROLE_MATRIX).sort());
    assert.equal(new Set(ROUTES.map((r) => `${r.method} ${r.path}`)).size, ROUTES.length);
  });

  it('the role matrix: every route x every role is allowed (never 401/403) or 403', async () => {
    for (const r of ROUTES) {
      for (const role of ROLES) {
        const rule = ROLE_MATRIX[r.id as RouteId];
        const res = await env.api.call(r.method, concrete(r.path), {
          key: env.keys[role],
          ...(r.body === 'multipart' ? { body: 'x', contentType: 'text/plain' } : r.body !== undefined ? { json: {} } : {}),
        });
        if (rule === 'public' || rule.includes(role))
          assert.ok(res.status !== 403 && res.status !== 401, `${r.id} as ${role}: ${res.status} ${res.text}`);
        else {
          assert.equal(res.status, 403, `${r.id} as ${role}`);
          assert.equal((res.json as { error: { code: string } }).error.code, 'forbidden');
        }
      }
    }
  });

  it('answers 401 without a key, with a malformed, unknown or wrong key, and audits each failure', async () => {
    const good = env.keys.admin;
    const wrongSecret = `${good.split('.')[0]}.${'A'.repeat(43)}`;
    const cases: [string | undefined, string][] = [
      [undefined, 'missing_key'],
      ['nonsense', 'malformed_key'],
      [`ak_ffffffffffffffff.${'B'.repeat(43)}`, 'unknown_key'],
      [wrongSecret, 'wrong_secret'],
    ];
    for (const [key, reason] of cases) {
      const r = await env.api.call('GET', '/v1/agents', key === undefined ? {} : { key });
      assert.equal(r.status, 401, reason);
      assert.equal((r.json as { error: { code: string } }).error.code, 'unauthorized');
    }
    const failed = await auditActions(env, 'api.auth_failed');
    for (const [, reason] of cases)
      assert.ok(
        failed.some((p) => p['reason'] === reason && p['source'] === 'tcp:127.0.0.1'),
        reason,
      );
    assert.ok(failed.some((p) => p['reason'] === 'wrong_secret' && p['keyId'] === good.split('.')[0]));
  });

  it('refuses expired and revoked keys (401, audited with the key id)', async () => {
    const expired = await newKey('admin', { now: Date.now() - 10_000, expiresAt: Date.now() - 1000, createdBy: 'test' });
    await env.store.createKey(expired.record);
    assert.equal((await env.api.call('GET', '/v1/keys', { key: expired.key })).status, 401);
    const made = await env.api.call('POST', '/v1/keys', { key: env.keys.admin, json: { role: 'operator', expires: '1d' } });
    assert.equal(made.status, 201);
    const { id, key } = made.json as { id: string; key: string };
    assert.equal((await env.api.call('GET', '/v1/executions', { key })).status, 200);
    assert.equal((await env.api.call('DELETE', `/v1/keys/${id}`, { key: env.keys.admin })).status, 200);
    assert.equal((await env.api.call('DELETE', `/v1/keys/${id}`, { key: env.keys.admin })).status, 409);
    assert.equal((await env.api.call('GET', '/v1/executions', { key })).status, 401);
    const failed = await auditActions(env, 'api.auth_failed');
    assert.ok(failed.some((p) => p['reason'] === 'expired_key' && p['keyId'] === expired.record.id));
    assert.ok(failed.some((p) => p['reason'] === 'revoked_key' && p['keyId'] === id));
    const listed = await env.api.call('GET', '/v1/keys', { key: env.keys.admin });
    assert.ok(!listed.text.includes(key.split('.')[1]!), 'the secret is never listed');
  });

  it('bad input: malformed JSON, unknown fields, wrong types, oversized bodies, unknown routes and ids', async () => {
    const code = (r: { json: unknown }): string => (r.json as { error: { code: string } }).error.code;
    const bad = await env.api.call('POST', '/v1/keys', { key: env.keys.admin, body: '{"role": ', contentType: 'application/json' });
    assert.equal(bad.status, 400);
    assert.equal(code(bad), 'invalid_request');
    const unknown = await env.api.call('POST', '/v1/keys', { key: env.keys.admin, json: { role: 'admin', extra: 1 } });
    assert.equal(unknown.status, 400);
    assert.equal(code(unknown), 'invalid_request');
    assert.equal((await env.api.call('POST', '/v1/keys', { key: env.keys.admin, json: { role: 'root' } })).status, 400);
    const big = await env.api.call('POST', `/v1/agents/x/executions`, { key: env.keys.admin, json: { stdin: 'x'.repeat(3 << 20) } });
    assert.equal(big.status, 413);
    assert.equal(code(big), 'payload_too_large');
    const nowhere = await env.api.call('GET', '/v1/nowhere', { key: env.keys.admin });
    assert.equal(nowhere.status, 404);
    assert.equal(code(nowhere), 'not_found');
    assert.equal((await env.api.call('GET', `/v1/executions/${UUID}`, { key: env.keys.admin })).status, 404);
    assert.equal((await env.api.call('GET', '/v1/executions/not-an-id', { key: env.keys.admin })).status, 400);
    assert.equal((await env.api.call('GET', '/v1/executions?colour=red', { key: env.keys.admin })).status, 400);
    assert.equal((await env.api.call('POST', '/v1/agents/nosuch/executions', { key: env.keys.admin, json: {} })).status, 404);
  });

  it('deploys an agent (multipart), a redeploy is a new version, and both are audited with their digests', async () => {
    const code = await codeArchive({ 'main.py': 'print("hi")\n' });
    const f = deployForm(manifest('hello-api'), code);
    const r1 = await env.api.call('POST', '/v1/agents', { key: env.keys.deployer, body: f.body, contentType: f.contentType });
    assert.equal(r1.status, 201, r1.text);
    const d1 = r1.json as { name: string; version: number; codeDigest: string; manifestDigest: string };
    assert.equal(d1.name, 'hello-api');
    assert.equal(d1.version, 1);
    const f2 = deployForm(manifest('hello-api', '  cpu_quota: 0.5'), code);
    const r2 = await env.api.call('POST', '/v1/agents', { key: env.keys.deployer, body: f2.body, contentType: f2.contentType });
    assert.equal((r2.json as { version: number }).version, 2);
    assert.notEqual((r2.json as { manifestDigest: string }).manifestDigest, d1.manifestDigest);
    const got = await env.api.call('GET', '/v1/agents/hello-api', { key: env.keys.operator });
    assert.equal((got.json as { version: number }).version, 2);
    const deploys = await auditActions(env, 'agent.deploy');
    assert.ok(
      deploys.some(
        (p) =>
          p['name'] === 'hello-api' && p['version'] === 1 && p['codeDigest'] === d1.codeDigest && p['manifestDigest'] === d1.manifestDigest,
      ),
    );
  });

  it('takes the manifest as a file part too, within the manifest limit', async () => {
    const code = await codeArchive({ 'main.py': '' });
    const form = (text: string): { body: Buffer; contentType: string } => {
      const b = 'bnd';
      return {
        contentType: `multipart/form-data; boundary=${b}`,
        body: Buffer.concat([
          Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="manifest"; filename="agent.yaml"\r\n\r\n${text}\r\n`),
          Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="code"; filename="c.tgz"\r\n\r\n`),
          code,
          Buffer.from(`\r\n--${b}--\r\n`),
        ]),
      };
    };
    const ok = form(manifest('file-part'));
    assert.equal(
      (await env.api.call('POST', '/v1/agents', { key: env.keys.deployer, body: ok.body, contentType: ok.contentType })).status,
      201,
    );
    const big = form(`${manifest('file-part-big')}\n# ${'x'.repeat(300 << 10)}`);
    const r = await env.api.call('POST', '/v1/agents', { key: env.keys.deployer, body: big.body, contentType: big.contentType });
    assert.equal(r.status, 413, r.text);
    assert.equal(await env.store.getAgent('file-part-big'), null);
  });

  it('refuses an invalid manifest with issues (line, column, path, message) and stores nothing', async () => {
    const f = deployForm('version: "1.0"\nagent:\n  name: Bad_Name\n', await codeArchive({ 'main.py': '' }));
    const r = await env.api.call('POST', '/v1/agents', { key: env.keys.deployer, body: f.body, contentType: f.contentType });
    assert.equal(r.status, 400);
    const e = (r.json as { error: { code: string; issues: { line: number; path: string }[] } }).error;
    assert.equal(e.code, 'manifest_invalid');
    assert.ok(e.issues.length > 0 && e.issues.every((i) => i.line >= 0));
    assert.equal(await env.store.getAgent('bad-name'), null);
  });

  it('refuses hostile code archives (traversal, symlink out, oversized) with nothing stored or left behind', async () => {
    const hostile = [
      await targz([{ header: { name: '../escape.py', type: 'file' }, body: 'x' }]),
      await targz([{ header: { name: 'link', type: 'symlink', linkname: '/etc/passwd' } }]),
      Buffer.alloc(2 << 20, 1),
    ];
    for (const [i, code] of hostile.entries()) {
      const f = deployForm(manifest(`hostile-${i}`), code);
      const r = await env.api.call('POST', '/v1/agents', { key: env.keys.deployer, body: f.body, contentType: f.contentType });
      assert.ok(r.status === 400 || r.status === 413, `${i}: ${r.status} ${r.text}`);
      assert.equal(await env.store.getAgent(`hostile-${i}`), null);
    }
    const { readdir } = await import('node:fs/promises');
    assert.deepEqual(await readdir(join(env.dir, 'tmp')).catch(() => []), []);
  });

  it('queues an execution, cancels it before any worker claims it (202, killed), refuses a second cancel (409), streams its exit', async () => {
    const c = await env.api.call('POST', '/v1/agents/hello-api/executions', { key: env.keys.operator, json: { args: ['a'] } });
    assert.equal(c.status, 201);
    const { id, status } = c.json as { id: string; status: string };
    assert.equal(status, 'queued');
    const d = await env.api.call('DELETE', `/v1/executions/${id}`, { key: env.keys.operator });
    assert.equal(d.status, 202);
    assert.equal((d.json as { status: string }).status, 'killed');
    assert.equal((await env.api.call('DELETE', `/v1/executions/${id}`, { key: env.keys.operator })).status, 409);
    const s = await env.api.call('GET', `/v1/executions/${id}/stream`, { key: env.keys.operator });
    assert.equal(s.status, 200);
    assert.match(s.text, /event: exit\nid: \d+\ndata: \{.*"status":"killed"/);
    const g = await env.api.call('GET', `/v1/executions/${id}`, { key: env.keys.operator });
    assert.equal((g.json as { status: string }).status, 'killed');
    const l = await env.api.call('GET', '/v1/executions?agent=hello-api&status=killed', { key: env.keys.operator });
    assert.ok((l.json as { executions: { id: string }[] }).executions.some((e) => e.id === id));
  });

  it('refuses environment additions the manifest does not allow (400) and creates no execution', async () => {
    const before = (await env.store.listExecutions({ agent: 'hello-api' })).length;
    for (const bad of [{ HTTP_PROXY: 'http://evil' }, { LOG: 'secret:token' }]) {
      const r = await env.api.call('POST', '/v1/agents/hello-api/executions', { key: env.keys.operator, json: { env: bad } });
      assert.equal(r.status, 400, r.text);
      assert.equal((r.json as { error: { code: string } }).error.code, 'invalid_request');
    }
    assert.equal((await env.store.listExecutions({ agent: 'hello-api' })).length, before);
    const ok = await env.api.call('POST', '/v1/agents/hello-api/executions', { key: env.keys.operator, json: { env: { REGION: 'eu' } } });
    assert.equal(ok.status, 201);
    assert.equal(
      (await env.api.call('DELETE', `/v1/executions/${(ok.json as { id: string }).id}`, { key: env.keys.operator })).status,
      202,
    );
  });

  it('serves outputs as a tar of regular files and folders only (a symlink the agent made is left out)', async () => {
    const c = await env.api.call('POST', '/v1/agents/hello-api/executions', { key: env.keys.operator, json: {} });
    const { id } = c.json as { id: string };
    assert.equal((await env.api.call('GET', `/v1/executions/${id}/outputs`, { key: env.keys.operator })).status, 409);
    await env.store.claimQueued('w', 100, Date.now());
    await env.store.finishExecution(id, { status: 'exited', exitCode: 0, durationMs: 1, summary: null, at: Date.now() });
    const out = join(env.dir, 'outputs', id, 'data', 'outputs');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'result.txt'), 'forty-two\n');
    await symlink('/etc/shadow', join(out, 'leak'));
    const r = await env.api.call('GET', `/v1/executions/${id}/outputs`, { key: env.keys.operator });
    assert.equal(r.status, 200);
    const names: Record<string, string> = {};
    await new Promise<void>((resolve, reject) => {
      const x = tarExtract();
      x.on('entry', (h, stream, next) => {
        const parts: Buffer[] = [];
        stream.on('data', (b: unknown) => void parts.push(b as Buffer));
        stream.on('end', () => {
          names[h.name] = Buffer.concat(parts).toString();
          next();
        });
      });
      x.on('finish', resolve);
      x.on('error', reject);
      x.end(r.raw);
    });
    assert.equal(names['data/outputs/result.txt'], 'forty-two\n');
    assert.ok(!('data/outputs/leak' in names));
  });

  it('audit routes: events, checkpoint, inclusion and consistency proofs over the same log', async () => {
    await env.log.flush();
    await env.log.checkpoint();
    const cp = await env.api.call('GET', '/v1/audit/checkpoint', { key: env.keys.auditor });
    assert.equal(cp.status, 200);
    assert.match((cp.json as { checkpoint: string }).checkpoint, /\n\d+\n/);
    const ev = await env.api.call('GET', '/v1/audit/events?limit=2', { key: env.keys.auditor });
    const body = ev.json as { events: unknown[]; size: number; next: number | null };
    assert.equal(body.events.length, 2);
    assert.ok(body.size >= 2 && body.next !== null);
    const inc = await env.api.call('GET', `/v1/audit/proofs/inclusion?index=1&size=${body.size}`, { key: env.keys.auditor });
    assert.equal(inc.status, 200);
    const con = await env.api.call('GET', `/v1/audit/proofs/consistency?size1=1&size2=${body.size}`, { key: env.keys.auditor });
    assert.equal(con.status, 200);
    assert.equal((await env.api.call('GET', `/v1/audit/proofs/inclusion?index=${body.size + 5}`, { key: env.keys.auditor })).status, 400);
  });

  it('/metrics, /healthz and /readyz', async () => {
    const m = await env.api.call('GET', '/metrics', { key: env.keys.auditor });
    assert.equal(m.status, 200);
    for (const family of [
      'aegis_executions{status="killed"}',
      'aegis_execution_start_seconds_bucket{start="warm"',
      'aegis_auth_failures_total{reason="missing_key"}',
      'aegis_gateway_denials_total',
      'aegis_audit_events_appended_total',
    ])
      assert.ok(m.text.includes(family), family);
    assert.equal((await env.api.call('GET', '/healthz')).status, 200);
    assert.equal((await env.api.call('GET', '/readyz')).status, 200);
  });
});

describe('server API: throttling', () => {
  it('blocks a source after repeated failures (429 throttled, audited once per block), even with a good key', async () => {
    const env = await start({ throttle: { windowMs: 60_000, maxFailures: 3, blockMs: 60_000 } });
    try {
      for (let i = 0; i < 3; i++) assert.equal((await env.api.call('GET', '/v1/agents', { key: 'bad' })).status, 401);
      for (let i = 0; i < 2; i++) {
        const r = await env.api.call('GET', '/v1/agents', { key: env.keys.admin });
        assert.equal(r.status, 429);
        assert.equal((r.json as { error: { code: string } }).error.code, 'throttled');
      }
      await env.log.flush();
      const reader = await openAuditReader({ home: join(env.dir, 'home'), env: {} });
      const actions: string[] = [];
      for await (const rec of reader.read(0)) if (rec.decoded !== undefined) actions.push(rec.decoded.event.action);
      await reader.close();
      assert.equal(actions.filter((a) => a === 'api.auth_failed').length, 3);
      assert.equal(actions.filter((a) => a === 'api.throttled').length, 1);
      // Health stays reachable for a throttled source.
      assert.equal((await rawRequest(env.api.target, 'GET', '/healthz')).status, 200);
    } finally {
      await env.close();
    }
  });
});
