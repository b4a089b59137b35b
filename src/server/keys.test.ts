import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hashSecret, lifetimeMs, newKey, parseKey, verifySecret } from './keys.js';

describe('API keys', () => {
  it('a new key verifies against its stored hash, and nothing else does', async () => {
    const { record, key } = await newKey('operator', { now: 1, expiresAt: null, createdBy: 'test' });
    const parsed = parseKey(key);
    assert.ok(parsed !== undefined);
    assert.equal(parsed.id, record.id);
    assert.ok(!record.hash.includes(parsed.secret), 'the secret is not stored');
    assert.match(record.hash, /^scrypt\$16384\$8\$1\$/);
    assert.equal(await verifySecret(parsed.secret, record.hash), true);
    const other = `${parsed.secret.slice(0, -1)}${parsed.secret.endsWith('A') ? 'B' : 'A'}`;
    assert.equal(await verifySecret(other, record.hash), false);
  });

  it('a tampered stored hash fails closed (no throw, no huge work factor)', async () => {
    const h = await hashSecret('s');
    const parts = h.split('$');
    for (const bad of [
      '',
      'bcrypt$x',
      h.replace('scrypt$16384', 'scrypt$1073741824'),
      h.replace('scrypt$16384', 'scrypt$1000'),
      [...parts.slice(0, 5), 'AAAA'].join('$'),
      h.replace('$8$1$', '$8$99$'),
    ])
      assert.equal(await verifySecret('s', bad), false, bad);
  });

  it('parses only well-formed keys', () => {
    for (const bad of [
      '',
      'ak_1234.x',
      `ak_0123456789abcdef.${'a'.repeat(42)}`,
      `AK_0123456789abcdef.${'a'.repeat(43)}`,
      `ak_0123456789abcdef.${'a'.repeat(43)} `,
    ])
      assert.equal(parseKey(bad), undefined, bad);
    assert.deepEqual(parseKey(`ak_0123456789abcdef.${'a'.repeat(43)}`), { id: 'ak_0123456789abcdef', secret: 'a'.repeat(43) });
  });

  it('lifetimes', () => {
    assert.equal(lifetimeMs('30d'), 30 * 86_400_000);
    assert.equal(lifetimeMs('12h'), 12 * 3_600_000);
    assert.equal(lifetimeMs('15m'), 15 * 60_000);
  });
});
