import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import { hasCode } from '../test-support/errors.js';
import { Authenticator } from './auth.js';
import { ServerError } from './errors.js';
import { newKey } from './keys.js';
import { openSqliteStore } from './store/sqlite.js';
import type { Store } from './store/types.js';

describe('Authenticator', () => {
  let dir = '';
  let store: Store;
  let now = 1_000_000;
  const events: AuditEventInput[] = [];
  const auth = (): Authenticator =>
    new Authenticator({
      store,
      audit: { append: (e) => void events.push(e) },
      clock: () => now,
      socketGid: 997,
      throttle: { windowMs: 1000, maxFailures: 2, blockMs: 5000 },
    });
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegis-auth-'));
    store = await openSqliteStore(join(dir, 'state.db'));
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('maps socket peers: root is admin, a member of the socket group operator+deployer over its own things, others refused', async () => {
    const a = auth();
    const req = (uid: number, gids: number[]) => ({
      source: `unix:uid:${uid}`,
      authorization: undefined,
      peer: { pid: 1, uid, gids },
      route: 'agents.list',
    });
    assert.deepEqual(await a.authenticate(req(0, [0])), { id: 'local:0', roles: ['admin'] });
    assert.deepEqual(await a.authenticate(req(1234, [1234, 997])), {
      id: 'local:1234',
      roles: ['operator', 'deployer'],
      owner: 'local:1234',
    });
    await assert.rejects(a.authenticate(req(4321, [4321])), hasCode(ServerError, 'server.unauthorized'));
    assert.deepEqual(events.at(-1)?.payload, { source: 'unix:uid:4321', route: 'agents.list', reason: 'local_user_refused' });
  });

  it('a key on the socket is authenticated by the key alone (a bad key is not rescued by the peer)', async () => {
    const a = auth();
    const { record, key } = await newKey('auditor', { now, expiresAt: null, createdBy: 't' });
    await store.createKey(record);
    const peer = { pid: 1, uid: 0, gids: [0] };
    assert.deepEqual(await a.authenticate({ source: 'unix:uid:0', authorization: `Bearer ${key}`, peer, route: 'audit.events' }), {
      id: record.id,
      roles: ['auditor'],
    });
    await assert.rejects(
      a.authenticate({ source: 'unix:uid:0', authorization: `Bearer ${key}x`, peer, route: 'audit.events' }),
      hasCode(ServerError, 'server.unauthorized'),
    );
  });

  it('expiry is read on every request: a key that verified before is refused once it expires', async () => {
    const a = auth();
    const { record, key } = await newKey('operator', { now, expiresAt: now + 100, createdBy: 't' });
    await store.createKey(record);
    const req = { source: 'tcp:10.0.0.9', authorization: `Bearer ${key}`, peer: undefined, route: 'executions.list' };
    assert.equal((await a.authenticate(req)).id, record.id);
    now += 200;
    await assert.rejects(a.authenticate(req), hasCode(ServerError, 'server.unauthorized'));
    assert.equal(events.at(-1)?.reason, 'expired_key');
  });

  it('throttles per source within the window, and lets the source back after the block', async () => {
    const a = auth();
    const bad = { source: 'tcp:10.0.0.7', authorization: 'Bearer nope', peer: undefined, route: 'agents.list' };
    for (let i = 0; i < 2; i++) await assert.rejects(a.authenticate(bad), hasCode(ServerError, 'server.unauthorized'));
    await assert.rejects(a.authenticate(bad), hasCode(ServerError, 'server.throttled'));
    await assert.rejects(
      a.authenticate({ ...bad, source: 'tcp:10.0.0.8' }),
      hasCode(ServerError, 'server.unauthorized'),
      'another source is not blocked',
    );
    now += 5001;
    await assert.rejects(a.authenticate(bad), hasCode(ServerError, 'server.unauthorized'), 'unblocked after blockMs');
    assert.equal(events.filter((e) => e.action === 'api.throttled').length, 1);
  });
});
