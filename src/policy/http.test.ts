import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifest } from '../manifest/parse.js';
import { compileEgress } from './net.js';
import { pathMatches, pathPatternProblem, pathTargetProblem } from './http.js';
import type { NetRule } from './types.js';

function matcherFor(allowYaml: string): ReturnType<typeof compileEgress> {
  const r = parseManifest(
    `version: "1.0"\nagent: { name: a, runtime: "python:3.11", entrypoint: ["python3"] }\npermissions:\n  network:\n    allow:\n${allowYaml}`,
  );
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  return compileEgress({
    rules: r.manifest.permissions.network.allow as readonly NetRule[],
    rateLimit: { perSecond: 1, burst: 1 },
    byteQuota: null,
  });
}

describe('HTTP path patterns', () => {
  it('"**" spans any number of segments, "*" stays inside one', () => {
    assert.equal(pathMatches('/repos/acme/**', '/repos/acme'), true);
    assert.equal(pathMatches('/repos/acme/**', '/repos/acme/x/y/z'), true);
    assert.equal(pathMatches('/repos/acme/**', '/repos/acmex'), false);
    assert.equal(pathMatches('/repos/*/issues', '/repos/acme/issues'), true);
    assert.equal(pathMatches('/repos/*/issues', '/repos/a/b/issues'), false);
    assert.equal(pathMatches('/v1/*.json', '/v1/a.json'), true);
    assert.equal(pathMatches('/v1/*.json', '/v1/a.txt'), false);
    assert.equal(pathMatches('/**/x', '/a/b/x'), true);
  });
  it('refuses ambiguous request paths and bad patterns', () => {
    for (const p of ['/a/../b', '/a/./b', '/a/%2e%2e/b', '/a%2Fb', '/a\\b', 'a/b']) assert.notEqual(pathTargetProblem(p), null, p);
    assert.equal(pathTargetProblem('/a/b?x=../y'), null);
    for (const p of ['x', '/a/../b', '/a?b', '/a%41', '/a/**b', '/**/**/**/**/**']) assert.notEqual(pathPatternProblem(p), null, p);
  });
});

describe('decideHttp', () => {
  const m = matcherFor('      - {host: api.github.com, methods: [get], paths: ["/repos/acme/**"]}\n      - example.com\n');
  it('allows a listed method on a listed path, with the rule', () => {
    const d = m.decideHttp('api.github.com', 443, 'GET', '/repos/acme/x?page=2');
    assert.deepEqual(d, { allow: true, reason: 'net.allowed.http_rule', rule: 'api.github.com [GET] /repos/acme/**' });
  });
  it('refuses another method, another path, an ambiguous path, each with its reason', () => {
    assert.equal(m.decideHttp('api.github.com', 443, 'POST', '/repos/acme/x').allow === false && 'reason', 'reason');
    const reasons = [
      m.decideHttp('api.github.com', 443, 'POST', '/repos/acme/x'),
      m.decideHttp('api.github.com', 443, 'GET', '/repos/other/x'),
      m.decideHttp('api.github.com', 443, 'GET', '/repos/acme/../other'),
      m.decideHttp('evil.com', 443, 'GET', '/'),
    ].map((d) => (d.allow ? 'allow' : d.reason));
    assert.deepEqual(reasons, ['net.denied.http_method', 'net.denied.http_path', 'net.denied.http_target', 'net.denied.not_in_allowlist']);
  });
  it('leaves hosts without rules alone, and says which hosts it inspects', () => {
    assert.deepEqual(m.decideHttp('example.com', 443, 'DELETE', '/a/../b'), {
      allow: true,
      reason: 'net.allowed.exact',
      rule: 'example.com',
    });
    assert.equal(m.inspectsHttp('api.github.com', 443), true);
    assert.equal(m.inspectsHttp('example.com', 443), false);
    assert.equal(m.inspectsHttp('api.github.com', 22), false);
  });
  it('a plain entry for the same host lifts the rules (the union of entries)', () => {
    const both = matcherFor('      - {host: api.github.com, methods: [GET]}\n      - api.github.com\n');
    assert.equal(both.decideHttp('api.github.com', 443, 'POST', '/x').allow, true);
    assert.equal(both.inspectsHttp('api.github.com', 443), false);
  });
});
