/**
 * A DNS flood from inside a sandbox namespace, against the real gateway and the fake internet
 * (issue 8: a 3-second UDP flood under `rate_limit: 10/s` once wrote ~60,000 events). Refused
 * questions are kept in full only at first and then folded into `net.dns.summary` counts, so the
 * number of events stays bounded while every question is still accounted for; and the run's
 * audit budget turns what is left into one `audit.budget_exhausted` event and counts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BudgetedSink } from '../../src/audit/budget.js';
import type { AuditEventInput } from '../../src/audit/event.js';
import { startSandboxNetwork } from '../../src/gateway/index.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { inNetns, MemorySink, networkPolicy, requirementsOrSkip } from './gateway-support.js';

const config = { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' };
/** rate_limit 2/s: the DNS bucket is 10/s with a burst of 10. */
const RATE = { perSecond: 2, burst: 2 };
const FLOOD_SECONDS = 3;

/**
 * The flooding agent: for FLOOD_SECONDS, one UDP question after another (waiting for each
 * answer, so that none is lost in a socket buffer and the count is exact), cycling through an
 * allowed A, a TXT for the allowed name and a new random subdomain of a denied domain.
 * Prints "<sent> <answered>".
 */
const FLOOD = `
import socket, struct, sys, time
gw = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
def query(i, name, qtype):
    labels = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.'))
    return struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + labels + b'\\0' + struct.pack('>HH', qtype, 1)
sent = answered = 0
end = time.time() + ${FLOOD_SECONDS}
while time.time() < end:
    k = sent % 3
    name, qtype = ('api.openai.com', 1) if k == 0 else ('api.openai.com', 16) if k == 1 else ('x%d.attacker.com' % sent, 1)
    s.sendto(query(sent, name, qtype), (gw, 53))
    sent += 1
    try:
        while True:
            d, _ = s.recvfrom(4096)
            if struct.unpack('>H', d[:2])[0] == (sent - 1) & 0xffff:
                answered += 1
                break
    except socket.timeout:
        pass
print(sent, answered)
`;

const ofExecution = (events: readonly AuditEventInput[], execution: string) => events.filter((e) => e.actor.execution === execution);
/** Questions the log accounts for: one per `net.dns` event plus the counts of the summaries. */
const questionsAccounted = (events: readonly AuditEventInput[]) =>
  events.filter((e) => e.action === 'net.dns').length +
  events.filter((e) => e.action === 'net.dns.summary').reduce((n, e) => n + (e.payload.count as number), 0);

describe('egress gateway: a DNS flood', { ...requirementsOrSkip(['ip', 'nft', 'python3']), timeout: 120_000 }, () => {
  let inet: FakeInternet;
  before(async () => {
    inet = await startFakeInternet();
  });
  after(async () => {
    await inet?.close();
  });

  it('regression (issue 8): refused questions are folded into summaries, the events stay bounded and the counts add up to the questions sent', async (t) => {
    const audit = new MemorySink();
    const net = await startSandboxNetwork({
      network: networkPolicy(['api.openai.com'], RATE),
      executionId: 'exec-dnsflood',
      agent: 'flood',
      audit,
      config,
    });
    let sent: number;
    let answered: number;
    try {
      const r = await inNetns(net.netnsName, ['python3', '-c', FLOOD, net.gatewayAddress], {}, 30_000);
      assert.equal(r.code, 0, r.stderr);
      [sent, answered] = r.stdout.trim().split(' ').map(Number) as [number, number];
    } finally {
      await net.close(); // writes the last summaries
    }
    assert.ok(sent > 1000, `a flood: ${sent} questions in ${FLOOD_SECONDS} s`);
    assert.equal(answered, sent, 'every question was answered (REFUSED when rate limited)');
    const events = ofExecution(audit.events, 'exec-dnsflood').filter((e) => e.action.startsWith('net.dns'));
    t.diagnostic(
      `${sent} questions in ${FLOOD_SECONDS} s -> ${events.length} DNS events (${events.filter((e) => e.action === 'net.dns.summary').length} summaries)`,
    );
    assert.ok(events.length < 300, `${events.length} events for ${sent} questions`);
    assert.equal(questionsAccounted(events), sent);
    // the rate limit and the policy were both applied, and both are in the summaries
    const summaries = events.filter((e) => e.action === 'net.dns.summary');
    assert.ok(summaries.some((e) => e.reason === 'gateway.rate_limited'));
    assert.ok(
      events.some(
        (e) => e.action === 'net.dns' && e.decision === 'allow' && e.payload.name === 'api.openai.com' && e.payload.rcode === 'NOERROR',
      ),
    );
    assert.ok(events.some((e) => e.action === 'net.dns' && e.decision === 'deny' && e.reason === 'net.denied.not_in_allowlist'));
    assert.ok(events.some((e) => e.action === 'net.dns' && e.decision === 'deny' && e.reason === 'gateway.dns_type_refused'));
  });

  it("past the execution's audit budget: one audit.budget_exhausted event, the agent is stopped (host policy stop), the rest counted", async () => {
    const audit = new MemorySink();
    const stops: AuditEventInput[] = [];
    const sink = new BudgetedSink(
      audit,
      { agent: 'flood', execution: 'exec-dnsbudget' },
      { maxEvents: 40, maxBytes: 1_000_000, onExhausted: 'stop' },
      () => performance.now(),
      (e) => stops.push(e),
    );
    const net = await startSandboxNetwork({
      network: networkPolicy(['api.openai.com'], RATE),
      executionId: 'exec-dnsbudget',
      agent: 'flood',
      audit: sink,
      config,
    });
    let sent: number;
    try {
      const r = await inNetns(net.netnsName, ['python3', '-c', FLOOD, net.gatewayAddress], {}, 30_000);
      assert.equal(r.code, 0, r.stderr);
      sent = Number(r.stdout.trim().split(' ')[0]);
    } finally {
      await net.close();
      await sink.finish();
    }
    const events = ofExecution(audit.events, 'exec-dnsbudget');
    assert.equal(stops.length, 1, 'the owner is told once to stop the agent');
    const exhausted = events.filter((e) => e.action === 'audit.budget_exhausted');
    assert.equal(exhausted.length, 1);
    assert.deepEqual([exhausted[0]!.decision, exhausted[0]!.payload.maxEvents, exhausted[0]!.payload.onExhausted], ['deny', 40, 'stop']);
    assert.equal(events.length, 40 + 2, 'the budget, the exhaustion event and the final counts');
    const folded = events.at(-1)!;
    assert.equal(folded.action, 'audit.budget_folded');
    // what the gateway meant to write adds up: written DNS events and summaries plus the folded ones
    const foldedDns = (folded.payload.byAction as Array<{ action: string; count: number }>)
      .filter((x) => x.action === 'net.dns')
      .reduce((n, x) => n + x.count, 0);
    const foldedSummaries = (folded.payload.byAction as Array<{ action: string }>).some((x) => x.action === 'net.dns.summary');
    assert.ok(foldedDns > 0, 'DNS events past the budget are counted');
    assert.ok(sent > 1000);
    assert.equal(foldedSummaries, true, 'summaries past the budget are counted too');
  });
});
