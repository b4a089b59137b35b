/**
 * Alert engine benchmark: events evaluated per second by the default pack on one core (a mix
 * shaped like a real run: mostly allowed DNS and connections, some denials, lifecycle events),
 * and the time from an event's append to its alert on a sink (the AlertingSink in front of an
 * in-memory log, the path `aegis run` takes). Prints medians.
 *
 *   npm run build && node dist/bench/alerts.js
 */
import type { AuditEventInput } from '../src/audit/event.js';
import { AlertEngine, type EngineEvent } from '../src/alerts/engine.js';
import { DEFAULT_PACK, loadRules } from '../src/alerts/load.js';
import { AlertingSink } from '../src/alerts/sink.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

const rules = await loadRules([DEFAULT_PACK]);
const N = 200_000;
const base = Date.UTC(2026, 10, 30);
const events: EngineEvent[] = Array.from({ length: N }, (_, i) => {
  const time = new Date(base + i).toISOString();
  const actor = { agent: 'bench', execution: `exec-${i % 50}` };
  const k = i % 20;
  if (k < 8)
    return {
      id: `e${i}`,
      time,
      actor,
      action: 'net.dns',
      decision: 'allow',
      reason: 'net.allowed.exact',
      payload: { name: `api${i % 7}.openai.com`, type: 'A', answers: ['198.51.100.10'] },
    };
  if (k < 15)
    return {
      id: `e${i}`,
      time,
      actor,
      action: 'net.connect',
      decision: 'allow',
      reason: 'net.allowed.exact',
      payload: { host: 'api.openai.com', port: 443, mode: 'transparent-tls', bytesSent: 512 },
    };
  if (k < 17)
    return {
      id: `e${i}`,
      time,
      actor,
      action: 'http.request',
      decision: 'allow',
      payload: { url: 'http://api.openai.com/v1', method: 'POST' },
    };
  if (k < 19)
    return {
      id: `e${i}`,
      time,
      actor,
      action: 'net.connect',
      decision: 'deny',
      reason: 'net.denied.not_in_allowlist',
      payload: { host: `h${i % 13}.attacker.com`, port: 443 },
    };
  return {
    id: `e${i}`,
    time,
    actor,
    action: 'resource.usage',
    decision: 'info',
    payload: { cpuMs: 10, maxMemoryBytes: 1e7, durationMs: 100, pidsLimitHit: false },
  };
});

const rates: number[] = [];
let alerts = 0;
for (let round = 0; round < 7; round++) {
  const engine = new AlertEngine(rules);
  const t0 = process.hrtime.bigint();
  for (const e of events) alerts += engine.evaluate(e).length;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  rates.push(N / s);
}
console.log(
  `default pack (${rules.length} rules), ${N} events x 7 rounds: median ${Math.round(median(rates)).toLocaleString('en')} events/s (min ${Math.round(Math.min(...rates)).toLocaleString('en')}); ${alerts / 7} alerts per round (suppressed repeats folded)`,
);

// Append -> alert delivered, through the sink aegis run uses.
const latencies: number[] = [];
const logged: AuditEventInput[] = [];
let appendedAt = 0n;
const sink = new AlertingSink({ append: (e: AuditEventInput) => void logged.push(e) }, new AlertEngine(rules, { suppressMs: 0 }), () =>
  latencies.push(Number(process.hrtime.bigint() - appendedAt) / 1e6),
);
for (let i = 0; i < 20_000; i++) {
  appendedAt = process.hrtime.bigint();
  void sink.append({
    actor: { agent: 'bench', execution: `x${i % 5}` },
    action: 'net.connect',
    decision: 'deny',
    reason: 'net.denied.not_in_allowlist',
    payload: { host: 'attacker.com', port: 443 },
  });
}
console.log(
  `append -> alert on the sink: p50 ${median(latencies).toFixed(4)} ms, p99 ${pct(latencies, 0.99).toFixed(4)} ms over ${latencies.length} alerts`,
);
