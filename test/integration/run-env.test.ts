/**
 * `aegis run --env NAME=VALUE`: the operator's plain values reach the agent (adding to or
 * overriding agent.yaml's env), refused flags stop the run with 125, and the audit log records
 * the names, never the values.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

describe('aegis run --env', { timeout: 120_000 }, () => {
  let work = '';
  let file = '';
  /** The same agent, with OPENAI_API_KEY declared as secret:openai (for the refusals of --env). */
  let secretFile = '';
  let unavailable: string | null = null;
  const aegis = (args: string[]) => {
    const home = join(work, 'home');
    mkdirSync(home, { recursive: true });
    const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
      encoding: 'utf8',
      env: { ...process.env, AEGIS_HOME: home },
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const run = (...flags: string[]) => aegis(['run', file, '--state-dir', join(work, 'state'), ...flags]);

  before(async () => {
    unavailable = await sandboxUnavailable();
    work = mkdtempSync('/var/tmp/aegis-env-');
    chmodSync(work, 0o755);
    const code = join(work, 'agent');
    mkdirSync(code);
    chmodSync(code, 0o755);
    writeFileSync(
      join(code, 'main.py'),
      'import json, os\nprint(json.dumps({k: os.environ.get(k) for k in ["MODE", "REGION", "LOG_LEVEL", "OPENAI_API_KEY"]}))\n',
    );
    file = join(code, 'agent.yaml');
    const yaml =
      'version: "1.0"\nagent:\n  name: env-probe\n  runtime: "python:3.11"\n  entrypoint: ["python3", "main.py"]\n  isolation: crun\n  env:\n    MODE: author\n    LOG_LEVEL: info\n';
    writeFileSync(file, yaml);
    // Secret references and their placeholders: test/integration/run-secrets.test.ts.
    secretFile = join(code, 'agent-secret.yaml');
    writeFileSync(secretFile, `${yaml}    OPENAI_API_KEY: "secret:openai"\n`);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('adds and overrides plain values; the audit log has the names, not the values', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const summary = join(work, 'summary.json');
    const r = run('--env', 'MODE=operator', '--env', 'REGION=eu-west-1-s3cr3tish', '--summary', summary);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out), { MODE: 'operator', REGION: 'eu-west-1-s3cr3tish', LOG_LEVEL: 'info', OPENAI_API_KEY: null });
    const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
    const q = aegis(['audit', 'query', '--json', '--execution', executionId, '--action', 'run.env']);
    assert.equal(q.code, 0, q.err);
    const events = q.out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { event: { decision: string; payload: unknown } }).event);
    assert.equal(events.length, 1);
    assert.deepEqual(events[0]!.payload, { operatorEnv: ['MODE', 'REGION'] });
    const all = aegis(['audit', 'export']);
    assert.ok(!all.out.includes('s3cr3tish'), 'the value is not in the log');
  });

  it('refuses proxy variables, secret references and declared secrets with 125 and a reason', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    for (const [flag, why] of [
      ['HTTPS_PROXY=http://evil.example:3128', /set by AEGIS/],
      ['TOKEN=secret:prod-db', /plain values only/],
      ['OPENAI_API_KEY=sk-live', /declares it as the secret reference secret:openai/],
      ['MODE', /expected NAME=VALUE/],
    ] as const) {
      const r = aegis(['run', secretFile, '--state-dir', join(work, 'state'), '--env', flag]);
      assert.equal(r.code, 125, `${flag}: ${r.err}`);
      assert.match(r.err, why);
      assert.equal(r.out, '', 'the agent did not run');
    }
  });
});
