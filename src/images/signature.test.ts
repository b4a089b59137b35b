import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  checkSignatures,
  keyIdOf,
  parsePayload,
  parseSignatureRecord,
  signaturePayload,
  signImageDigest,
  SIGNATURE_TYPE,
} from './signature.js';
import type { Digest } from './ref.js';

const D1 = `sha256:${'a'.repeat(64)}` as Digest;
const D2 = `sha256:${'b'.repeat(64)}` as Digest;
const pair = () => generateKeyPairSync('ed25519');

describe('image signatures', () => {
  it('the payload is cosign simple signing, with the digest and the name', () => {
    const p = JSON.parse(signaturePayload('python', D1).toString()) as { critical: Record<string, unknown>; optional: unknown };
    assert.deepEqual(p, {
      critical: { identity: { 'docker-reference': 'python' }, image: { 'docker-manifest-digest': D1 }, type: SIGNATURE_TYPE },
      optional: null,
    });
    assert.deepEqual(parsePayload(signaturePayload('python', D1)), { name: 'python', digest: D1 });
  });

  it('a signature by a trusted key over the right digest is accepted, and names its key', () => {
    const k = pair();
    const r = signImageDigest('python', D1, k.privateKey);
    assert.equal(r.keyId, keyIdOf(k.publicKey));
    assert.deepEqual(checkSignatures(D1, [r], [k.publicKey]), { ok: true, keyId: r.keyId, name: 'python' });
  });

  it('refused: no signature, only untrusted keys, another image, a changed payload or signature', () => {
    const k = pair();
    const other = pair();
    const r = signImageDigest('python', D1, k.privateKey);
    assert.deepEqual(checkSignatures(D1, [], [k.publicKey]), { ok: false, reason: 'no_signature' });
    assert.deepEqual(checkSignatures(D1, [r], [other.publicKey]), { ok: false, reason: 'no_trusted_key' });
    assert.deepEqual(checkSignatures(D2, [r], [k.publicKey]), { ok: false, reason: 'wrong_digest' });
    // The payload swapped for another image's, the signature kept: the signature no longer verifies.
    const swapped = { ...r, payload: signaturePayload('python', D2).toString('base64') };
    assert.deepEqual(checkSignatures(D2, [swapped], [k.publicKey]), { ok: false, reason: 'bad_signature' });
    const flipped = Buffer.from(r.signature, 'base64');
    flipped[0] = flipped[0]! ^ 1;
    assert.deepEqual(checkSignatures(D1, [{ ...r, signature: flipped.toString('base64') }], [k.publicKey]), {
      ok: false,
      reason: 'bad_signature',
    });
    // A record claiming a trusted key's id, signed by another key.
    const forged = { ...signImageDigest('python', D1, other.privateKey), keyId: r.keyId };
    assert.deepEqual(checkSignatures(D1, [forged], [k.publicKey]), { ok: false, reason: 'bad_signature' });
  });

  it('a valid signature among bad ones is enough; the order does not matter', () => {
    const k = pair();
    const good = signImageDigest('python', D1, k.privateKey);
    const bad = { ...good, signature: Buffer.alloc(64).toString('base64') };
    assert.equal(checkSignatures(D1, [bad, good], [k.publicKey]).ok, true);
    assert.equal(checkSignatures(D1, [good, bad], [k.publicKey]).ok, true);
  });

  it('a validly signed payload of another type is not an image signature', () => {
    const k = pair();
    const payload = Buffer.from(
      JSON.stringify({ critical: { identity: { 'docker-reference': 'x' }, image: { 'docker-manifest-digest': D1 }, type: 'other' } }),
    );
    const r = {
      v: 1 as const,
      keyId: keyIdOf(k.publicKey),
      payload: payload.toString('base64'),
      signature: sign(null, payload, k.privateKey).toString('base64'),
    };
    assert.deepEqual(checkSignatures(D1, [r], [k.publicKey]), { ok: false, reason: 'wrong_digest' });
  });

  it('only Ed25519 keys sign', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    assert.throws(() => signImageDigest('x', D1, ec.privateKey), /Ed25519/);
  });

  it('stored records are parsed defensively: anything but the exact shape is not a record', () => {
    const k = pair();
    const r = signImageDigest('python', D1, k.privateKey);
    assert.deepEqual(parseSignatureRecord(JSON.stringify(r)), r);
    for (const bad of [
      '',
      'null',
      '[]',
      '{}',
      JSON.stringify({ ...r, v: 2 }),
      JSON.stringify({ ...r, extra: 1 }),
      JSON.stringify({ ...r, keyId: 'k' }),
      JSON.stringify({ ...r, payload: '!!' }),
      'x'.repeat(70_000),
    ])
      assert.equal(parseSignatureRecord(bad), null, bad.slice(0, 40));
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        const p = parseSignatureRecord(s);
        assert.ok(p === null || (p.v === 1 && typeof p.keyId === 'string'));
      }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        assert.equal(checkSignatures(D1, [{ ...r, payload: Buffer.from(bytes).toString('base64') }], [k.publicKey]).ok, false);
      }),
    );
  });
});
