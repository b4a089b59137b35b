import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCode } from '../../test-support/errors.js';
import { ImageError } from '../errors.js';
import { credentialsFor } from './auth.js';
import { parseChallenge } from './http.js';
import { manifestRef, parseRemoteRef } from './reference.js';

describe('registry references', () => {
  it('host[:port]/repository:tag or @sha256, the host always explicit', () => {
    assert.deepEqual(parseRemoteRef('localhost:5000/team/agent:1.2'), {
      registry: 'localhost:5000',
      repository: 'team/agent',
      tag: '1.2',
      digest: null,
      text: 'localhost:5000/team/agent:1.2',
    });
    const d = `sha256:${'a'.repeat(64)}`;
    const r = parseRemoteRef(`registry.example.com/agent@${d}`);
    assert.equal(r.digest, d);
    assert.equal(manifestRef(r), d);
    assert.equal(parseRemoteRef('10.0.0.1:443/a/b:c').registry, '10.0.0.1:443');
  });
  it('refuses what is not one', () => {
    for (const bad of [
      'python:3.11',
      'team/agent:1',
      'localhost:5000/Team/agent:1',
      'localhost:5000/agent',
      'localhost:5000/agent:',
      'localhost:5000/../x:1',
      'host.example/agent@sha256:12',
      'x'.repeat(600),
    ])
      assert.throws(() => parseRemoteRef(bad), hasCode(ImageError, 'image.bad_ref'), bad);
  });
});

describe('WWW-Authenticate challenges', () => {
  it('parses Basic and Bearer with their parameters', () => {
    assert.deepEqual(parseChallenge('Basic realm="aegis-test"'), { scheme: 'basic', params: { realm: 'aegis-test' } });
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'), {
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull' },
    });
    assert.equal(parseChallenge(undefined), null);
    assert.equal(parseChallenge('Negotiate abc'), null);
  });
});

describe('registry credentials (Docker config.json format)', () => {
  const file = (auths: unknown) => JSON.stringify({ auths });
  it('"auth" as base64 of user:password, or username and password; none for another registry', () => {
    const b64 = Buffer.from('me:pa:ss').toString('base64');
    assert.deepEqual(credentialsFor(file({ 'r.example:5000': { auth: b64 } }), 'r.example:5000', 'f'), {
      username: 'me',
      password: 'pa:ss',
    });
    assert.deepEqual(credentialsFor(file({ 'https://r.example': { username: 'u', password: 'p' } }), 'r.example', 'f'), {
      username: 'u',
      password: 'p',
    });
    assert.equal(credentialsFor(file({ other: { auth: b64 } }), 'r.example', 'f'), undefined);
  });
  it('refuses malformed files with a coded error, never a crash', () => {
    for (const bad of [
      'not json',
      '{}',
      file(null),
      file({ r: { auth: Buffer.from('nocolon').toString('base64') } }),
      file({ r: { username: 'u' } }),
      file({ r: 5 }),
    ])
      assert.throws(() => credentialsFor(bad, 'r', 'f'), hasCode(ImageError, 'image.registry_auth'), bad);
  });
});
