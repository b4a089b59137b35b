import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GatewayError } from '../errors.js';
import { parseAbsoluteUrl, parseAuthority, sameHost } from './authority.js';

const codeOf = (fn: () => unknown): string | null => {
  try {
    fn();
    return null;
  } catch (err) {
    assert.ok(err instanceof GatewayError);
    return err.code;
  }
};

describe('parseAuthority', () => {
  it('splits CONNECT targets', () => {
    assert.deepEqual(parseAuthority('API.OpenAI.com.:443', null), { host: 'api.openai.com', port: 443 });
    assert.deepEqual(parseAuthority('[2001:db8::66]:443', null), { host: '2001:db8::66', port: 443 });
    assert.deepEqual(parseAuthority('198.51.100.66:8080', null), { host: '198.51.100.66', port: 8080 });
  });
  it('applies the default port to Host headers', () => {
    assert.deepEqual(parseAuthority('api.openai.com', 80), { host: 'api.openai.com', port: 80 });
  });
  describe('when the authority is hostile', () => {
    for (const bad of [
      'api.openai.com',
      'a.com:0',
      'a.com:65536',
      'a.com:+1',
      'user@a.com:443',
      'a.com :443',
      '2001:db8::1:443',
      '[2001:db8::1',
      '[a.com]:443',
      'a.com/x:443',
      'a%2ecom:443',
      '',
      'a'.repeat(300) + ':443',
    ]) {
      it(`refuses ${JSON.stringify(bad.slice(0, 40))} with http_malformed`, () => {
        assert.equal(
          codeOf(() => parseAuthority(bad, null)),
          'gateway.http_malformed',
        );
      });
    }
  });
});

describe('parseAbsoluteUrl', () => {
  it('keeps the host as written (decimal IPs are not rewritten before the policy sees them)', () => {
    assert.deepEqual(parseAbsoluteUrl('http://2852039166/latest/meta-data/?a=1'), {
      scheme: 'http',
      authority: { host: '2852039166', port: 80 },
      path: '/latest/meta-data/?a=1',
    });
  });
  it('reports the scheme so https:// over plain HTTP can be refused', () => {
    assert.equal(parseAbsoluteUrl('https://api.openai.com/').scheme, 'https');
  });
  it('refuses userinfo and origin-form targets', () => {
    assert.equal(
      codeOf(() => parseAbsoluteUrl('http://user:pw@attacker.com/')),
      'gateway.http_malformed',
    );
    assert.equal(
      codeOf(() => parseAbsoluteUrl('/just/a/path')),
      'gateway.http_malformed',
    );
  });
});

describe('sameHost', () => {
  it('ignores case, one trailing dot and IPv6 brackets; nothing else', () => {
    assert.equal(sameHost('API.openai.com.', 'api.openai.com'), true);
    assert.equal(sameHost('[2001:db8::1]', '2001:db8::1'), true);
    assert.equal(sameHost('api.openai.com', 'api.openai.com.attacker.com'), false);
  });
});
