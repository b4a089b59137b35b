/**
 * The audit sink of one sandbox in the engine, between the run's services and the server's
 * long-lived log: it shows every event of the execution to the observer, and, for a warm sandbox
 * prepared before its execution existed, rewrites the sandbox's provisional id in `actor.execution`
 * to the execution's id once it is claimed (the gateway was started under the provisional id).
 */
import type { AuditEventInput, AuditSink } from '../audit/event.js';

export class ExecutionSink implements AuditSink {
  private execution: string | null = null;
  private observe: ((e: AuditEventInput) => void) | null = null;

  constructor(
    private readonly log: AuditSink,
    /** The id the sandbox's services were started under. */
    private readonly provisionalId: string,
  ) {}

  /** From now on: events carry `executionId` and are shown to `observe` (which must not throw; it is guarded). */
  bind(executionId: string, observe: (e: AuditEventInput) => void): void {
    this.execution = executionId;
    this.observe = observe;
  }

  append(event: AuditEventInput): void | Promise<void> {
    let e = event;
    if (this.execution !== null && e.actor.execution === this.provisionalId && this.execution !== this.provisionalId)
      e = { ...e, actor: { ...e.actor, execution: this.execution } };
    if (this.observe !== null) {
      try {
        this.observe(e);
      } catch {
        /* an observer's failure is its own (types.ts: the engine ignores what they throw) */
      }
    }
    return this.log.append(e);
  }
}
