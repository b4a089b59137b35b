import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { propertyRuns } from '../test-support/props.js';
import { parseAllowEntry } from './host.js';
import { compileEgress } from './net.js';
import type { NetRule, NetworkPolicy } from './types.js';

function network(entries: string[]): NetworkPolicy {
  const rules: NetRule[] = entries.map((e) => {
    const r = parseAllowEntry(e);
    if (!r.ok) throw new Error(`${e}: ${r.message}`);
    return r.rule;
  });
  return { rules, rateLimit: { perSecond: 20, burst: 40 }, byteQuota: null };
}

const m = compileEgress(
  network([
    'api.openai.com',
    '*.googleapis.com',
    'db.internal:5432',
    'any.example.org:*',
    '10.1.2.0/24:5432',
    '203.0.113.0/24',
    '[2001:db8::]/32',
  ]),
);
const allow = (host: string, port = 443) => assert.equal(m.decide(host, port).allow, true, `${host}:${port} should be allowed`);
const deny = (host: string, port: number, reason: string) => {
  const d = m.decide(host, port);
  assert.equal(d.allow, false, `${host}:${port} should be denied`);
  assert.equal(!d.allow && d.reason, reason, `${host}:${port}`);
};

describe('compileEgress: host names', () => {
  it('matches exact names after normalization', () => {
    allow('api.openai.com');
    allow('API.OPENAI.COM.');
    allow('ａpi.openai.com');
    allow('api.openai.com', 80);
  });
  it('matches wildcards on one or more labels, never the bare domain or look-alikes', () => {
    allow('storage.googleapis.com');
    allow('a.b.c.googleapis.com');
    deny('googleapis.com', 443, 'net.denied.not_in_allowlist');
    deny('evilgoogleapis.com', 443, 'net.denied.not_in_allowlist');
    deny('googleapis.com.attacker.net', 443, 'net.denied.not_in_allowlist');
    deny('storage.googleapis.com.attacker.net', 443, 'net.denied.not_in_allowlist');
    deny('api.openai.com.attacker.net', 443, 'net.denied.not_in_allowlist');
    deny('xapi.openai.com', 443, 'net.denied.not_in_allowlist');
    deny('\u0430pi.openai.com', 443, 'net.denied.not_in_allowlist');
  });
  it('opens only 80 and 443 without a port, the named port with one, any with *', () => {
    deny('api.openai.com', 8443, 'net.denied.port');
    allow('db.internal', 5432);
    deny('db.internal', 443, 'net.denied.port');
    allow('any.example.org', 22);
    deny('api.openai.com', 0, 'net.denied.invalid_port');
    deny('api.openai.com', 65536, 'net.denied.invalid_port');
  });
  it('treats malformed names as invalid', () => {
    deny('api.openai.com/evil', 443, 'net.denied.invalid_host');
    deny('attacker.com@api.openai.com', 443, 'net.denied.invalid_host');
    deny('api.openai.com%00', 443, 'net.denied.invalid_host');
    deny('', 443, 'net.denied.invalid_host');
  });
});

describe('compileEgress: addresses', () => {
  it('never lets a host name match an IP and vice versa', () => {
    deny('1.2.3.4', 443, 'net.denied.ip_literal');
    deny('[2606:4700::1]', 443, 'net.denied.ip_literal');
  });
  it('allows addresses only through CIDR entries written as such', () => {
    allow('203.0.113.9');
    allow('10.1.2.200', 5432);
    deny('10.1.2.200', 443, 'net.denied.port');
    allow('[2001:db8::7]');
  });
  it('recognizes disguised loopback, metadata and private addresses', () => {
    for (const h of [
      '127.0.0.1',
      '2130706433',
      '0x7f.1',
      '127.1',
      '[::1]',
      '[::ffff:127.0.0.1]',
      '169.254.169.254',
      '0xa9fea9fe',
      '169.254.43518',
      '10.9.9.9',
      '192.168.1.1',
      '[fd00:ec2::254]',
      '[fe80::1]',
      '0.0.0.0',
      '100.100.100.200',
      '[64:ff9b::7f00:1]',
      '[2002:7f00:1::]',
    ]) {
      const d = m.decide(h, 443);
      assert.equal(d.allow, false, h);
      assert.equal(!d.allow && d.reason, 'net.denied.special_range', h);
    }
  });
  it('allows a special range only through an entry inside that range', () => {
    const broad = compileEgress(network(['8.0.0.0/8', '9.0.0.0/8', '127.0.0.0/8:8080']));
    assert.equal(broad.decide('127.0.0.1', 8080).allow, true);
    assert.equal(broad.decide('9.9.9.9', 443).allow, true);
    assert.equal(broad.decide('[::ffff:127.0.0.1]', 8080).allow, true, 'IPv4-mapped is the IPv4 address');
    assert.equal(broad.decide('10.0.0.1', 443).allow, false);
    // Regression (security review): a rule that merely starts in a special block does not name it.
    const v6 = compileEgress(network(['::/16', '10.0.0.0/8']));
    assert.equal(v6.decide('[::1]', 443).allow, false);
    assert.equal(v6.decide('10.1.2.3', 443).allow, true);
  });
});

describe('compileEgress: DNS questions and answers', () => {
  it('answers names, never addresses', () => {
    assert.equal(m.decideName('storage.googleapis.com').allow, true);
    assert.equal(m.decideName('db.internal').allow, true);
    assert.equal(m.decideName('attacker.com').allow, false);
    assert.equal(m.decideName('c2VjcmV0.attacker.com').allow, false);
    assert.equal(m.decideName('1.2.3.4').allow, false);
  });
  it('refuses rebinding answers into special ranges unless a CIDR names them', () => {
    assert.equal(m.decideResolvedAddress('198.51.100.7').allow, true);
    const d = m.decideResolvedAddress('127.0.0.1');
    assert.equal(!d.allow && d.reason, 'net.denied.special_range');
    assert.equal(m.decideResolvedAddress('169.254.169.254').allow, false);
    assert.equal(m.decideResolvedAddress('10.1.2.3').allow, true, '10.1.2.0/24 names it');
    assert.equal(m.decideResolvedAddress('not-an-ip').allow, false);
  });
  it('denies everything with no rules', () => {
    const none = compileEgress(network([]));
    const d = none.decide('api.openai.com', 443);
    assert.equal(!d.allow && d.reason, 'net.denied.no_rules');
    assert.equal(none.decideName('api.openai.com').allow, false);
  });
});

// ---------------------------------------------------------------------------------------------
// Property tests: try to break the matcher with random and adversarial inputs, against an
// independent oracle (a linear scan over plain strings).

// A label that is a valid host label on its own: `xn--` labels are punycode and most random
// ones do not decode (the allowlist refuses them: the property is about names it accepts).
// Regression: with a random seed the generator once made `0.xn--a.com`, and network() threw.
const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?$/).filter((l) => !l.startsWith('xn--'));
const domain = fc.array(label, { minLength: 2, maxLength: 4 }).map((ls) => ls.join('.') + '.com');

/** Mutations an attacker would try on an allowed name. */
function adversarial(base: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constant(base),
    fc.constant(base.toUpperCase()),
    fc.constant(base + '.'),
    label.map((l) => `${l}.${base}`),
    label.map((l) => `${l}${base}`),
    label.map((l) => `${base}.${l}.net`),
    label.map((l) => `${base}${l}`),
    fc.constantFrom('@', '/', '%2e', '\\', '#', '?', ':', ' ', '\u0000', '..').map((c) => `${base}${c}attacker.com`),
    fc.constant(base.replace('a', '\u0430').replace('o', '\u03bf')),
    fc.constant(base.replace(/\./g, '\u3002')), // ideographic full stop: IDNA maps it to "."
    fc.constant('*.' + base),
  );
}

function oracle(rules: Array<{ wildcard: boolean; host: string }>, name: string): boolean {
  return rules.some((r) => (r.wildcard ? name.endsWith('.' + r.host) : name === r.host));
}

describe('property: the host matcher allows exactly what the allowlist names', () => {
  const allowlist = fc.array(fc.record({ wildcard: fc.boolean(), host: domain }), { minLength: 1, maxLength: 5 });
  for (const [name, params] of propertyRuns(400)) {
    it(name, () => {
      fc.assert(
        fc.property(
          allowlist.chain((rules) =>
            fc.tuple(
              fc.constant(rules),
              fc.constantFrom(...rules).chain((r) => adversarial(r.host)),
              fc.constantFrom(80, 443, 8080),
            ),
          ),
          ([rules, host, port]) => {
            const matcher = compileEgress(network(rules.map((r) => (r.wildcard ? `*.${r.host}` : r.host))));
            const d = matcher.decide(host, port);
            if (!d.allow) return;
            // Allowed: the request must be a plain ASCII name (after at most case, one trailing dot
            // and IDNA dot mapping) that the oracle allows, on a default port.
            const normalized = host
              .toLowerCase()
              .replace(/\u3002/g, '.')
              .replace(/\.$/, '');
            assert.ok(/^[a-z0-9.-]+$/.test(normalized), `allowed a non-plain name ${JSON.stringify(host)}`);
            assert.ok(oracle(rules, normalized), `allowed ${JSON.stringify(host)} outside ${JSON.stringify(rules)}`);
            assert.ok(port === 80 || port === 443);
          },
        ),
        params,
      );
    });
  }
});

describe('property: no IP spelling is allowed by a names-only policy, and no special address by a public CIDR', () => {
  const ipv4 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
  const spelling = fc.tuple(ipv4, fc.integer({ min: 0, max: 6 })).map(([n, k]) => {
    const b = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
    switch (k) {
      case 0:
        return b.join('.');
      case 1:
        return String(n);
      case 2:
        return '0x' + n.toString(16);
      case 3:
        return '0' + n.toString(8);
      case 4:
        return `${b[0]}.${(n & 0xffffff) >>> 0}`;
      case 5:
        return `[::ffff:${b.join('.')}]`;
      default:
        return b.map((x) => '0x' + x.toString(16)).join('.');
    }
  });
  const names = compileEgress(network(['api.openai.com', '*.googleapis.com']));
  const publicNet = compileEgress(network(['8.0.0.0/8', '9.0.0.0/8', '203.0.113.0/24']));
  for (const [label, params] of propertyRuns(1000)) {
    it(label, () => {
      fc.assert(
        fc.property(spelling, (host) => {
          assert.equal(names.decide(host, 443).allow, false, host);
          const d = publicNet.decide(host, 443);
          if (d.allow) assert.ok(d.reason === 'net.allowed.cidr', host);
          if (!d.allow) assert.notEqual(d.reason, 'net.denied.invalid_host', `${host} should parse as an address`);
        }),
        params,
      );
    });
  }
});
