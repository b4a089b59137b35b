import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileEgress } from '../policy/net.js';
import { parseAllowEntry } from '../policy/host.js';
import { ARGUMENTS_MAX_BYTES, boundArguments, hostsInArguments, hostsOutsideAllowlist } from './events.js';

describe('boundArguments', () => {
  it('keeps small arguments whole, with their size', () => {
    assert.deepEqual(boundArguments({ q: 'héllo' }), { arguments: '{"q":"héllo"}', argumentsBytes: 14, argumentsTruncated: false });
  });
  it('cuts large ones at the limit on a character boundary, and says how large they were', () => {
    const b = boundArguments({ body: 'é'.repeat(10_000) });
    assert.equal(b.argumentsTruncated, true);
    assert.equal(b.argumentsBytes, Buffer.byteLength(JSON.stringify({ body: 'é'.repeat(10_000) })));
    assert.ok(Buffer.byteLength(b.arguments) <= ARGUMENTS_MAX_BYTES);
    assert.ok(!b.arguments.includes('\ufffd'));
  });
  it('records absent arguments as {}', () => {
    assert.equal(boundArguments(undefined).arguments, '{}');
  });
});

describe('hostsInArguments', () => {
  it('finds URL hosts and e-mail domains anywhere in the arguments, lower-cased, once each', () => {
    assert.deepEqual(
      hostsInArguments({ to: ['Boss@Attacker.COM'], body: 'see https://docs.example.org/x and ftp://user@files.example.net:21/' }),
      ['attacker.com', 'docs.example.org', 'files.example.net'],
    );
  });
  it('finds nothing in plain text, numbers and nested non-strings', () => {
    assert.deepEqual(hostsInArguments({ a: 1, b: [true, null], c: 'no hosts here' }), []);
  });
  it('is bounded: hostile depth and size do not make it walk forever', () => {
    let deep: unknown = 'https://deep.example.com/';
    for (let i = 0; i < 1000; i++) deep = [deep];
    assert.deepEqual(hostsInArguments(deep), []);
    const many = Array.from({ length: 500 }, (_, i) => `https://h${i}.example.com/`).join(' ');
    assert.equal(hostsInArguments({ many }).length, 32);
  });
});

describe('hostsOutsideAllowlist', () => {
  it("keeps the hosts the agent's own egress policy would refuse", () => {
    const r = parseAllowEntry('*.example.com');
    assert.ok(r.ok);
    const egress = compileEgress({ rules: [r.rule], rateLimit: { perSecond: 1, burst: 1 }, byteQuota: null });
    assert.deepEqual(hostsOutsideAllowlist(['api.example.com', 'attacker.com', '[::1]'], egress), ['attacker.com', '[::1]']);
  });
});
