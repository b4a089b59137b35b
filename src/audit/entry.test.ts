import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { canonicalJson } from './canonical-json.js';
import { encodeBatch, entryParts } from './entry-batch.js';
import { type EntryHeader, encodeEntry, parseEntry, parseSecretPart, secretJson } from './entry.js';
import { decryptPayload, deriveMasterKeys, payloadAad, subjectHash, unwrapDataKey, wrapDataKey } from './envelope.js';
import { AuditError } from './errors.js';
import { propertyRuns } from '../test-support/props.js';
import { hashLeaf } from './merkle/hash.js';
import { batchEntry, batchLeafHash } from './store/types.js';

const KEY_ID = 'd.2026-11-25.0a0b0c0d';

const header = fc.record(
  {
    id: fc.uuid(),
    time: fc.constant('2026-11-25T10:00:00.000Z'),
    actor: fc.record({ agent: fc.string(), execution: fc.string(), principal: fc.string() }, { requiredKeys: [] }),
    action: fc.constantFrom('run.start', 'net.connect', 'fs.write'),
    decision: fc.constantFrom('allow' as const, 'deny' as const, 'info' as const),
    reason: fc.string(),
    subjectHash: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b).toString('hex')),
  },
  { requiredKeys: ['id', 'time', 'actor', 'action', 'decision'] },
);

describe('entry encoding', () => {
  for (const [label, params] of propertyRuns(50)) {
    it(`the batch encoder writes exactly the canonical JSON of each entry, and hashes it as a leaf (${label})`, () => {
      fc.assert(
        fc.property(
          fc.array(header, { minLength: 1, maxLength: 8 }),
          fc.nat({ max: 1e9 }),
          fc.jsonValue(),
          // Key and nonces from the property's seed too, so that a failure replays exactly.
          fc.uint8Array({ minLength: 32, maxLength: 32 }),
          fc.uint8Array({ minLength: 12 * 8, maxLength: 12 * 8 }),
          (headers, start, payload, key, nonceBytes) => {
            const nonces = nonceBytes.subarray(0, 12 * headers.length);
            const items = headers.map((h) => ({
              ...entryParts(h as Omit<EntryHeader, 'index'>, h.subjectHash),
              secret: secretJson({ payload: { v: payload } }),
              keyId: KEY_ID,
            }));
            const b = encodeBatch(items, start, 'example.org/log', new Map([[KEY_ID, key]]), nonces);
            headers.forEach((h, i) => {
              const entry = batchEntry(b, i);
              const parsed = parseEntry(entry);
              const reference = encodeEntry({ ...(h as Omit<EntryHeader, 'index'>), index: start + i }, parsed.enc);
              assert.equal(Buffer.from(entry).toString(), Buffer.from(reference).toString());
              assert.deepEqual(Buffer.from(batchLeafHash(b, i)), Buffer.from(hashLeaf(entry)));
              const plain = decryptPayload(key, parsed.enc.nonce, parsed.enc.ciphertext, payloadAad('example.org/log', start + i));
              assert.equal(Buffer.from(plain).toString(), canonicalJson({ payload: { v: payload } }));
            });
          },
        ),
        params,
      );
    });
  }

  it('refuses to decrypt a ciphertext at another position or under another log origin', () => {
    const key = randomBytes(32);
    const items = [
      {
        ...entryParts({ id: 'x', time: 't', actor: {}, action: 'a.b', decision: 'info' }),
        secret: secretJson({ payload: {} }),
        keyId: KEY_ID,
      },
    ];
    const b = encodeBatch(items, 7, 'example.org/log', new Map([[KEY_ID, key]]), randomBytes(12));
    const p = parseEntry(batchEntry(b, 0));
    for (const aad of [payloadAad('example.org/log', 8), payloadAad('other/log', 7)]) {
      assert.throws(
        () => decryptPayload(key, p.enc.nonce, p.enc.ciphertext, aad),
        (e: unknown) => e instanceof AuditError && e.code === 'audit.decrypt_failed',
      );
    }
  });

  it('parses the secret part back, and refuses one without a payload object', () => {
    assert.deepEqual(parseSecretPart(Buffer.from(secretJson({ payload: { a: 1 }, subject: 's' }))), { payload: { a: 1 }, subject: 's' });
    assert.throws(
      () => parseSecretPart(Buffer.from('{"payload":3}')),
      (e: unknown) => e instanceof AuditError && e.code === 'audit.entry_malformed',
    );
  });
});

describe('parseEntry on hostile bytes', () => {
  for (const [what, text] of [
    ['not JSON', '{"v":1,'],
    ['not UTF-8', '\xff\xfe'],
    ['the wrong version', '{"v":2}'],
    ['a negative index', '{"v":1,"i":-1}'],
    ['a fractional index', '{"v":1,"i":1.5}'],
    ['no enc object', '{"v":1,"i":0,"id":"a","time":"t","actor":{},"action":"a","decision":"allow"}'],
    ['a bad decision', '{"v":1,"i":0,"id":"a","time":"t","actor":{},"action":"a","decision":"maybe","enc":{}}'],
    [
      'non-base64 ciphertext',
      '{"v":1,"i":0,"id":"a","time":"t","actor":{},"action":"a","decision":"allow","enc":{"k":"k","n":"AAAA","c":"!!"}}',
    ],
    ['an actor that is a string', '{"v":1,"i":0,"id":"a","time":"t","actor":"x","action":"a","decision":"allow","enc":{}}'],
  ] as const) {
    it(`fails with audit.entry_malformed on ${what}`, () => {
      assert.throws(
        () => parseEntry(Buffer.from(text, 'latin1')),
        (e: unknown) => e instanceof AuditError && e.code === 'audit.entry_malformed',
      );
    });
  }
  for (const [label, params] of propertyRuns(100)) {
    it(`never throws anything but audit.entry_malformed on random bytes (${label})`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
          try {
            parseEntry(bytes);
          } catch (e) {
            assert.ok(e instanceof AuditError && e.code === 'audit.entry_malformed');
          }
        }),
        params,
      );
    });
  }
});

describe('envelope keys', () => {
  it('wraps and unwraps data keys; a wrapped key moved to another id does not unwrap', () => {
    const mk = deriveMasterKeys(randomBytes(32));
    const dk = randomBytes(32);
    const wrapped = wrapDataKey(mk, 'd.2026-01-01.00000001', dk, randomBytes(12));
    assert.deepEqual(Buffer.from(unwrapDataKey(mk, 'd.2026-01-01.00000001', wrapped)), dk);
    assert.throws(
      () => unwrapDataKey(mk, 'd.2026-01-02.00000001', wrapped),
      (e: unknown) => e instanceof AuditError && e.code === 'audit.key_invalid',
    );
  });
  it('hashes subjects with a key: same subject, same hash; other master key, other hash', () => {
    const a = deriveMasterKeys(randomBytes(32));
    const b = deriveMasterKeys(randomBytes(32));
    assert.equal(subjectHash(a, 'user:1'), subjectHash(a, 'user:1'));
    assert.notEqual(subjectHash(a, 'user:1'), subjectHash(b, 'user:1'));
    assert.match(subjectHash(a, 'user:1'), /^[0-9a-f]{32}$/u);
  });
});

describe('canonical JSON', () => {
  it('sorts keys by UTF-16 code units and drops undefined members', () => {
    assert.equal(
      canonicalJson({ b: 1, a: [1, 'x', null], '\u00e9': true, B: undefined, A: { z: 0, y: -1.5 } }),
      '{"A":{"y":-1.5,"z":0},"a":[1,"x",null],"b":1,"\u00e9":true}',
    );
  });
  for (const [what, v] of [
    ['NaN', { n: Number.NaN }],
    ['Infinity', [Infinity]],
    ['a Date', { d: new Date(0) }],
    ['a bigint', { n: 1n }],
    ['a function', { f: () => 1 }],
  ] as const) {
    it(`refuses ${what}`, () =>
      assert.throws(
        () => canonicalJson(v),
        (e: unknown) => e instanceof AuditError && e.code === 'audit.json_invalid',
      ));
  }
  it('refuses a cycle', () => {
    const o: Record<string, unknown> = {};
    o['self'] = o;
    assert.throws(
      () => canonicalJson(o),
      (e: unknown) => e instanceof AuditError && e.code === 'audit.json_invalid',
    );
  });
});
