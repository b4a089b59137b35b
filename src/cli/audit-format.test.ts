import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DecryptedEntry } from '../audit/index.js';
import { payloadSummary, printable, readableLine } from './audit-format.js';

const event = (over: Record<string, unknown> = {}) =>
  ({
    index: 3,
    event: {
      v: 1,
      id: '0193a0f2-0000-7000-8000-000000000000',
      time: '2026-11-30T04:53:49.123Z',
      actor: { agent: 'research-agent', execution: 'run-1' },
      action: 'net.connect',
      decision: 'deny',
      reason: 'net.denied.not_in_allowlist',
      payload: { host: 'evil.example', port: 443 },
      ...over,
    },
  }) as DecryptedEntry;

describe('readableLine', () => {
  it('prints time, index, action, decision, actor, reason and a payload summary', () => {
    assert.equal(
      readableLine({ index: 3, decoded: event() }),
      '2026-11-30T04:53:49.123Z #3 net.connect deny research-agent/run-1 net.denied.not_in_allowlist host=evil.example port=443',
    );
  });
  it('marks absent fields, principals, erased payloads and undecodable entries', () => {
    assert.equal(
      readableLine({
        index: 4,
        decoded: { ...event({ actor: { principal: 'ops' }, reason: undefined, payload: null }), keyDestroyed: true } as DecryptedEntry,
      }),
      '2026-11-30T04:53:49.123Z #4 net.connect deny principal=ops - (payload erased)',
    );
    assert.equal(readableLine({ index: 9, error: 'entry 9: bad bytes' }), '#9 ERROR entry 9: bad bytes');
  });
  it('summarizes nested values and cuts long ones', () => {
    assert.equal(
      payloadSummary({ a: { b: 1 }, l: [1, 2, 3], s: 'with space', n: null, t: true }),
      'a={…} l=[3] s="with space" n=null t=true',
    );
    const long = payloadSummary({ url: `https://x.example/${'a'.repeat(500)}` });
    assert.ok(long.length < 80, long);
    assert.match(long, /…$/u);
    const many = payloadSummary(Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, 'v'.repeat(20)])));
    assert.ok(many.length <= 170 && many.endsWith(' …'), many);
  });
  describe('when a stored field is hostile (terminal escapes, fake newlines, bidi overrides)', () => {
    it('escapes them so one event stays one inert line', () => {
      const line = readableLine({
        index: 1,
        decoded: event({
          action: 'net.dns\n2026-01-01T00:00:00Z #2 run.exit allow',
          payload: { host: '\u001b[2J\u001b[31mevil\u202e.example', u: 'a\u2028b' },
        }),
      });
      assert.equal(line.split('\n').length, 1);
      assert.ok(!/[\p{Cc}\u202e\u2028]/u.test(line), line);
      assert.match(line, /\\u\{1b\}\[2J/u);
      assert.equal(printable('ok\u0007'), 'ok\\u{7}');
    });
  });
});
