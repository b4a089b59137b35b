/**
 * The command-line contract of `aegis validate` and `aegis policy test`, exercised through the
 * real `bin/aegis.js` as other tools call it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';

function aegis(...args: string[]) {
  const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], { encoding: 'utf8', cwd: REPO_ROOT });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const EXAMPLE = join(REPO_ROOT, 'examples', 'research-agent', 'agent.yaml');

describe('aegis validate', () => {
  const examples = readdirSync(join(REPO_ROOT, 'examples'))
    .map((d) => join(REPO_ROOT, 'examples', d, 'agent.yaml'))
    .filter((f) => existsSync(f));
  it('finds example manifests', () => assert.ok(examples.length >= 1));
  for (const file of examples) {
    it(`accepts ${file.slice(REPO_ROOT.length + 1)}`, () => {
      const r = aegis('validate', file);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'ok\n');
    });
  }

  it('rejects with one file:line:col: message line per problem, exit 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-validate-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, 'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: [python3]\npermissions:\n  memory: 512XB\n  bogus: 1\n');
    const r = aegis('validate', file);
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.deepEqual(r.err.trim().split('\n'), [
      `${file}:7:11: permissions.memory: "512XB" is not a size (try 512MB)`,
      `${file}:8:3: permissions.bogus: unknown key "bogus"`,
    ]);
  });

  it('reports an unreadable file with exit 1', () => {
    const r = aegis('validate', '/nonexistent/agent.yaml');
    assert.equal(r.code, 1);
    assert.match(r.err, /cannot read the manifest \(ENOENT\)/);
  });

  it('prints JSON with --json', () => {
    const r = aegis('validate', '--json', EXAMPLE);
    assert.equal(r.code, 0);
    const j = JSON.parse(r.out) as { ok: boolean; warnings: string[] };
    assert.equal(j.ok, true);
    assert.equal(j.warnings.length, 1);
  });
});

describe('aegis policy test', () => {
  const cases: Array<[string[], number, RegExp]> = [
    [['net', 'api.openai.com'], 0, /^allow\n$/],
    [['net', 'storage.googleapis.com:443'], 0, /^allow\n$/],
    [['net', 'db.internal:5432'], 0, /^allow\n$/],
    [['net', 'googleapis.com'], 1, /^deny: net\.denied\.not_in_allowlist/],
    [['net', 'attacker.com:443'], 1, /^deny: net\.denied\.not_in_allowlist/],
    [['net', 'api.openai.com:22'], 1, /^deny: net\.denied\.port/],
    [['net', '169.254.169.254:80'], 1, /^deny: net\.denied\.special_range/],
    [['net', '2130706433:80'], 1, /^deny: net\.denied\.special_range/],
    [['net', '[::1]:443'], 1, /^deny: net\.denied\.special_range/],
    [['fs', 'read', '/data/inputs/a.csv'], 0, /^allow\n$/],
    [['fs', 'write', '/data/outputs/r.txt'], 0, /^allow\n$/],
    [['fs', 'write', '/data/inputs/a.csv'], 1, /^deny: fs\.denied\.read_only/],
    [['fs', 'read', '/data/inputs2/a.csv'], 1, /^deny: fs\.denied\.not_granted/],
    [['fs', 'read', '/data/inputs/../../etc/passwd'], 1, /^deny: fs\.denied\.not_granted/],
  ];
  for (const [args, code, out] of cases) {
    it(`${args.join(' ')} -> exit ${code}`, () => {
      const r = aegis('policy', 'test', EXAMPLE, ...args);
      assert.equal(r.code, code, r.err);
      assert.match(r.out, out);
    });
  }

  it('exits 2 for bad arguments and bad manifests', () => {
    assert.equal(aegis('policy', 'test', EXAMPLE, 'dns', 'x').code, 2);
    assert.equal(aegis('policy', 'test', EXAMPLE, 'fs', 'exec', '/x').code, 2);
    assert.equal(aegis('policy', 'test', EXAMPLE, 'net', 'a.com:http').code, 2);
    assert.equal(aegis('policy', 'test', EXAMPLE).code, 2);
    assert.equal(aegis('policy', 'test', '/nonexistent.yaml', 'net', 'a.com').code, 2);
    const bad = join(REPO_ROOT, 'test', 'fixtures', 'manifests', 'bad', 'wildcards.yaml');
    assert.equal(aegis('policy', 'test', bad, 'net', 'a.com').code, 2);
  });

  it('prints the decision as JSON with --json', () => {
    const r = aegis('policy', 'test', '--json', EXAMPLE, 'net', 'attacker.com');
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.out), { allow: false, reason: 'net.denied.not_in_allowlist', detail: 'attacker.com is not in permissions.network.allow' });
  });
});

describe('aegis --version and help', () => {
  it('prints the version', () => {
    const r = aegis('--version');
    assert.equal(r.code, 0);
    assert.match(r.out, /^\d+\.\d+\.\d+\n$/);
  });
  it('lists the commands', () => {
    const r = aegis('help');
    assert.equal(r.code, 0);
    assert.match(r.out, /validate/);
    assert.match(r.out, /policy/);
  });
  it('exits 2 on an unknown command', () => {
    assert.equal(aegis('frobnicate').code, 2);
  });
});
