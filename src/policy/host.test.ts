import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyHost, parseAllowEntry, parseLooseIpv4 } from './host.js';

describe('parseLooseIpv4 (inet_aton forms)', () => {
  const cases: Array<[string, string | null]> = [
    ['127.0.0.1', '127.0.0.1'],
    ['2130706433', '127.0.0.1'],
    ['0x7f.1', '127.0.0.1'],
    ['0x7f000001', '127.0.0.1'],
    ['017700000001', '127.0.0.1'],
    ['0177.0.0.01', '127.0.0.1'],
    ['127.1', '127.0.0.1'],
    ['169.254.43518', '169.254.169.254'],
    ['0xa9fea9fe', '169.254.169.254'],
    ['1.2.3.256', null],
    ['4294967296', null],
    ['1.2.3.4.5', null],
    ['08.0.0.1', null],
    ['0xg.1', null],
    ['', null],
    ['1..1', null],
  ];
  for (const [input, want] of cases) {
    it(`${JSON.stringify(input)} -> ${want}`, () => assert.equal(parseLooseIpv4(input), want));
  }
});

describe('classifyHost (untrusted host strings)', () => {
  it('normalizes names: case, one trailing dot, IDNA', () => {
    assert.deepEqual(classifyHost('API.OpenAI.com.'), { kind: 'name', name: 'api.openai.com' });
    assert.deepEqual(classifyHost('münchen.de'), { kind: 'name', name: 'xn--mnchen-3ya.de' });
    assert.deepEqual(classifyHost('ａｐｉ.openai.com'), { kind: 'name', name: 'api.openai.com' }, 'fullwidth maps to ASCII (UTS #46)');
  });
  it('keeps look-alikes apart from the names they imitate', () => {
    const cyr = classifyHost('\u0430pi.openai.com'); // Cyrillic a
    assert.equal(cyr.kind, 'name');
    assert.notEqual(cyr.kind === 'name' && cyr.name, 'api.openai.com');
  });
  it('recognizes every IP spelling as the address it is', () => {
    for (const s of ['2130706433', '0x7f.1', '127.1', '[::ffff:127.0.0.1]', '::ffff:7f00:1', '127.0.0.1.', '０x7f.1']) {
      const c = classifyHost(s);
      assert.equal(c.kind, 'ip', s);
      assert.equal(c.kind === 'ip' && c.ip.address, '127.0.0.1', s);
    }
    const v6 = classifyHost('[2001:DB8::1]');
    assert.equal(v6.kind === 'ip' && v6.ip.address, '2001:db8::1');
  });
  it('refuses what is neither', () => {
    for (const s of [
      '',
      '.',
      'a..b',
      'a/b',
      'a@b.com',
      'api.openai.com%2f',
      'a b',
      'a\u0000b',
      '-a.com',
      'a-.com',
      '*.com',
      '1.2.3.999',
      'x'.repeat(64) + '.com',
      '[::1',
      'fe80::1%eth0',
      'example.com..',
      'xn--pi-7ld.openai.com',
      'a:b',
    ]) {
      assert.equal(classifyHost(s).kind, 'invalid', JSON.stringify(s));
    }
  });
});

describe('parseAllowEntry', () => {
  const ok = (s: string) => {
    const r = parseAllowEntry(s);
    assert.ok(r.ok, `${s}: ${!r.ok ? r.message : ''}`);
    return r.rule;
  };
  const bad = (s: string, re: RegExp) => {
    const r = parseAllowEntry(s);
    assert.equal(r.ok, false, s);
    assert.match(!r.ok ? r.message : '', re, s);
  };
  it('reads host, port, wildcard, IP and CIDR forms', () => {
    assert.deepEqual(ok('API.openai.com'), { kind: 'exact', host: 'api.openai.com', ports: { kind: 'default' }, source: 'API.openai.com' });
    assert.deepEqual(ok('db.internal:5432').ports, { kind: 'one', port: 5432 });
    assert.deepEqual(ok('db.internal:*').ports, { kind: 'any' });
    assert.deepEqual(ok('*.googleapis.com'), {
      kind: 'wildcard',
      suffix: 'googleapis.com',
      ports: { kind: 'default' },
      source: '*.googleapis.com',
    });
    assert.deepEqual(ok('10.1.2.0/24:5432'), {
      kind: 'cidr',
      family: 4,
      address: '10.1.2.0',
      prefix: 24,
      ports: { kind: 'one', port: 5432 },
      source: '10.1.2.0/24:5432',
    });
    assert.deepEqual(ok('203.0.113.7'), {
      kind: 'cidr',
      family: 4,
      address: '203.0.113.7',
      prefix: 32,
      ports: { kind: 'default' },
      source: '203.0.113.7',
    });
    assert.equal((ok('[2001:db8::]/32:443') as { address: string }).address, '2001:db8::');
    assert.equal((ok('2001:db8::1') as { prefix: number }).prefix, 128);
    assert.equal((ok('[2001:db8::1]:8443').ports as { port: number }).port, 8443);
  });
  it('refuses what would allow too much or is ambiguous', () => {
    bad('*', /bare/);
    bad('*:443', /bare/);
    bad('*.com', /public suffix/);
    bad('*.co.uk', /public suffix/);
    bad('*.internal', /public suffix/);
    bad('a.*.com', /first label/);
    bad('*example.com', /first label/);
    bad('0.0.0.0/0', /too broad/);
    bad('::/0', /too broad/);
    bad('10.1.2.3/24', /host bits/);
    bad('2130706433', /127\.0\.0\.1/);
    bad('0x7f.1:80', /127\.0\.0\.1/);
    bad('*.10.0.0.1', /wildcard cannot/);
    bad('https://api.openai.com', /URL/);
    bad('api.openai.com:0', /out of range/);
    bad('api.openai.com:http', /not a port/);
    bad(' api.openai.com', /white space/);
    bad('', /empty/);
    bad('exa mple.com', /white space/);
    bad('a_b..com', /not a valid host/);
  });
});
