import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import { validForRun } from './core.js';
import { SecretsError } from './errors.js';
import { SecretStore } from './store.js';

const root = mkdtempSync(join(tmpdir(), 'aegis-secrets-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): SecretStore => SecretStore.at(join(root, `s${n++}`, 'secrets'));

const VALUE = 'sk-live-UNIQUEVALUE-4f1c2b';
const H = 3_600_000;
const t0 = Date.UTC(2026, 10, 1);
const base = { hosts: ['api.openai.com'], header: 'authorization', value: Buffer.from(VALUE), now: t0, expiresAt: null, by: 'op' };

describe('SecretStore', () => {
  it('round trip: set, list (metadata only), reveal', async () => {
    const store = fresh();
    assert.deepEqual(await store.list(), [], 'no store yet: empty, nothing created');
    assert.deepEqual(await store.set({ ...base, name: 'openai' }), { name: 'openai', version: 1, dropped: [] });
    const [s] = await store.list();
    assert.deepEqual(s, {
      name: 'openai',
      hosts: ['api.openai.com'],
      header: 'authorization',
      createdAt: t0,
      createdBy: 'op',
      versions: [{ version: 1, createdAt: t0, expiresAt: null, retiredAt: null }],
    });
    assert.equal(Buffer.from(await store.reveal('openai', 1)).toString(), VALUE);
  });

  it('encrypts at rest: neither the value nor its base64 is in any file; 0700 directory, 0600 files', async () => {
    const store = fresh();
    await store.set({ ...base, name: 'openai' });
    const file = readFileSync(join(store.dir, 'secrets.json'), 'utf8');
    assert.ok(!file.includes(VALUE) && !file.includes(Buffer.from(VALUE).toString('base64')), 'value in the clear');
    assert.ok(!readFileSync(join(store.dir, 'master.key'), 'utf8').includes(VALUE));
    assert.equal(statSync(store.dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(store.dir, 'secrets.json')).mode & 0o777, 0o600);
    assert.equal(statSync(join(store.dir, 'master.key')).mode & 0o777, 0o600);
  });

  it('refuses a store that others can read, and one edited or moved (ciphertext bound to name and version)', async () => {
    const store = fresh();
    await store.set({ ...base, name: 'openai' });
    await store.set({ ...base, name: 'other', value: Buffer.from('another-value') });
    const path = join(store.dir, 'secrets.json');
    chmodSync(path, 0o644);
    await assert.rejects(store.list(), hasCode(SecretsError, 'secrets.store_insecure'));
    chmodSync(path, 0o600);
    const data = JSON.parse(readFileSync(path, 'utf8')) as { secrets: Record<string, { versions: Array<Record<string, unknown>> }> };
    // Swap the two secrets' ciphertexts: each decrypts only as itself.
    const a = data.secrets['openai']!.versions[0]!;
    const b = data.secrets['other']!.versions[0]!;
    [a['ciphertext'], b['ciphertext'], a['nonce'], b['nonce'], a['wrappedKey'], b['wrappedKey']] = [
      b['ciphertext'],
      a['ciphertext'],
      b['nonce'],
      a['nonce'],
      b['wrappedKey'],
      a['wrappedKey'],
    ];
    writeFileSync(path, JSON.stringify(data), { mode: 0o600 });
    await assert.rejects(store.reveal('openai', 1), hasCode(SecretsError, 'secrets.store_corrupt'));
    writeFileSync(path, '{"format":"aegis-secrets/v1","secrets":{"x":{"name":"y"}}}', { mode: 0o600 });
    await assert.rejects(store.list(), hasCode(SecretsError, 'secrets.store_corrupt'));
    writeFileSync(path, 'not json', { mode: 0o600 });
    await assert.rejects(store.list(), hasCode(SecretsError, 'secrets.store_corrupt'));
  });

  it('set of an existing name, rotate or rm of an unknown one are refused', async () => {
    const store = fresh();
    await store.set({ ...base, name: 'openai' });
    await assert.rejects(store.set({ ...base, name: 'openai' }), hasCode(SecretsError, 'secrets.exists'));
    await assert.rejects(
      store.rotate({ name: 'nope', value: Buffer.from('v'), now: t0, expiresAt: null, overlapMs: H }),
      hasCode(SecretsError, 'secrets.not_found'),
    );
    await assert.rejects(store.rm('nope'), hasCode(SecretsError, 'secrets.not_found'));
  });

  it('rotation: a new current version; the old one kept for the overlap, dropped by a later write', async () => {
    const store = fresh();
    await store.set({ ...base, name: 'openai' });
    const r = await store.rotate({
      name: 'openai',
      value: Buffer.from('sk-second'),
      now: t0 + 10 * H,
      expiresAt: t0 + 40 * H,
      overlapMs: H,
    });
    assert.deepEqual(r, { name: 'openai', version: 2, dropped: [] });
    let s = (await store.get('openai'))!;
    assert.deepEqual(
      s.versions.map((v) => [v.version, v.retiredAt, v.expiresAt]),
      [
        [1, t0 + 10 * H, null],
        [2, null, t0 + 40 * H],
      ],
    );
    assert.equal(validForRun(s, 1, t0 + 9 * H, t0 + 10 * H + 30 * 60_000, H), true, 'running execution inside the overlap');
    assert.equal(validForRun(s, 1, t0 + 11 * H, t0 + 11 * H, H), false, 'a new execution');
    assert.equal(Buffer.from(await store.reveal('openai', 1)).toString(), VALUE);
    assert.equal(Buffer.from(await store.reveal('openai', 2)).toString(), 'sk-second');
    const r3 = await store.rotate({ name: 'openai', value: Buffer.from('sk-third'), now: t0 + 12 * H, expiresAt: null, overlapMs: H });
    assert.deepEqual(r3, { name: 'openai', version: 3, dropped: [1] });
    s = (await store.get('openai'))!;
    assert.deepEqual(
      s.versions.map((v) => v.version),
      [2, 3],
    );
    await assert.rejects(store.reveal('openai', 1), hasCode(SecretsError, 'secrets.not_found'));
  });

  it('concurrent writers are serialized by the lock: no update is lost', async () => {
    const store = fresh();
    const names = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6'];
    await Promise.all(names.map((name) => SecretStore.at(store.dir).set({ ...base, name })));
    assert.deepEqual(
      (await store.list()).map((s) => s.name),
      names,
    );
  });

  it('a value does not decrypt under another master key', async () => {
    const store = fresh();
    await store.set({ ...base, name: 'openai' });
    writeFileSync(join(store.dir, 'master.key'), `${Buffer.alloc(32, 7).toString('base64')}\n`, { mode: 0o600 });
    await assert.rejects(store.reveal('openai', 1), hasCode(SecretsError, 'secrets.store_corrupt'));
  });

  it('rm removes the secret and its keys', async () => {
    const store = fresh();
    await store.set({ ...base, name: 'openai' });
    await store.rotate({ name: 'openai', value: Buffer.from('sk-second'), now: t0 + H, expiresAt: null, overlapMs: H });
    assert.deepEqual(await store.rm('openai'), { name: 'openai', version: 2, dropped: [1, 2] });
    assert.deepEqual(await store.list(), []);
    assert.ok(!readFileSync(join(store.dir, 'secrets.json'), 'utf8').includes('openai'));
  });
});
