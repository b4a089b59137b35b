import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../test-support/repo.js';
import { formatIssue, parseManifest } from './parse.js';

const BAD_DIR = join(REPO_ROOT, 'test', 'fixtures', 'manifests', 'bad');

const minimal = `version: "1.0"
agent:
  name: hello
  runtime: "python:3.11"
  entrypoint: ["python3", "main.py"]
`;

describe('parseManifest', () => {
  it('accepts a minimal manifest and applies the restrictive defaults', () => {
    const r = parseManifest(minimal);
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    const p = r.manifest.permissions;
    assert.deepEqual(p.network.allow, []);
    assert.deepEqual(p.fs, { read: [], write: [] });
    assert.equal(p.execution_time, 60_000);
    assert.equal(p.memory, 256 * 1024 * 1024);
    assert.equal(p.cpu_quota, 0.5);
    assert.equal(p.processes, 128);
    assert.equal(p.network.rate_limit, 20);
    assert.equal(p.network.byte_quota, null);
    assert.deepEqual(p.syscalls.deny, []);
    assert.equal(r.manifest.agent.code, '.');
    assert.deepEqual(r.manifest.agent.env, {});
  });

  it('parses the design example with its units and entries', () => {
    const text = readFileSync(join(REPO_ROOT, 'examples', 'research-agent', 'agent.yaml'), 'utf8');
    const r = parseManifest(text);
    assert.ok(r.ok);
    const p = r.manifest.permissions;
    assert.equal(p.execution_time, 300_000);
    assert.equal(p.memory, 512_000_000);
    assert.deepEqual(
      p.network.allow.map((x) => x.kind),
      ['exact', 'wildcard', 'exact'],
    );
    assert.deepEqual(p.network.allow[2], {
      kind: 'exact',
      host: 'db.internal',
      ports: { kind: 'one', port: 5432 },
      source: 'db.internal:5432',
    });
    assert.equal(r.warnings.length, 1, 'googleapis.com is a private-section public suffix: warned, not refused');
    assert.equal(r.warnings[0]!.path, 'permissions.network.allow[1]');
  });

  it('pins images by digest', () => {
    const d = 'a'.repeat(64);
    const r = parseManifest(minimal.replace('python:3.11', `python:3.11@sha256:${d}`));
    assert.ok(r.ok);
    assert.deepEqual(r.manifest.agent.runtime, { name: 'python', tag: '3.11', digest: d, ref: `python:3.11@sha256:${d}` });
  });

  it('keeps secret references apart from plain values', () => {
    const r = parseManifest(minimal + '  env: { TOKEN: "secret:openai-key", MODE: fast }\n');
    assert.ok(r.ok);
    assert.deepEqual(r.manifest.agent.env, { TOKEN: 'secret:openai-key', MODE: 'fast' });
  });

  it('reports every problem at once, sorted by position', () => {
    const r = parseManifest('version: "2"\nagent:\n  name: X\n  runtime: py\n  entrypoint: []\n');
    assert.equal(r.ok, false);
    const issues = !r.ok ? r.issues : [];
    assert.deepEqual(
      issues.map((i) => `${i.line}:${i.column} ${i.path}`),
      ['1:10 version', '3:9 agent.name', '4:12 agent.runtime', '5:15 agent.entrypoint'],
    );
  });

  it('formats issues like a compiler', () => {
    const r = parseManifest(minimal + 'permissions:\n  memory: 512XB\n');
    assert.equal(r.ok, false);
    assert.equal(
      formatIssue('agent.yaml', (!r.ok && r.issues[0])!),
      'agent.yaml:7:11: permissions.memory: "512XB" is not a size (try 512MB)',
    );
  });

  describe('when the input is hostile', () => {
    it('refuses an oversized manifest before parsing it', () => {
      const r = parseManifest(minimal + '#' + 'x'.repeat(70_000) + '\n');
      assert.equal(r.ok, false);
      assert.match((!r.ok && r.issues[0]!.message) || '', /larger than 64 KiB/);
    });
    it('refuses non-mapping documents', () => {
      for (const text of ['[]', '"just a string"', '42', '---\n---\n']) {
        const r = parseManifest(text);
        assert.equal(r.ok, false, text);
      }
    });
    it('never throws on arbitrary bytes', () => {
      for (const text of ['\u0000\u0001', '{{{{', 'a: !!binary x', 'a: !custom 1', ': : :', '\t- x', 'a: *nope']) {
        assert.doesNotThrow(() => parseManifest(text));
        assert.equal(parseManifest(text).ok, false, JSON.stringify(text));
      }
    });
  });

  describe('when a key is unknown (regression: no "did you mean" for enviroment, ratelimit, timeout)', () => {
    it('names the key that exists at that level', () => {
      const r = parseManifest(`${minimal}  enviroment: { A: b }
permissions:
  timeout: 5m
  network:
    ratelimit: 5/s
  bogus: 1
`);
      assert.equal(r.ok, false);
      assert.deepEqual(
        (!r.ok ? r.issues : []).map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`),
        [
          '6:3 agent.enviroment: unknown key "enviroment" (did you mean "env"?)',
          '8:3 permissions.timeout: unknown key "timeout" (did you mean "execution_time"?)',
          '10:5 permissions.network.ratelimit: unknown key "ratelimit" (did you mean "rate_limit"?)',
          '11:3 permissions.bogus: unknown key "bogus"',
        ],
      );
    });
    it('suggests a top-level key too', () => {
      const r = parseManifest(`${minimal}permisions: {}
`);
      assert.equal(!r.ok && r.issues[0]?.message, 'unknown key "permisions" (did you mean "permissions"?)');
    });
  });

  describe('the bad manifests in test/fixtures/manifests/bad', () => {
    for (const name of readdirSync(BAD_DIR).filter((f) => f.endsWith('.yaml'))) {
      it(`rejects ${name} with each expected line, column and field`, () => {
        const text = readFileSync(join(BAD_DIR, name), 'utf8');
        const expected = text
          .split('\n')
          .filter((l) => l.startsWith('# expect: '))
          .map((l) => l.slice('# expect: '.length).trim());
        assert.ok(expected.length > 0, 'fixture declares its expected issues');
        const r = parseManifest(text);
        assert.equal(r.ok, false);
        const got = (!r.ok ? r.issues : []).map((i) => `${i.line}:${i.column} ${i.path}`.trim());
        assert.deepEqual(got, expected);
      });
    }
  });
});
