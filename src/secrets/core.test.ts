import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAllowEntry } from '../policy/host.js';
import type { NetworkPolicy } from '../policy/types.js';
import { hasCode } from '../test-support/errors.js';
import {
  boundHosts,
  checkHeader,
  checkName,
  checkValue,
  isExpired,
  parseDuration,
  parseHosts,
  placeholderFrom,
  prunable,
  type SecretMeta,
  validForRun,
} from './core.js';
import { SecretsError } from './errors.js';

function network(...allow: string[]): NetworkPolicy {
  return {
    rules: allow.map((a) => {
      const r = parseAllowEntry(a);
      assert.ok(r.ok, a);
      return r.rule;
    }),
    rateLimit: { perSecond: 20, burst: 40 },
    byteQuota: null,
  };
}

const H = 3_600_000;

describe('secret names, hosts, headers, values, durations', () => {
  it('names follow the manifest grammar of secret:<name>', () => {
    for (const ok of ['openai', 'prod-db.v2', 'a_b', '0x']) assert.equal(checkName(ok), ok);
    for (const bad of ['', 'OpenAI', '-x', '.x', 'a/b', 'a b', 'x'.repeat(129), '../x'])
      assert.throws(() => checkName(bad), hasCode(SecretsError, 'secrets.name_invalid'), bad);
  });
  it('hosts are normalized by the allowlist parser, sorted and deduplicated', () => {
    assert.deepEqual(parseHosts(' API.OpenAI.com. , *.googleapis.com,api.openai.com'), ['*.googleapis.com', 'api.openai.com']);
  });
  it('refuses addresses, ports, bare wildcards, public suffixes and empty lists', () => {
    for (const bad of ['', ' , ', '10.0.0.1', '10.0.0.0/8', '[::1]', 'api.openai.com:443', 'a.example:*', '*', '*.com', 'http://x.example'])
      assert.throws(() => parseHosts(bad), hasCode(SecretsError, 'secrets.hosts_invalid'), bad);
  });
  it('headers are RFC 9110 tokens, lower-cased, never framing fields', () => {
    assert.equal(checkHeader('Authorization'), 'authorization');
    assert.equal(checkHeader('x-api-key'), 'x-api-key');
    for (const bad of ['', 'Host', 'Content-Length', 'transfer-encoding', 'a b', 'a:b', 'x\r\ny'])
      assert.throws(() => checkHeader(bad), hasCode(SecretsError, 'secrets.header_invalid'), bad);
  });
  it('values: one trailing newline dropped; empty, oversized and multi-line values refused', () => {
    assert.equal(Buffer.from(checkValue(Buffer.from('sk-123\n'))).toString(), 'sk-123');
    assert.equal(Buffer.from(checkValue(Buffer.from('sk-123\r\n'))).toString(), 'sk-123');
    assert.equal(Buffer.from(checkValue(Buffer.from('sk-123'))).toString(), 'sk-123');
    for (const bad of ['', '\n', 'a\nb', 'a\rb', 'a\0b', 'x'.repeat(65_537)])
      assert.throws(() => checkValue(Buffer.from(bad)), hasCode(SecretsError, 'secrets.value_invalid'), JSON.stringify(bad.slice(0, 8)));
  });
  it('durations: s, m, h, d; 0 only where allowed', () => {
    assert.equal(parseDuration('30d', 'x'), 30 * 24 * H);
    assert.equal(parseDuration('90s', 'x'), 90_000);
    assert.equal(parseDuration('0', 'x', true), 0);
    for (const bad of ['0', '0s', '-1d', '1w', '1.5h', 'd', '99999999d', ' 1d'])
      assert.throws(() => parseDuration(bad, 'x'), hasCode(SecretsError, 'secrets.duration_invalid'), bad);
  });
  it('placeholders: the prefix and 32 hex digits', () => {
    assert.equal(placeholderFrom(new Uint8Array(16).fill(0xab)), `aegis-ph-${'ab'.repeat(16)}`);
    assert.throws(() => placeholderFrom(new Uint8Array(8)), RangeError);
  });
});

describe('host binding against the manifest allowlist', () => {
  it('an exact host binds when the allowlist permits it (exactly or by a wildcard)', () => {
    assert.deepEqual(boundHosts(['api.openai.com'], network('api.openai.com')), ['api.openai.com']);
    assert.deepEqual(boundHosts(['api.openai.com'], network('*.openai.com')), ['api.openai.com']);
    assert.deepEqual(boundHosts(['api.openai.com'], network('openai.com', 'api.openai.com.evil.example')), []);
  });
  it('a wildcard binds when it shares names with an entry: an entry inside it, or a wildcard around or inside it', () => {
    assert.deepEqual(boundHosts(['*.googleapis.com'], network('storage.googleapis.com')), ['*.googleapis.com']);
    assert.deepEqual(boundHosts(['*.googleapis.com'], network('*.googleapis.com')), ['*.googleapis.com']);
    assert.deepEqual(boundHosts(['*.storage.googleapis.com'], network('*.googleapis.com')), ['*.storage.googleapis.com']);
    assert.deepEqual(boundHosts(['*.googleapis.com'], network('*.eu.googleapis.com')), ['*.googleapis.com']);
    // *.googleapis.com never matches googleapis.com itself, and a look-alike suffix is no match.
    assert.deepEqual(boundHosts(['*.googleapis.com'], network('googleapis.com', 'xgoogleapis.com', '*.notgoogleapis.com')), []);
  });
  it('address entries and an empty allowlist bind nothing; only the bound hosts are returned', () => {
    assert.deepEqual(boundHosts(['api.openai.com'], network('10.0.0.0/8', '[2001:db8::]/32')), []);
    assert.deepEqual(boundHosts(['api.openai.com'], network()), []);
    assert.deepEqual(boundHosts(['a.example.com', 'b.example.com'], network('b.example.com')), ['b.example.com']);
  });
});

describe('versions, expiry and the rotation overlap (clock passed in)', () => {
  const t0 = Date.UTC(2026, 10, 1);
  const s: SecretMeta = {
    name: 'openai',
    hosts: ['api.openai.com'],
    header: null,
    createdAt: t0,
    versions: [
      { version: 1, createdAt: t0, expiresAt: null, retiredAt: t0 + 10 * H },
      { version: 2, createdAt: t0 + 10 * H, expiresAt: t0 + 20 * H, retiredAt: null },
    ],
  };
  const overlap = H;
  it('the current version is valid for any run until it expires', () => {
    assert.equal(validForRun(s, 2, t0 + 11 * H, t0 + 12 * H, overlap), true);
    assert.equal(isExpired(s.versions[1]!, t0 + 20 * H - 1), false);
    assert.equal(isExpired(s.versions[1]!, t0 + 20 * H), true);
    assert.equal(validForRun(s, 2, t0 + 11 * H, t0 + 20 * H, overlap), false);
  });
  it('a rotated-out version is valid only for runs started before the rotation, within the overlap', () => {
    assert.equal(validForRun(s, 1, t0 + 9 * H, t0 + 10 * H + overlap - 1, overlap), true);
    assert.equal(validForRun(s, 1, t0 + 9 * H, t0 + 10 * H + overlap, overlap), false, 'overlap over');
    assert.equal(validForRun(s, 1, t0 + 10 * H, t0 + 10 * H + 1, overlap), false, 'a run started at or after the rotation');
    assert.equal(validForRun(s, 1, t0 + 9 * H, t0 + 10 * H + 1, 0), false, 'no overlap configured');
    assert.equal(validForRun(s, 3, t0, t0, overlap), false, 'an unknown version');
  });
  it('prunes rotated-out versions past the overlap, never the current one', () => {
    assert.equal(prunable(s.versions[0]!, t0 + 10 * H + overlap - 1, overlap), false);
    assert.equal(prunable(s.versions[0]!, t0 + 10 * H + overlap, overlap), true);
    assert.equal(prunable(s.versions[1]!, t0 + 100 * H, overlap), false);
  });
});
