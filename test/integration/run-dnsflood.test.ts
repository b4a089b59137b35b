/**
 * `aegis run` of an agent that floods the gateway's DNS (issue 8), end to end through
 * bin/aegis.js, crun and the fake internet: the run's audit budget (AEGIS_AUDIT_BUDGET_*) ends
 * in one `audit.budget_exhausted` event, the agent is stopped (host policy `stop`, the default)
 * with a clear status and reason, the events past the budget are counted, and the log verifies.
 * Under the default budget a flood that ends by itself leaves a bounded log and exit 0.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { requirementsOrSkip } from './gateway-support.js';

/** UDP questions to the sandbox's resolver for argv[1] seconds (forever if 0), then exit 0. */
const FLOOD = `
import socket, struct, sys, time
gw = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
secs = float(sys.argv[1])
end = time.time() + secs if secs > 0 else float('inf')
i = 0
while time.time() < end:
    name = 'x%d.attacker.com' % i if i % 2 else 'api.openai.com'
    labels = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.'))
    s.sendto(struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + labels + b'\\0' + struct.pack('>HH', 1, 1), (gw, 53))
    i += 1
    try:
        s.recvfrom(4096)
    except socket.timeout:
        pass
print('sent', i)
`;

describe('aegis run: an agent flooding DNS', { ...requirementsOrSkip(['ip', 'nft', 'openssl', 'crun']), timeout: 240_000 }, () => {
  let inet: FakeInternet;
  const home = mkdtempSync(join(tmpdir(), 'aegis-run-dnsflood-home-'));
  const work = mkdtempSync(join(tmpdir(), 'aegis-run-dnsflood-'));
  chmodSync(work, 0o755);
  const baseEnv = { AEGIS_HOME: home, AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53` };
  const aegis = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...baseEnv, ...env },
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const manifest = (seconds: number): string => {
    const file = join(work, `agent-${seconds}.yaml`);
    writeFileSync(
      file,
      `version: "1.0"\nagent:\n  name: dns-flood\n  runtime: "python:3.11"\n  entrypoint: ${JSON.stringify(['python3', '-c', FLOOD, String(seconds)])}\npermissions:\n  network:\n    allow: ["api.openai.com"]\n    rate_limit: 2/s\n  execution_time: 60s\n  memory: 128MiB\n`,
    );
    return file;
  };
  const eventsOf = (executionId: string): AuditEvent[] => {
    const q = aegis(['audit', 'query', '--json', '--execution', executionId]);
    assert.equal(q.code, 0, q.err);
    return q.out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { event: AuditEvent }).event);
  };

  before(async () => {
    inet = await startFakeInternet();
  });
  after(async () => {
    await inet?.close();
    rmSync(home, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it('past the budget: audit.budget_exhausted, the agent stopped (status killed, stopReason), the rest counted, the log verifies', () => {
    const summary = join(work, 'summary-budget.json');
    const r = aegis(['run', manifest(0), '--summary', summary], { AEGIS_AUDIT_BUDGET_EVENTS: '60' });
    assert.equal(r.code, 137, `${r.out}\n${r.err}`);
    assert.match(r.err, /audit budget of this run \(60 events, \d+ bytes\) is used up: stopping the agent/);
    assert.match(r.err, /agent stopped: audit budget exhausted/);
    const s = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string; status: string; exitCode: number; stopReason?: string };
    assert.deepEqual([s.status, s.exitCode, s.stopReason], ['killed', 137, 'audit.budget_exhausted']);
    const events = eventsOf(s.executionId);
    const actions = events.map((e) => e.action);
    assert.equal(actions.filter((a) => a === 'audit.budget_exhausted').length, 1);
    assert.ok(actions.includes('run.killed') && actions.includes('run.exit'), actions.join(' '));
    assert.equal(actions.at(-1), 'audit.budget_folded');
    // the budget plus what is written past it anyway: the exhaustion, the lifecycle tail, the counts
    const logged = events.filter((e) => e.action !== 'alert.raised');
    assert.ok(logged.length <= 60 + 6, `${logged.length} events`);
    // Alerts go to the log beside the budget; suppression bounds them (at most one per rule and
    // execution a minute), and the budget's exhaustion is one of them.
    const alerts = events.filter((e) => e.action === 'alert.raised');
    assert.ok(alerts.length <= 14, `${alerts.length} alerts`);
    assert.ok(
      alerts.some((e) => e.reason === 'aegis-budget-exceeded'),
      alerts.map((e) => e.reason).join(' '),
    );
    const v = aegis(['audit', 'verify']);
    assert.equal(v.code, 0, v.out + v.err);
  });

  it("under the default budget a 3-second flood ends with the agent's exit code 0 and a bounded log", () => {
    const summary = join(work, 'summary-default.json');
    const r = aegis(['run', manifest(3), '--summary', summary]);
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    const sent = Number(/^sent (\d+)$/m.exec(r.out)?.[1]);
    assert.ok(sent > 500, r.out);
    const s = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string; status: string; exitCode: number; stopReason?: string };
    assert.deepEqual([s.status, s.exitCode, s.stopReason], ['exited', 0, undefined]);
    const events = eventsOf(s.executionId);
    const dns = events.filter((e) => e.action === 'net.dns' || e.action === 'net.dns.summary');
    assert.ok(dns.length < 300, `${dns.length} DNS events for ${sent} questions`);
    const accounted =
      events.filter((e) => e.action === 'net.dns').length +
      events.filter((e) => e.action === 'net.dns.summary').reduce((n, e) => n + (e.payload.count as number), 0);
    // the last question may be lost in flight when the agent exits; every answered one is counted
    assert.ok(accounted >= sent - 1 && accounted <= sent, `${accounted} accounted, ${sent} sent`);
    assert.equal(events.filter((e) => e.action.startsWith('audit.budget')).length, 0);
  });
});
