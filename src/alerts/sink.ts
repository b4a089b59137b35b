/**
 * Raising alerts as a run's events are appended (adapter around the pure engine). The sink
 * sits between the producers (sandbox, gateway) and the audit log: it gives each event its id
 * and time (so an alert can name the events that raised it), forwards it, evaluates it, and
 * appends every alert as an `alert.raised` event to the same log, so alerts are tamper-evident
 * too. Delivery elsewhere (`deliver`, given the alert and the id of its `alert.raised` event)
 * never blocks or fails the append path.
 *
 * `alert.raised`: actor = the triggering event's actor; decision `info`; reason = the rule id;
 * payload: rule, title, level, kind, summary, eventIds, suppressed, and for correlations the
 * group and count.
 */
import { randomFillSync } from 'node:crypto';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import { uuidv7Generator } from '../audit/event-id.js';
import type { Alert, AlertEngine, EngineEvent } from './engine.js';

export function alertEvent(a: Alert): AuditEventInput {
  return {
    actor: a.actor,
    action: 'alert.raised',
    decision: 'info',
    reason: a.rule.id,
    payload: {
      rule: a.rule.id,
      title: a.rule.title,
      level: a.rule.level,
      kind: a.rule.kind,
      summary: a.summary,
      eventIds: a.eventIds,
      suppressed: a.suppressed,
      ...(a.group !== undefined ? { group: a.group } : {}),
      ...(a.count !== undefined ? { count: a.count } : {}),
    },
  };
}

export class AlertingSink implements AuditSink {
  private readonly newId: () => string;
  /** Alerts raised so far (for the run summary). */
  raised = 0;
  constructor(
    private readonly inner: AuditSink,
    private readonly engine: AlertEngine,
    private readonly deliver: (a: Alert, eventId: string) => void = () => undefined,
    private readonly now: () => number = Date.now,
  ) {
    this.newId = uuidv7Generator(now, (b) => randomFillSync(b));
  }

  append(e: AuditEventInput): void | Promise<void> {
    const full: AuditEventInput = { ...e, id: e.id ?? this.newId(), time: e.time ?? new Date(this.now()).toISOString() };
    const done = this.inner.append(full);
    for (const a of this.engine.evaluate(full as EngineEvent)) {
      this.raised++;
      const id = this.newId();
      const appended = this.inner.append({ ...alertEvent(a), id, time: new Date(this.now()).toISOString() });
      if (appended instanceof Promise) appended.catch(() => undefined); // the log reports its own failures
      try {
        this.deliver(a, id);
      } catch {
        // delivery is best effort; the alert is in the log
      }
    }
    return done;
  }

  /**
   * Evaluates an event that cannot go to the log (the log itself failed: `audit.write_failed`)
   * and hands its alerts to `deliver` only. Returns the alerts raised.
   */
  raiseOutsideLog(e: AuditEventInput): Alert[] {
    const full = { ...e, id: e.id ?? this.newId(), time: e.time ?? new Date(this.now()).toISOString() } as EngineEvent;
    const alerts = this.engine.evaluate(full);
    for (const a of alerts) {
      this.raised++;
      try {
        this.deliver(a, this.newId());
      } catch {
        // best effort: there is no log to fall back on here
      }
    }
    return alerts;
  }
}
