/**
 * Alerts through the real CLI: `aegis alerts rules|test|replay`, and `aegis run` raising
 * alert.raised events into the same log as it runs (with the default pack, a host rule file,
 * alerting turned off, and a broken rule file that stops the run from starting).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveImage } from '../../src/images/index.js';
import { driverFor } from '../../src/sandbox/drivers/index.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';
import { ensureHugetlbMount, requireOrSkip } from './sandbox-conformance.js';

const PACK = join(REPO_ROOT, 'rules', 'aegis-default.yml');

describe('aegis alerts and alerts raised by aegis run', { timeout: 180_000 }, () => {
  let work = '';
  let home = '';
  let file = '';
  let unavailable: string | null = null;
  const aegis = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
      encoding: 'utf8',
      env: { ...process.env, AEGIS_HOME: home, ...env },
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const lines = (out: string): Array<Record<string, unknown>> =>
    out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  before(async () => {
    try {
      ensureHugetlbMount();
    } catch (e) {
      unavailable = `cannot mount the hugetlb hierarchy: ${(e as Error).message}`;
    }
    unavailable ??= driverFor('crun').unavailableReason();
    try {
      await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
    } catch (e) {
      unavailable ??= `python:3.11 image missing: ${(e as Error).message}`;
    }
    work = mkdtempSync('/var/tmp/aegis-alerts-');
    chmodSync(work, 0o755);
    home = join(work, 'home');
    mkdirSync(home);
    const code = join(work, 'agent');
    mkdirSync(code);
    chmodSync(code, 0o755);
    writeFileSync(join(code, 'main.py'), 'print("hello")\n');
    file = join(code, 'agent.yaml');
    writeFileSync(
      file,
      'version: "1.0"\nagent:\n  name: alert-probe\n  runtime: "python:3.11"\n  entrypoint: ["python3", "main.py"]\n  isolation: crun\n',
    );
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('alerts rules lists the default pack; --json carries each rule with its source line', () => {
    const r = aegis(['alerts', 'rules', '--json']);
    assert.equal(r.code, 0, r.err);
    const rules = JSON.parse(r.out) as Array<{ id: string; source: string }>;
    assert.ok(rules.some((x) => x.id === 'aegis-net-denial-burst'));
    assert.ok(
      rules.every((x) => /aegis-default\.yml:\d+:\d+$/.test(x.source)),
      rules.map((x) => x.source).join(' '),
    );
    assert.match(aegis(['alerts', 'rules']).out, /^aegis-policy-denial\tmedium\tdetection\tPolicy denial$/m);
  });

  it('alerts test prints each alert as a JSON line, and names the line of a bad event', () => {
    const events = join(work, 'events.jsonl');
    const ev = (i: number, o: Record<string, unknown>) =>
      JSON.stringify({
        id: `e${i}`,
        time: new Date(Date.UTC(2026, 10, 30, 0, 0, i)).toISOString(),
        actor: { execution: 'x1' },
        payload: {},
        ...o,
      });
    writeFileSync(
      events,
      [
        ev(1, { action: 'net.connect', decision: 'allow', payload: { host: 'api.openai.com' } }),
        ev(2, { action: 'net.connect', decision: 'deny', payload: { host: '169.254.169.254', port: 80 } }),
        '',
      ].join('\n'),
    );
    const r = aegis(['alerts', 'test', PACK, events]);
    assert.equal(r.code, 0, r.err);
    const alerts = lines(r.out) as Array<{ rule: { id: string }; eventIds: string[] }>;
    assert.deepEqual(alerts.map((a) => a.rule.id).sort(), ['aegis-metadata-address', 'aegis-policy-denial']);
    assert.ok(alerts.every((a) => a.eventIds.includes('e2')));
    writeFileSync(events, `${ev(1, { action: 'net.connect', decision: 'allow' })}\n{"action": 1}\n`);
    const bad = aegis(['alerts', 'test', PACK, events]);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /events\.jsonl:2: action must be a string/);
    const badRules = join(work, 'bad.yml');
    writeFileSync(badRules, 'title: T\nid: bad-rule\nlevel: loud\ndetection:\n  s: { action: x.y }\n  condition: s\n');
    const br = aegis(['alerts', 'test', badRules, events]);
    assert.equal(br.code, 1);
    assert.match(br.err, /alerts\.rule_invalid: .*bad\.yml:3:8: level/);
  });

  it('aegis run raises alerts into the log as events are appended; replay finds the same alert', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const rules = join(work, 'host-rules.yml');
    writeFileSync(rules, 'title: Every start\nid: test-every-start\nlevel: low\ndetection:\n  s: { action: run.start }\n  condition: s\n');
    const summary = join(work, 'summary.json');
    const r = aegis(['run', file, '--state-dir', join(work, 'state'), '--summary', summary], { AEGIS_ALERT_RULES: rules });
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /aegis run: ALERT low test-every-start: Every start: run\.start info/);
    const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
    const q = aegis(['audit', 'query', '--json', '--execution', executionId]);
    const events = lines(q.out).map(
      (l) => l['event'] as { id: string; action: string; reason?: string; payload: { eventIds?: string[]; rule?: string } },
    );
    const alert = events.find((e) => e.action === 'alert.raised');
    const start = events.find((e) => e.action === 'run.start');
    assert.ok(alert && start, q.out);
    assert.equal(alert.reason, 'test-every-start');
    assert.deepEqual(alert.payload.eventIds, [start.id], 'the alert names the event that raised it');
    assert.match(aegis(['audit', 'verify']).out, /^ok: /);
    const replay = aegis(['alerts', 'replay', '--json', '--rules', rules]);
    assert.equal(replay.code, 0, replay.err);
    assert.ok(lines(replay.out).some((a) => (a['eventIds'] as string[]).includes(start.id)));
  });

  it('AEGIS_ALERT_RULES=none turns alerting off; a broken host rule file means no start (125)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const off = aegis(['run', file, '--state-dir', join(work, 'state')], { AEGIS_ALERT_RULES: 'none' });
    assert.equal(off.code, 0, off.err);
    assert.doesNotMatch(off.err, /ALERT/);
    const broken = join(work, 'broken.yml');
    writeFileSync(broken, 'title: [\n');
    const r = aegis(['run', file, '--state-dir', join(work, 'state')], { AEGIS_ALERT_RULES: broken });
    assert.equal(r.code, 125);
    assert.match(r.err, /alerts|YAML/);
    assert.equal(r.out, '', 'the agent did not run');
  });
});
