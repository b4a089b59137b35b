/**
 * /metrics in the Prometheus text exposition format (0.0.4): executions by status (from the
 * store), the engine's start latency as histograms split warm/cold, pool sizes, gateway denials
 * and audit appends (counted by the sink the server and the engine append through), and
 * authentication failures by reason.
 *
 * LIMITATION: executions by status counts at most `STATUS_SCAN_LIMIT` of the newest rows per
 * status (the Store interface has no count); the gauge saturates there.
 */
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import type { EngineMetrics, PoolStatus } from '../orchestrator/types.js';
import { EXECUTION_STATUSES } from './schemas.js';
import type { Store } from './store/types.js';

export const STATUS_SCAN_LIMIT = 1000;
/** Start-latency buckets (seconds): warm targets are milliseconds, cold tens of milliseconds. */
const BUCKETS = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Actions the egress gateway audits (a deny among them is a gateway denial). */
const GATEWAY_ACTION = /^(net|dns|http|socks|tls)\./;

export class Metrics {
  readonly authFailures = new Map<string, number>();
  auditAppended = 0;
  gatewayDenials = 0;

  countAuthFailure(reason: string): void {
    this.authFailures.set(reason, (this.authFailures.get(reason) ?? 0) + 1);
  }

  /** Wraps the audit sink everything appends through, counting appends and gateway denials. */
  countingSink(inner: AuditSink): AuditSink {
    return {
      append: (e: AuditEventInput) => {
        this.auditAppended += 1;
        if (e.decision === 'deny' && GATEWAY_ACTION.test(e.action)) this.gatewayDenials += 1;
        return inner.append(e);
      },
    };
  }

  async render(store: Store, engine: { metrics(): EngineMetrics; pools(): PoolStatus[] } | undefined): Promise<string> {
    const out: string[] = [];
    const family = (name: string, type: string, help: string): void => void out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    family('aegis_executions', 'gauge', `executions in the store by status (at most ${STATUS_SCAN_LIMIT} counted per status)`);
    for (const status of EXECUTION_STATUSES) {
      const n = (await store.listExecutions({ status, limit: STATUS_SCAN_LIMIT })).length;
      out.push(`aegis_executions{status="${status}"} ${n}`);
    }
    const m = engine?.metrics();
    family('aegis_execution_start_seconds', 'histogram', 'time from execute() to the agent start, by how the sandbox was obtained');
    for (const kind of ['warm', 'cold'] as const) {
      const xs = m?.startLatency[kind] ?? [];
      for (const b of BUCKETS)
        out.push(`aegis_execution_start_seconds_bucket{start="${kind}",le="${b}"} ${xs.filter((x) => x <= b).length}`);
      out.push(`aegis_execution_start_seconds_bucket{start="${kind}",le="+Inf"} ${xs.length}`);
      out.push(`aegis_execution_start_seconds_sum{start="${kind}"} ${xs.reduce((a, b) => a + b, 0)}`);
      out.push(`aegis_execution_start_seconds_count{start="${kind}"} ${xs.length}`);
    }
    family('aegis_executions_running', 'gauge', 'executions running on this worker');
    out.push(`aegis_executions_running ${m?.running ?? 0}`);
    family('aegis_pool_warm', 'gauge', 'warm sandboxes ready, per agent');
    family('aegis_pool_target', 'gauge', 'warm pool target, per agent');
    for (const p of engine?.pools() ?? []) {
      out.push(`aegis_pool_warm{agent="${p.agent}"} ${p.warm}`);
      out.push(`aegis_pool_target{agent="${p.agent}"} ${p.target}`);
    }
    family('aegis_gateway_denials_total', 'counter', 'egress attempts the gateway refused');
    out.push(`aegis_gateway_denials_total ${this.gatewayDenials}`);
    family('aegis_audit_events_appended_total', 'counter', 'audit events appended by this server (rate() gives the append rate)');
    out.push(`aegis_audit_events_appended_total ${this.auditAppended}`);
    family('aegis_auth_failures_total', 'counter', 'API authentication failures by reason');
    for (const [reason, n] of [...this.authFailures].sort()) out.push(`aegis_auth_failures_total{reason="${reason}"} ${n}`);
    return `${out.join('\n')}\n`;
  }
}
