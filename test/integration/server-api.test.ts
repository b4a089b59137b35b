/**
 * `aegis serve` (the built bin) on loopback and on its unix socket: the whole role matrix
 * (every route x every role: allowed or 403), authentication failures audited and throttled,
 * expired and revoked keys refused, bad input (oversized, malformed JSON, unknown fields and
 * ids, invalid transitions -> 409) with nothing half-created. Every response is checked against
 * the server's OpenAPI document. No sandbox runs here (server-exec.test.ts runs them).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { openAuditReader } from '../../src/audit/index.js';
import { ROLE_MATRIX } from '../../src/server/roles.js';
import { ROUTES } from '../../src/server/routes.js';
import { newKey } from '../../src/server/keys.js';
import { openSqliteStore } from '../../src/server/store/sqlite.js';
import type { Role } from '../../src/server/store/types.js';
import { CheckedApi, deployForm, rawRequest } from '../../src/test-support/api.js';
import { makeServerPki } from '../../src/test-support/tls.js';
import { codeArchive } from '../../src/server/test-fixtures.js';
import { agentManifest, createKey, removeDirs, serverDirs, startServer, type RunningServer, type ServerDirs } from './server-support.js';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { AEGIS_BIN } from '../../src/test-support/repo.js';

const ROLES: Role[] = ['admin', 'deployer', 'operator', 'auditor'];
const UUID = '00000000-0000-4000-8000-000000000000';
const errCode = (r: { json: unknown }): string => (r.json as { error: { code: string } }).error.code;

async function auditEvents(d: ServerDirs): Promise<{ action: string; payload: Record<string, unknown> }[]> {
  const reader = await openAuditReader({ home: d.home, env: {} });
  const out: { action: string; payload: Record<string, unknown> }[] = [];
  try {
    for await (const r of reader.read(0))
      if (r.decoded !== undefined) out.push({ action: r.decoded.event.action, payload: r.decoded.event.payload ?? {} });
  } finally {
    await reader.close();
  }
  return out;
}

describe('aegis serve: API, keys and roles', { timeout: 180_000 }, () => {
  let d: ServerDirs;
  let server: RunningServer;
  const keys = {} as Record<Role, string>;

  before(async () => {
    d = serverDirs('aegis-server-api');
    for (const role of ROLES) keys[role] = createKey(d, role);
    server = await startServer(d);
  });
  after(async () => {
    await server?.stop();
    removeDirs(d);
  });

  it('keys create printed the key alone and audited key.create', async () => {
    const created = (await auditEvents(d)).filter((e) => e.action === 'key.create');
    assert.equal(created.length, ROLES.length);
    for (const role of ROLES) assert.ok(created.some((e) => e.payload['role'] === role && e.payload['id'] === keys[role].split('.')[0]));
  });

  for (const transport of ['tcp', 'socket'] as const) {
    it(`the role matrix over ${transport}: every route x every role is allowed or 403`, async () => {
      const api = transport === 'tcp' ? server.api : new CheckedApi({ socketPath: server.socket }, server.api.doc);
      let checked = 0;
      for (const r of ROUTES) {
        const path = r.path.replace('{name}', 'nosuch').replace('{id}', r.path.startsWith('/v1/keys') ? 'ak_0000000000000000' : UUID);
        for (const role of ROLES) {
          const rule = ROLE_MATRIX[r.id];
          const res = await api.call(r.method, path, {
            key: keys[role],
            ...(r.body === 'multipart' ? { body: 'x', contentType: 'text/plain' } : r.body !== undefined ? { json: {} } : {}),
          });
          if (rule === 'public' || rule.includes(role))
            assert.ok(res.status !== 401 && res.status !== 403, `${r.id} as ${role}: ${res.status} ${res.text}`);
          else assert.deepEqual([res.status, errCode(res)], [403, 'forbidden'], `${r.id} as ${role}`);
          checked += 1;
        }
      }
      assert.equal(checked, ROUTES.length * ROLES.length);
    });
  }

  it('a root peer on the socket without a key is admin; over TCP without a key it is 401', async () => {
    const sock = new CheckedApi({ socketPath: server.socket }, server.api.doc);
    assert.equal((await sock.call('GET', '/v1/keys')).status, 200);
    assert.equal((await server.api.call('GET', '/v1/keys')).status, 401);
  });

  it('expired and revoked keys are refused (401) and every failure is audited with source and key id', async () => {
    const store = await openSqliteStore(join(d.data, 'state.db'));
    const expired = await newKey('operator', { now: Date.now() - 60_000, expiresAt: Date.now() - 1000, createdBy: 'test' });
    await store.createKey(expired.record);
    await store.close();
    assert.equal((await server.api.call('GET', '/v1/executions', { key: expired.key })).status, 401);
    const made = await server.api.call('POST', '/v1/keys', { key: keys.admin, json: { role: 'operator', expires: '30d' } });
    assert.equal(made.status, 201);
    const k = made.json as { id: string; key: string; expires: string };
    assert.ok(Date.parse(k.expires) > Date.now() + 29 * 86_400_000);
    assert.equal((await server.api.call('GET', '/v1/executions', { key: k.key })).status, 200);
    assert.equal((await server.api.call('DELETE', `/v1/keys/${k.id}`, { key: keys.admin })).status, 200);
    assert.equal((await server.api.call('GET', '/v1/executions', { key: k.key })).status, 401);
    const r = await server.api.call('DELETE', `/v1/keys/${k.id}`, { key: keys.admin });
    assert.deepEqual([r.status, errCode(r)], [409, 'conflict']);
    const failed = (await auditEvents(d)).filter((e) => e.action === 'api.auth_failed').map((e) => e.payload);
    assert.ok(failed.some((p) => p['reason'] === 'expired_key' && p['keyId'] === expired.record.id && p['source'] === 'tcp:127.0.0.1'));
    assert.ok(failed.some((p) => p['reason'] === 'revoked_key' && p['keyId'] === k.id));
    assert.ok((await auditEvents(d)).some((e) => e.action === 'key.revoke' && e.payload['id'] === k.id));
  });

  it('bad input: malformed JSON, unknown fields, oversized bodies, unknown routes and ids, all with an error code', async () => {
    const cases: [string, string, Parameters<CheckedApi['call']>[2], number, string][] = [
      ['POST', '/v1/keys', { key: keys.admin, body: '{"role":', contentType: 'application/json' }, 400, 'invalid_request'],
      ['POST', '/v1/keys', { key: keys.admin, json: { role: 'admin', owner: 'me' } }, 400, 'invalid_request'],
      [
        'POST',
        '/v1/agents/nosuch/executions',
        { key: keys.operator, json: { args: ['a'], stdin: 'x'.repeat(3 << 20) } },
        413,
        'payload_too_large',
      ],
      ['POST', '/v1/agents/nosuch/executions', { key: keys.operator, json: { argv: [] } }, 400, 'invalid_request'],
      ['POST', '/v1/agents/nosuch/executions', { key: keys.operator, json: {} }, 404, 'not_found'],
      ['GET', `/v1/executions/${UUID}`, { key: keys.operator }, 404, 'not_found'],
      ['DELETE', `/v1/executions/${UUID}`, { key: keys.operator }, 404, 'not_found'],
      ['GET', '/v1/executions/../../etc/passwd', { key: keys.operator }, 404, 'not_found'],
      ['GET', '/v2/anything', { key: keys.operator }, 404, 'not_found'],
      ['PUT', '/v1/agents/nosuch/pool', { key: keys.operator, json: { warm: 1000 } }, 400, 'invalid_request'],
      ['POST', '/v1/agents', { key: keys.deployer, json: { manifest: 'x' } }, 415, 'unsupported_media_type'],
    ];
    for (const [method, path, o, status, code] of cases) {
      const r = await server.api.call(method, path, o);
      assert.deepEqual([r.status, errCode(r)], [status, code], `${method} ${path}: ${r.text.slice(0, 200)}`);
    }
    assert.deepEqual(
      (await server.api.call('GET', '/v1/executions', { key: keys.operator })).json,
      { executions: [] },
      'nothing half-created',
    );
  });

  it('a huge manifest part is refused (413) and nothing is deployed', async () => {
    const f = deployForm(agentManifest('huge') + `\n# ${'x'.repeat(300 << 10)}\n`, await codeArchive({ 'run.sh': 'true\n' }));
    const r = await server.api.call('POST', '/v1/agents', { key: keys.deployer, body: f.body, contentType: f.contentType });
    assert.equal(r.status, 413, r.text);
    assert.deepEqual((await server.api.call('GET', '/v1/agents', { key: keys.deployer })).json, { agents: [] });
  });

  it('aegis serve refuses plaintext on a non-loopback address (exit 1, server.config_invalid) and opens nothing', () => {
    const e = serverDirs('aegis-server-refuse');
    try {
      const r = spawnSync(process.execPath, [AEGIS_BIN, 'serve', '--listen', '0.0.0.0:0', '--data', e.data, '--state-dir', e.state], {
        env: e.env,
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /server\.config_invalid/);
      assert.equal(existsSync(e.data), false, 'no data folder made');
    } finally {
      removeDirs(e);
    }
  });

  it('aegis serve over TLS with --tls-cert/--tls-key (any address; here loopback)', async () => {
    const e = serverDirs('aegis-server-tls');
    const pki = makeServerPki(e.work, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
    const key = createKey(e, 'auditor');
    const s = await startServer(e, ['--tls-cert', pki.certFile, '--tls-key', pki.keyFile], { ca: pki.ca });
    try {
      assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.equal((await s.api.call('GET', '/v1/audit/events', { key })).status, 200);
      await assert.rejects(rawRequest({ url: s.url }, 'GET', '/healthz'), 'a client that does not trust the CA is refused');
    } finally {
      assert.equal(await s.stop(), 0);
      removeDirs(e);
    }
  });

  it('repeated failures from one source are throttled (429) and audited api.throttled', async () => {
    let status = 0;
    for (let i = 0; i < 12 && status !== 429; i++) status = (await server.api.call('GET', '/v1/agents', { key: 'ak_nope' })).status;
    assert.equal(status, 429);
    const r = await server.api.call('GET', '/v1/agents', { key: keys.admin });
    assert.deepEqual([r.status, errCode(r)], [429, 'throttled'], 'the source stays blocked, whatever key it sends');
    const events = await auditEvents(d);
    assert.ok(events.some((e) => e.action === 'api.throttled' && e.payload['source'] === 'tcp:127.0.0.1'));
    // The socket is another source: a local admin is not locked out by a TCP client's failures.
    assert.equal((await new CheckedApi({ socketPath: server.socket }, server.api.doc).call('GET', '/v1/agents')).status, 200);
    const m = await new CheckedApi({ socketPath: server.socket }, server.api.doc).call('GET', '/metrics');
    assert.match(m.text, /aegis_auth_failures_total\{reason="malformed_key"\} [1-9]/);
  });
});
