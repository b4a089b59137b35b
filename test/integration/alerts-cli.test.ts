/**
 * Alerts through the real CLI: `aegis alerts rules|test|replay`, and `aegis run` raising
 * alert.raised events into the same log as it runs (with the default pack, a host rule file,
 * alerting turned off, and a broken rule file that stops the run from starting).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

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
  /** The CLI without blocking this process's event loop (a webhook receiver runs in it). */
  const aegisAsync = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
      const c = spawn(process.execPath, [AEGIS_BIN, ...args], { env: { ...process.env, AEGIS_HOME: home, ...env }, timeout: 60_000 });
      let out = '';
      let err = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (err += d.toString()));
      c.on('error', reject);
      c.on('close', (code) => resolve({ code, out, err }));
    });
  const lines = (out: string): Array<Record<string, unknown>> =>
    out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  before(async () => {
    unavailable = await sandboxUnavailable();
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
    const { executionId, alerts: counts } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string; alerts: unknown };
    assert.deepEqual(counts, { raised: 1, delivered: 0, failed: 0, dropped: 0 }, 'no sink configured: nothing to deliver');
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

  it('aegis run POSTs each alert to AEGIS_ALERT_WEBHOOK, signed with the secret file; the summary counts the delivery', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const rules = join(work, 'host-rules.yml');
    writeFileSync(rules, 'title: Every start\nid: test-every-start\nlevel: low\ndetection:\n  s: { action: run.start }\n  condition: s\n');
    const secretFile = join(work, 'hook.secret');
    const secret = 'integration-test-secret-0123456789';
    writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
    chmodSync(secretFile, 0o600);
    const got: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
    let answers = [500]; // the first attempt fails: the run retries
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        got.push({ headers: req.headers, body });
        res.writeHead(answers.shift() ?? 204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const webhook = `http://127.0.0.1:${(server.address() as AddressInfo).port}/aegis`;
    try {
      const summary = join(work, 'summary-webhook.json');
      const env = { AEGIS_ALERT_RULES: rules, AEGIS_ALERT_WEBHOOK: webhook, AEGIS_ALERT_WEBHOOK_SECRET_FILE: secretFile };
      const r = await aegisAsync(['run', file, '--state-dir', join(work, 'state'), '--summary', summary], env);
      assert.equal(r.code, 0, r.err);
      const s = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string; alerts: unknown };
      assert.deepEqual(s.alerts, { raised: 1, delivered: 1, failed: 0, dropped: 0 });
      assert.equal(got.length, 2, 'one failed attempt, one accepted');
      const last = got[1]!;
      const ts = last.headers['x-aegis-timestamp'] as string;
      const want = createHmac('sha256', secret).update(`${ts}.${last.body}`).digest();
      const sig = Buffer.from((last.headers['x-aegis-signature'] as string).replace(/^sha256=/, ''), 'hex');
      assert.ok(sig.length === want.length && timingSafeEqual(sig, want), 'a valid signature');
      const alert = JSON.parse(last.body) as { id: string; rule: string; actor: { execution: string } };
      assert.equal(alert.rule, 'test-every-start');
      assert.equal(alert.actor.execution, s.executionId);
      const q = aegis(['audit', 'query', '--json', '--execution', s.executionId]);
      const raised = lines(q.out)
        .map((l) => l['event'] as { id: string; action: string })
        .find((e) => e.action === 'alert.raised');
      assert.equal(raised?.id, alert.id, 'the delivered alert names its alert.raised event in the log');

      // A receiver that is gone: the run is not held up beyond the bounded wait, and the loss is counted.
      answers = [];
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      const r2 = await aegisAsync(['run', file, '--state-dir', join(work, 'state'), '--summary', summary], env);
      assert.equal(r2.code, 0, r2.err);
      assert.deepEqual((JSON.parse(readFileSync(summary, 'utf8')) as { alerts: unknown }).alerts, {
        raised: 1,
        delivered: 0,
        failed: 1,
        dropped: 0,
      });
      assert.match(r2.err, /aegis run: alerts: .*1 failed/);

      // An unsafe secret file: the run does not start.
      chmodSync(secretFile, 0o644);
      const r3 = await aegisAsync(['run', file, '--state-dir', join(work, 'state')], env);
      assert.equal(r3.code, 125, r3.err);
      assert.match(r3.err, /webhook secret .* must not be readable by group or others/);
      assert.equal(r3.out, '', 'the agent did not run');
    } finally {
      if (server.listening) {
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      }
    }
  });
});
