/**
 * The audit budget of one execution: how many events, and how many bytes of them, a run may
 * write to the audit log. Without it an agent that makes the gateway refuse things (DNS
 * questions, connections, requests) fills the disk under $AEGIS_HOME and buries what matters.
 *
 * `AuditBudget` is the accounting (pure: sizes are given, the clock is injected);
 * `BudgetedSink` wraps the run's AuditSink with it (the sandbox and the gateway see the log only
 * through that type). Past the budget:
 *
 * - one `audit.budget_exhausted` event (decision deny) is written, naming the limits, the usage
 *   and the host policy (`onExhausted`);
 * - every further event is counted instead of written (per action, decision and reason), and
 *   `finish()` writes the counts as one `audit.budget_folded` event before the log closes;
 * - with `onExhausted: 'stop'` (the default: fail secure, an agent whose actions are no longer
 *   logged one by one does not go on) the owner's `onExhausted` callback stops the agent; with
 *   `'continue'` the agent runs on with its events counted only.
 *
 * ARCHITECTURE NOTE: the run's own lifecycle events (`run.*`, `resource.usage`, `audit.*`) are
 * written even past the budget and counted in its usage: the runner writes a handful of them per
 * run, the agent cannot cause more, and they are what says how the run ended.
 *
 * LIMITATION: bytes are those of the event's JSON as handed to the log; the stored entry is
 * larger (index, envelope, AES-GCM nonce and tag, base64): roughly 1.5-2x plus ~200 bytes.
 */
import type { AuditActor, AuditEventInput, AuditSink } from './event.js';
import { AuditError } from './errors.js';

export type OnBudgetExhausted = 'stop' | 'continue';

export interface AuditBudgetLimits {
  /** Events an execution may write (lifecycle events included). */
  readonly maxEvents: number;
  /** Bytes of event JSON an execution may write. */
  readonly maxBytes: number;
  /** Host policy once the budget is used up. */
  readonly onExhausted: OnBudgetExhausted;
}

/** Defaults: far above what an agent's normal work writes (tens to a few thousand events). */
export const DEFAULT_AUDIT_BUDGET: AuditBudgetLimits = { maxEvents: 50_000, maxBytes: 32 * 1024 * 1024, onExhausted: 'stop' };

/** Distinct (action, decision, reason) keys counted after exhaustion; the rest are counted as one. */
const MAX_FOLDED_KEYS = 256;

/** Actions written even past the budget (see the ARCHITECTURE NOTE). */
export function isLifecycleAction(action: string): boolean {
  return action.startsWith('run.') || action.startsWith('audit.') || action === 'resource.usage';
}

export type Charge =
  /** Within the budget: write the event. */
  | 'write'
  /** This event is the first past the budget: write `exhaustedEvent()` (and count this one). */
  | 'exhausted'
  /** Past the budget: count only. */
  | 'fold';

export class AuditBudget {
  private events = 0;
  private bytes = 0;
  private exhaustedAt: number | null = null;
  private exhaustedBy: string | null = null;
  private readonly folded = new Map<string, { action: string; decision: string; reason: string | null; count: number; bytes: number }>();
  private readonly started: number;

  constructor(
    readonly limits: AuditBudgetLimits,
    private readonly clock: () => number,
  ) {
    this.started = clock();
  }

  get exhausted(): boolean {
    return this.exhaustedAt !== null;
  }

  /** Account for one event of `bytes` bytes and say what to do with it. */
  charge(e: Pick<AuditEventInput, 'action' | 'decision' | 'reason'>, bytes: number): Charge {
    if (isLifecycleAction(e.action)) {
      this.events++;
      this.bytes += bytes;
      return 'write';
    }
    if (this.exhaustedAt === null && this.events + 1 <= this.limits.maxEvents && this.bytes + bytes <= this.limits.maxBytes) {
      this.events++;
      this.bytes += bytes;
      return 'write';
    }
    this.fold(e, bytes);
    if (this.exhaustedAt !== null) return 'fold';
    this.exhaustedAt = this.clock();
    this.exhaustedBy = e.action;
    return 'exhausted';
  }

  private fold(e: Pick<AuditEventInput, 'action' | 'decision' | 'reason'>, bytes: number): void {
    let key = `${e.action}\0${e.decision}\0${e.reason ?? ''}`;
    if (!this.folded.has(key) && this.folded.size >= MAX_FOLDED_KEYS) key = '\0other';
    const had = this.folded.get(key);
    if (had) {
      had.count++;
      had.bytes += bytes;
    } else if (key === '\0other') this.folded.set(key, { action: '(other)', decision: '(other)', reason: null, count: 1, bytes });
    else this.folded.set(key, { action: e.action, decision: e.decision, reason: e.reason ?? null, count: 1, bytes });
  }

  /** The `audit.budget_exhausted` event (after `charge` returned 'exhausted'). */
  exhaustedEvent(actor: AuditActor): AuditEventInput {
    const l = this.limits;
    const then = l.onExhausted === 'stop' ? 'the agent is stopped' : 'the agent goes on; its further events are counted, not written';
    return {
      actor,
      action: 'audit.budget_exhausted',
      decision: 'deny',
      reason: 'audit.budget_exhausted',
      payload: {
        events: this.events,
        bytes: this.bytes,
        maxEvents: l.maxEvents,
        maxBytes: l.maxBytes,
        onExhausted: l.onExhausted,
        trigger: this.exhaustedBy,
        elapsedMs: Math.round((this.exhaustedAt ?? this.clock()) - this.started),
        detail: `the audit budget of this execution (${l.maxEvents} events, ${l.maxBytes} bytes) is used up (${this.events} events, ${this.bytes} bytes written): ${then}`,
      },
    };
  }

  /** The `audit.budget_folded` event with the counts of events not written, or null if none. */
  foldedEvent(actor: AuditActor): AuditEventInput | null {
    if (this.folded.size === 0) return null;
    const byAction = [...this.folded.values()].sort((a, b) => b.count - a.count);
    const count = byAction.reduce((n, x) => n + x.count, 0);
    const bytes = byAction.reduce((n, x) => n + x.bytes, 0);
    return {
      actor,
      action: 'audit.budget_folded',
      decision: 'deny',
      reason: 'audit.budget_exhausted',
      payload: { count, bytes, byAction, detail: `${count} events (${bytes} bytes) past the audit budget were counted, not written` },
    };
  }
}

/**
 * The run's sink with the budget applied. `onExhausted` is called once, when the budget runs
 * out and the host policy says `stop` (`aegis run` stops the agent then).
 */
export class BudgetedSink implements AuditSink {
  private readonly budget: AuditBudget;
  private finished = false;

  constructor(
    private readonly inner: AuditSink,
    private readonly actor: AuditActor,
    limits: AuditBudgetLimits,
    clock: () => number,
    private readonly onExhausted: (e: AuditEventInput) => void = () => undefined,
  ) {
    this.budget = new AuditBudget(limits, clock);
  }

  get exhausted(): boolean {
    return this.budget.exhausted;
  }

  append(event: AuditEventInput): void | Promise<void> {
    const verdict = this.budget.charge(event, Buffer.byteLength(JSON.stringify(event)));
    if (verdict === 'write') return this.inner.append(event);
    if (verdict === 'fold') return undefined;
    const e = this.budget.exhaustedEvent(this.actor);
    const written = this.inner.append(e);
    if (this.budget.limits.onExhausted === 'stop') this.onExhausted(e);
    return written;
  }

  /** Write the counts of the events past the budget (call once, after the last producer stopped). */
  async finish(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    const e = this.budget.foldedEvent(this.actor);
    if (e) await this.inner.append(e);
  }
}

/**
 * The host operator's budget (pure: the environment is passed in). Read at the CLI edge:
 *   AEGIS_AUDIT_BUDGET_EVENTS        events per execution (default 50000)
 *   AEGIS_AUDIT_BUDGET_BYTES         bytes of event JSON per execution (default 33554432)
 *   AEGIS_AUDIT_BUDGET_ON_EXHAUSTED  `stop` (default) or `continue`
 * Anything else is AuditError('audit.budget_invalid'): the run does not start.
 */
export function parseAuditBudget(env: Readonly<Record<string, string | undefined>>): AuditBudgetLimits {
  const count = (name: string, dflt: number): number => {
    const v = env[name];
    if (v === undefined || v === '') return dflt;
    if (!/^[0-9]{1,15}$/.test(v) || Number(v) < 1)
      throw new AuditError('audit.budget_invalid', `${name}: "${v}" is not a positive integer`);
    return Number(v);
  };
  const on = env.AEGIS_AUDIT_BUDGET_ON_EXHAUSTED;
  if (on !== undefined && on !== '' && on !== 'stop' && on !== 'continue') {
    throw new AuditError('audit.budget_invalid', `AEGIS_AUDIT_BUDGET_ON_EXHAUSTED: "${on}" is neither stop nor continue`);
  }
  return {
    maxEvents: count('AEGIS_AUDIT_BUDGET_EVENTS', DEFAULT_AUDIT_BUDGET.maxEvents),
    maxBytes: count('AEGIS_AUDIT_BUDGET_BYTES', DEFAULT_AUDIT_BUDGET.maxBytes),
    onExhausted: on === 'continue' ? 'continue' : 'stop',
  };
}
