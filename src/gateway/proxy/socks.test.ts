import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GatewayError } from '../errors.js';
import { parseGreeting, parseRequest, reply } from './socks.js';

const codeOf = (fn: () => unknown): string | null => {
  try {
    fn();
    return null;
  } catch (err) {
    assert.ok(err instanceof GatewayError);
    return err.code;
  }
};

describe('SOCKS5 greeting (RFC 1928 §3)', () => {
  it('parses methods and reports incomplete input', () => {
    assert.deepEqual(parseGreeting(Buffer.from([5, 2, 0, 2])), { status: 'complete', consumed: 4, methods: [0, 2] });
    assert.deepEqual(parseGreeting(Buffer.from([5, 2, 0])), { status: 'incomplete' });
  });
  it('refuses SOCKS4 and empty method lists', () => {
    assert.equal(
      codeOf(() => parseGreeting(Buffer.from([4, 1, 0]))),
      'gateway.socks_malformed',
    );
    assert.equal(
      codeOf(() => parseGreeting(Buffer.from([5, 0]))),
      'gateway.socks_malformed',
    );
  });
});

describe('SOCKS5 request (RFC 1928 §4-5)', () => {
  it('parses a domain CONNECT', () => {
    const name = Buffer.from('attacker.com');
    const b = Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([1, 187])]);
    assert.deepEqual(parseRequest(b), { status: 'complete', consumed: b.length, cmd: 1, host: 'attacker.com', port: 443, atyp: 3 });
    for (let n = 0; n < b.length; n++) assert.deepEqual(parseRequest(b.subarray(0, n)), { status: 'incomplete' });
  });
  it('parses IPv4 and IPv6 targets', () => {
    assert.equal((parseRequest(Buffer.from([5, 1, 0, 1, 169, 254, 169, 254, 0, 80])) as { host: string }).host, '169.254.169.254');
    const v6 = Buffer.concat([Buffer.from([5, 1, 0, 4]), Buffer.from('20010db8000000000000000000000066', 'hex'), Buffer.from([1, 187])]);
    assert.equal((parseRequest(v6) as { host: string }).host, '2001:db8:0:0:0:0:0:66');
  });
  describe('when the request is hostile', () => {
    it('unknown address types, a nonzero reserved byte, empty or binary names are socks_malformed', () => {
      assert.equal(
        codeOf(() => parseRequest(Buffer.from([5, 1, 0, 9, 0, 0, 0]))),
        'gateway.socks_malformed',
      );
      assert.equal(
        codeOf(() => parseRequest(Buffer.from([5, 1, 1, 1, 1, 2, 3, 4, 0, 80]))),
        'gateway.socks_malformed',
      );
      assert.equal(
        codeOf(() => parseRequest(Buffer.from([5, 1, 0, 3, 0, 0, 80]))),
        'gateway.socks_malformed',
      );
      assert.equal(
        codeOf(() => parseRequest(Buffer.from([5, 1, 0, 3, 3, 0x61, 0x00, 0x62, 0, 80]))),
        'gateway.socks_malformed',
      );
    });
  });
  it('replies are 10 bytes with the code in byte 1', () => {
    assert.deepEqual([...reply(2)], [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
  });
});
