import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkBody, hostBound, injectRequest, placeholdersIn, type InjectableSecret } from './inject.js';

const PH1 = `aegis-ph-${'a1'.repeat(16)}`;
const PH2 = `aegis-ph-${'b2'.repeat(16)}`;
const secrets: InjectableSecret[] = [
  { secret: 'openai', version: 2, hosts: ['api.openai.com'], header: 'authorization', placeholder: PH1, value: 'sk-REAL' },
  { secret: 'maps', version: 1, hosts: ['*.googleapis.com'], header: null, placeholder: PH2, value: 'k&y=1' },
];

describe('hostBound', () => {
  it('matches exact names and wildcards (one or more labels below, never the suffix itself)', () => {
    assert.equal(hostBound(['api.openai.com'], 'API.OpenAI.com.'), true);
    assert.equal(hostBound(['*.googleapis.com'], 'maps.googleapis.com'), true);
    assert.equal(hostBound(['*.googleapis.com'], 'googleapis.com'), false);
    assert.equal(hostBound(['*.googleapis.com'], 'evilgoogleapis.com'), false);
    assert.equal(hostBound(['api.openai.com'], '104.18.6.192'), false);
  });
});

describe('placeholdersIn', () => {
  it('finds placeholders raw, in any case, and percent-encoded', () => {
    assert.deepEqual(placeholdersIn(`x ${PH1} y`), [PH1]);
    assert.deepEqual(placeholdersIn(PH1.toUpperCase()), [PH1]);
    assert.deepEqual(placeholdersIn(PH1.replace('aegis', '%61%65gis')), [PH1]);
    assert.deepEqual(placeholdersIn('nothing here'), []);
  });
});

describe('injectRequest', () => {
  it('swaps a header-bound secret in its header only, and in Basic credentials', () => {
    const r = injectRequest(secrets, 'api.openai.com', [['Authorization', `Bearer ${PH1}`]], '/v1', false);
    assert.ok(r.ok);
    assert.deepEqual(r.headers, [['Authorization', 'Bearer sk-REAL']]);
    assert.deepEqual(r.uses, [{ secret: 'openai', version: 2, where: 'authorization' }]);
    const b = injectRequest(
      secrets,
      'api.openai.com',
      [['authorization', `Basic ${Buffer.from(`u:${PH1}`).toString('base64')}`]],
      '/',
      false,
    );
    assert.ok(b.ok);
    assert.equal(Buffer.from(b.headers[0]![1].slice(6), 'base64').toString(), 'u:sk-REAL');
    const other = injectRequest(secrets, 'api.openai.com', [['x-api-key', PH1]], '/', false);
    assert.deepEqual(!other.ok && [other.reason, other.where], ['secrets.credential_misplaced', 'header x-api-key']);
    const q = injectRequest(secrets, 'api.openai.com', [], `/v1?key=${PH1}`, false);
    assert.deepEqual(!q.ok && q.reason, 'secrets.credential_misplaced');
  });
  it('swaps a secret without a header in any header and in the query (encoded)', () => {
    const r = injectRequest(secrets, 'maps.googleapis.com', [['X-Goog-Api-Key', PH2]], `/geo?key=${PH2}&q=1`, false);
    assert.ok(r.ok);
    assert.deepEqual(r.headers, [['X-Goog-Api-Key', 'k&y=1']]);
    assert.equal(r.path, '/geo?key=k%26y%3D1&q=1');
  });
  it('refuses a placeholder to an unbound host, in the path, unknown, encoded, or in clear text; never quoting the value', () => {
    const cases = [
      injectRequest(secrets, 'attacker.example', [['authorization', `Bearer ${PH1}`]], '/', false),
      injectRequest(secrets, 'attacker.example', [], `/?x=${PH2.toUpperCase()}`, false),
      injectRequest(secrets, 'api.openai.com', [], `/${PH1}`, false),
      injectRequest(secrets, 'api.openai.com', [['authorization', `Bearer aegis-ph-${'0'.repeat(32)}`]], '/', false),
      injectRequest(secrets, 'maps.googleapis.com', [], `/?k=${PH2.replace('aegis', '%61egis')}`, false),
      injectRequest(secrets, 'api.openai.com', [['authorization', `Bearer ${PH1}`]], '/', true),
    ];
    assert.deepEqual(
      cases.map((c) => (c.ok ? 'ok' : c.reason)),
      [
        'secrets.credential_host_mismatch',
        'secrets.credential_host_mismatch',
        'secrets.credential_misplaced',
        'secrets.credential_unknown',
        'secrets.credential_misplaced',
        'secrets.credential_cleartext',
      ],
    );
    assert.ok(!JSON.stringify(cases).includes('sk-REAL') && !JSON.stringify(cases).includes('k&y=1'));
  });
  it('leaves a request without placeholders untouched', () => {
    const r = injectRequest(secrets, 'attacker.example', [['a', 'b']], '/x?y=z', true);
    assert.deepEqual(r, { ok: true, headers: [['a', 'b']], path: '/x?y=z', uses: [] });
  });
});

describe('checkBody', () => {
  it('refuses a placeholder in a body to an unbound host, lets it go (unswapped) to a bound one', () => {
    assert.equal(checkBody(secrets, 'attacker.example', `{"k":"${PH1}"}`, false)?.reason, 'secrets.credential_host_mismatch');
    assert.equal(checkBody(secrets, 'api.openai.com', `{"k":"${PH1}"}`, false), null);
    assert.equal(checkBody(secrets, 'api.openai.com', `{"k":"${PH1}"}`, true)?.reason, 'secrets.credential_cleartext');
  });
});
