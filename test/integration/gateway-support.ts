/**
 * Helpers shared by the gateway integration tests and benchmark: requirement checks, running
 * clients inside a sandbox namespace, building a NetworkPolicy from manifest-style entries,
 * an in-memory audit sink.
 */
import { execFile, execFileSync } from 'node:child_process';
import type { AuditEventInput, AuditSink } from '../../src/audit/event.js';
import { parseAllowEntry } from '../../src/policy/host.js';
import type { NetRule, NetworkPolicy } from '../../src/policy/types.js';

/** What the gateway tests need on the machine. Missing with CI=true is a failure, not a skip. */
export function missingRequirements(tools: readonly string[] = ['ip', 'nft', 'curl', 'openssl', 'python3', 'dig']): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  for (const t of tools) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    } catch {
      missing.push(t);
    }
  }
  return missing;
}

/** `{ skip }` option for describe(): skip locally, throw under CI so the run fails. */
export function requirementsOrSkip(tools?: readonly string[]): { skip: string | false } {
  const missing = missingRequirements(tools);
  if (missing.length === 0) return { skip: false };
  if (process.env.CI === 'true')
    throw new Error(`gateway integration tests need: ${missing.join(', ')} (CI=true: failing instead of skipping)`);
  return { skip: `missing: ${missing.join(', ')}` };
}

export function networkPolicy(
  entries: readonly string[],
  rateLimit = { perSecond: 50, burst: 100 },
  byteQuota: number | null = null,
): NetworkPolicy {
  const rules: NetRule[] = entries.map((e) => {
    const r = parseAllowEntry(e);
    if (!r.ok) throw new Error(`bad test allow entry ${e}: ${r.message}`);
    return r.rule;
  });
  return { rules, rateLimit, byteQuota };
}

export class MemorySink implements AuditSink {
  readonly events: AuditEventInput[] = [];
  append(e: AuditEventInput): void {
    this.events.push(e);
  }
  /** Like find(), waiting up to `ms` for a match (tunnel events are written when the tunnel closes). */
  async eventually(
    action: string,
    decision: 'allow' | 'deny' | 'error',
    where: Record<string, unknown> = {},
    ms = 2000,
  ): Promise<AuditEventInput[]> {
    const end = Date.now() + ms;
    for (;;) {
      const found = this.find(action, decision, where);
      if (found.length > 0 || Date.now() > end) return found;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  /** Events matching `action` and every payload field in `where`. */
  find(action: string, decision: 'allow' | 'deny' | 'error', where: Record<string, unknown> = {}): AuditEventInput[] {
    return this.events.filter(
      (e) =>
        e.action === action &&
        e.decision === decision &&
        Object.entries(where).every(([k, v]) => (k === 'reason' ? e.reason === v : e.payload[k] === v)),
    );
  }
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run `cmd` inside network namespace `ns` with `env` added; bounded by `timeoutMs`. */
export function inNetns(
  ns: string,
  cmd: readonly string[],
  env: Record<string, string> = {},
  timeoutMs = 15_000,
  input?: string,
): Promise<RunResult> {
  const base: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    LANG: 'C.UTF-8',
  };
  return new Promise((resolve) => {
    const child = execFile(
      'ip',
      ['netns', 'exec', ns, ...cmd],
      { env: { ...base, ...env }, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 124) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}
