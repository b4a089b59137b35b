/**
 * The secret store through the real CLI: `aegis secret set|ls|rotate|rm` (value from stdin and
 * from a file, never printed, encrypted at rest, every change audited with the operator), and
 * `aegis run` refusing a missing, expired or unbound secret with 125, its code in the audit log
 * (secret.denied, run.failed_to_start) and on stderr.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AEGIS_BIN } from '../../src/test-support/repo.js';

const VALUE = 'sk-live-CLIVALUE-93e1d0';
const FILE_VALUE = 'db-pass-FROMFILE-5a5a';
const ROTATED = 'sk-live-ROTATED-c0ffee';

describe('aegis secret and the run-time refusals', { timeout: 120_000 }, () => {
  let work = '';
  let home = '';
  const aegis = (args: string[], input?: string) => {
    const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
      encoding: 'utf8',
      env: { ...process.env, AEGIS_HOME: home, AEGIS_ALERT_RULES: 'none' },
      timeout: 60_000,
      ...(input !== undefined ? { input } : { stdio: ['ignore', 'pipe', 'pipe'] }),
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const events = (action: string) => {
    const q = aegis(['audit', 'query', '--json', '--action', action]);
    assert.equal(q.code, 0, q.err);
    return q.out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { event: { actor: Record<string, string>; reason?: string; payload: Record<string, unknown> } }).event);
  };
  /** Every byte under AEGIS_HOME (store, keys, audit log) as one string. */
  const everything = (dir: string): string =>
    readdirSync(dir, { withFileTypes: true })
      .map((e) => (e.isDirectory() ? everything(join(dir, e.name)) : readFileSync(join(dir, e.name), 'latin1')))
      .join('\n');

  before(() => {
    work = mkdtempSync('/var/tmp/aegis-secrets-cli-');
    home = join(work, 'home');
    mkdirSync(home);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('set from stdin and from a file, ls never shows values, rotate, rm; every change audited', () => {
    let r = aegis(
      ['secret', 'set', 'openai', '--hosts', 'api.openai.com,*.openai.com', '--header', 'Authorization', '--expires', '30d'],
      `${VALUE}\n`,
    );
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'secret openai: version 1\n');
    const file = join(work, 'db.txt');
    writeFileSync(file, FILE_VALUE, { mode: 0o600 });
    r = aegis(['secret', 'set', 'db-pass', '--hosts', 'db.example.com', '--from-file', file]);
    assert.equal(r.code, 0, r.err);

    r = aegis(['secret', 'ls']);
    assert.equal(r.code, 0, r.err);
    assert.match(
      r.out,
      /^db-pass\tv1\tdb\.example\.com\t-\t\S+\tnever\tactive\nopenai\tv1\t\*\.openai\.com,api\.openai\.com\tauthorization\t\S+\t\S+\tactive\n$/,
    );
    const ls = aegis(['secret', 'ls', '--json']);
    assert.equal(ls.code, 0, ls.err);
    const rows = JSON.parse(ls.out) as Array<Record<string, unknown>>;
    assert.deepEqual(
      rows.map((x) => [x['name'], x['version'], x['hosts'], x['header'], x['state'], x['createdBy']]),
      [
        ['db-pass', 1, ['db.example.com'], null, 'active', rows[0]!['createdBy']],
        ['openai', 1, ['*.openai.com', 'api.openai.com'], 'authorization', 'active', rows[0]!['createdBy']],
      ],
    );
    assert.equal(typeof rows[0]!['createdBy'], 'string');
    for (const out of [r.out, ls.out]) assert.ok(!out.includes(VALUE) && !out.includes(FILE_VALUE), 'ls shows no value');

    r = aegis(['secret', 'set', 'openai', '--hosts', 'api.openai.com'], 'other\n');
    assert.equal(r.code, 1);
    assert.match(r.err, /^aegis secret: secrets\.exists: /);
    r = aegis(['secret', 'rotate', 'openai'], `${ROTATED}\n`);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'secret openai: version 2\n');
    assert.equal((JSON.parse(aegis(['secret', 'ls', '--json']).out) as Array<{ version: number }>)[1]!.version, 2);
    r = aegis(['secret', 'rm', 'db-pass']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(
      (JSON.parse(aegis(['secret', 'ls', '--json']).out) as Array<{ name: string }>).map((x) => x.name),
      ['openai'],
    );

    const operator = rows[0]!['createdBy'];
    const set = events('secret.set');
    assert.deepEqual(
      set.map((e) => [e.actor['principal'], e.payload['secret'], e.payload['version'], e.payload['hosts']]),
      [
        [operator, 'openai', 1, ['*.openai.com', 'api.openai.com']],
        [operator, 'db-pass', 1, ['db.example.com']],
      ],
    );
    assert.deepEqual(
      events('secret.rotate').map((e) => [e.actor['principal'], e.payload['secret'], e.payload['version']]),
      [[operator, 'openai', 2]],
    );
    assert.deepEqual(
      events('secret.rm').map((e) => [e.actor['principal'], e.payload['secret'], e.payload['versions']]),
      [[operator, 'db-pass', [1]]],
    );

    // At rest: 0700/0600, and no value (nor its base64) anywhere under AEGIS_HOME, audit log included.
    assert.equal(statSync(join(home, 'secrets')).mode & 0o777, 0o700);
    assert.equal(statSync(join(home, 'secrets', 'secrets.json')).mode & 0o777, 0o600);
    const all = everything(home) + aegis(['audit', 'export']).out;
    for (const v of [VALUE, FILE_VALUE, ROTATED]) {
      assert.ok(!all.includes(v), `${v} is stored in the clear`);
      assert.ok(!all.includes(Buffer.from(v).toString('base64')), `${v} is stored as base64`);
    }
  });

  it('refuses bad names, hosts, values and durations with their codes; missing --hosts is a usage error', () => {
    for (const [args, input, code] of [
      [['secret', 'set', 'Bad/Name', '--hosts', 'a.example.com'], 'v\n', 'secrets.name_invalid'],
      [['secret', 'set', 'x', '--hosts', '10.0.0.1'], 'v\n', 'secrets.hosts_invalid'],
      [['secret', 'set', 'x', '--hosts', 'a.example.com'], '\n', 'secrets.value_invalid'],
      [['secret', 'set', 'x', '--hosts', 'a.example.com'], 'two\nlines\n', 'secrets.value_invalid'],
      [['secret', 'set', 'x', '--hosts', 'a.example.com', '--expires', '1w'], 'v\n', 'secrets.duration_invalid'],
      [['secret', 'set', 'x', '--hosts', 'a.example.com', '--header', 'Host'], 'v\n', 'secrets.header_invalid'],
      [['secret', 'rotate', 'absent'], 'v\n', 'secrets.not_found'],
      [['secret', 'rm', 'absent'], undefined, 'secrets.not_found'],
    ] as const) {
      const r = aegis([...args], input);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, new RegExp(`^aegis secret: ${code.replace('.', '\\.')}: `), args.join(' '));
    }
    assert.equal(aegis(['secret', 'set', 'x'], 'v\n').code, 2);
  });

  describe('aegis run', () => {
    let dir = '';
    const manifest = (name: string, secret: string, allow: string[]): string => {
      const f = join(dir, `${name}.yaml`);
      writeFileSync(
        f,
        `version: "1.0"\nagent:\n  name: ${name}\n  runtime: "python:3.11"\n  entrypoint: ["python3", "-c", "pass"]\n  env:\n    API_KEY: "secret:${secret}"\n` +
          (allow.length > 0 ? `permissions:\n  network:\n    allow: ${JSON.stringify(allow)}\n` : ''),
      );
      return f;
    };
    before(() => {
      dir = join(work, 'agents');
      mkdirSync(dir);
      chmodSync(dir, 0o755);
    });

    it('refuses missing, expired and unbound secrets with 125 and the code (stderr, secret.denied, run.failed_to_start)', async () => {
      assert.equal(aegis(['secret', 'set', 'short', '--hosts', 'api.openai.com', '--expires', '1s'], 'v\n').code, 0);
      assert.equal(aegis(['secret', 'set', 'elsewhere', '--hosts', 'api.other.example'], 'v\n').code, 0);
      await sleep(1500); // let `short` expire (its expiry is one second after it was set)
      const cases = [
        ['missing', manifest('needs-missing', 'nope', ['api.openai.com']), 'nope'],
        ['expired', manifest('needs-expired', 'short', ['api.openai.com']), 'short'],
        ['unbound', manifest('needs-unbound', 'elsewhere', ['api.openai.com']), 'elsewhere'],
        ['unbound', manifest('needs-unbound-nonet', 'openai', []), 'openai'],
      ] as const;
      for (const [why, file, secret] of cases) {
        const r = aegis(['run', file, '--state-dir', join(work, 'state')]);
        assert.equal(r.code, 125, `${why}: ${r.err}`);
        assert.match(r.err, new RegExp(`secret[: ]${secret}`), why);
      }
      assert.deepEqual(
        events('secret.denied').map((e) => [e.reason, e.payload['secret']]),
        cases.map(([why, , secret]) => [`secrets.${why}`, secret]),
      );
      assert.deepEqual(
        events('run.failed_to_start')
          .map((e) => e.reason)
          .filter((x) => x?.startsWith('secrets.')),
        cases.map(([why]) => `secrets.${why}`),
      );
    });
  });
});
