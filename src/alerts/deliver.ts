/**
 * Delivery of alerts beyond the audit log (adapter): the record every sink sends, and the
 * bounded, retrying queue that the webhook and syslog sinks share.
 *
 * ARCHITECTURE NOTE: delivery never blocks or fails the append path. `send` only puts the alert
 * on an in-memory queue and returns; one worker per sink sends in order, retrying with
 * exponential backoff and full jitter up to `maxAttempts`. The alert is already in the audit log
 * (AlertingSink appends it first), so a delivery that fails loses nothing from the log: it is
 * counted (`failed`), and a queue that overflows drops its oldest alert (`dropped`).
 * LIMITATION: the queue lives in memory. Alerts still queued when AEGIS dies are not delivered
 * (they remain in the log; `aegis alerts replay` finds them again).
 */
import type { Alert } from './engine.js';

/** What a receiver gets for each alert (webhook body, syslog MSG). `id` is the `alert.raised` event's id in the log. */
export interface AlertRecord {
  readonly id: string;
  readonly time: string;
  readonly rule: string;
  readonly title: string;
  readonly level: Alert['rule']['level'];
  readonly kind: Alert['rule']['kind'];
  readonly summary: string;
  readonly actor: Alert['actor'];
  readonly eventIds: readonly string[];
  readonly suppressed: number;
  readonly group?: Readonly<Record<string, string>>;
  readonly count?: number;
}

export function alertRecord(a: Alert, id: string): AlertRecord {
  return {
    id,
    time: a.time,
    rule: a.rule.id,
    title: a.rule.title,
    level: a.rule.level,
    kind: a.rule.kind,
    summary: a.summary,
    actor: a.actor,
    eventIds: a.eventIds,
    suppressed: a.suppressed,
    ...(a.group !== undefined ? { group: a.group } : {}),
    ...(a.count !== undefined ? { count: a.count } : {}),
  };
}

export interface DeliveryStats {
  /** Alerts the receiver accepted. */
  delivered: number;
  /** Attempts that failed and were tried again. */
  retried: number;
  /** Alerts given up on: attempts exhausted, a permanent refusal, or still queued when the sink closed. */
  failed: number;
  /** Alerts dropped because the queue was full (the oldest go first). */
  dropped: number;
}

/** One delivery target. */
export interface AlertSinkAdapter {
  /** For messages: `webhook https://...`, `syslog tcp://...`. */
  readonly name: string;
  readonly stats: DeliveryStats;
  /** Queues the alert; never throws, never waits. */
  send(record: AlertRecord): void;
  /** Waits until the queue is empty or `timeoutMs` passed; returns how many alerts are still undelivered. */
  flush(timeoutMs: number): Promise<number>;
  /** Stops: what is still queued counts as failed; open connections are closed. */
  close(): void;
}

/** A failure the receiver will answer the same way again (no retry). */
export class PermanentDeliveryError extends Error {}

export interface RetryOptions {
  /** Alerts waiting at most (besides the one being sent); beyond, the oldest is dropped (default 1000). */
  readonly maxQueue?: number;
  /** Attempts per alert, the first included (default 5). */
  readonly maxAttempts?: number;
  /** Backoff before retry n (1-based): random in [0, min(maxDelayMs, baseDelayMs * 2^(n-1))] (defaults 200 ms, 10 s). */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Random in [0, 1) for the jitter (default Math.random). */
  readonly random?: () => number;
}

/** The full-jitter exponential backoff before retry `n` (1-based). */
export function backoffMs(n: number, base: number, max: number, random: () => number): number {
  return Math.floor(random() * Math.min(max, base * 2 ** Math.min(n - 1, 30)));
}

/**
 * The queue and worker a sink builds on: subclasses implement `transmit` (resolve = accepted,
 * reject = retry, reject with PermanentDeliveryError = give up now) and `shutdown`.
 */
export abstract class RetryingSink<T> implements AlertSinkAdapter {
  readonly stats: DeliveryStats = { delivered: 0, retried: 0, failed: 0, dropped: 0 };
  private readonly queue: T[] = [];
  private busy = false;
  /** The alert being sent (taken off the queue, so an overflow never drops it). */
  private inFlight = false;
  private closed = false;
  private wakeRetry: (() => void) | null = null;
  private readonly idleWaiters = new Set<() => void>();
  private readonly maxQueue: number;
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly random: () => number;

  constructor(
    readonly name: string,
    o: RetryOptions = {},
  ) {
    this.maxQueue = o.maxQueue ?? 1000;
    this.maxAttempts = o.maxAttempts ?? 5;
    this.baseDelayMs = o.baseDelayMs ?? 200;
    this.maxDelayMs = o.maxDelayMs ?? 10_000;
    this.random = o.random ?? Math.random;
  }

  protected abstract encode(record: AlertRecord): T;
  protected abstract transmit(item: T): Promise<void>;
  protected abstract shutdown(): void;

  send(record: AlertRecord): void {
    if (this.closed) {
      this.stats.failed++;
      return;
    }
    let item: T;
    try {
      item = this.encode(record);
    } catch {
      this.stats.failed++;
      return;
    }
    this.queue.push(item);
    while (this.queue.length > this.maxQueue) {
      this.queue.shift();
      this.stats.dropped++;
    }
    if (!this.busy) void this.work();
  }

  /** Alerts not yet delivered or given up on (queued, or being sent). */
  get pending(): number {
    return this.queue.length + (this.inFlight ? 1 : 0);
  }

  private async work(): Promise<void> {
    this.busy = true;
    try {
      while (!this.closed && this.queue.length > 0) {
        const item = this.queue.shift() as T;
        this.inFlight = true;
        let done = false;
        for (let attempt = 1; !done && !this.closed; attempt++) {
          try {
            await this.transmit(item);
            if (this.closed) break; // close() already counted it as failed
            this.stats.delivered++;
            done = true;
          } catch (err) {
            if (this.closed) break;
            if (err instanceof PermanentDeliveryError || attempt >= this.maxAttempts) {
              this.stats.failed++;
              done = true;
            } else {
              this.stats.retried++;
              await this.sleep(backoffMs(attempt, this.baseDelayMs, this.maxDelayMs, this.random));
            }
          }
        }
        this.inFlight = false;
      }
    } finally {
      this.inFlight = false;
      this.busy = false;
      for (const w of this.idleWaiters) w();
    }
  }

  /** A timer that does not keep the process alive, cut short by close(). */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wakeRetry = null;
        resolve();
      }, ms);
      t.unref();
      this.wakeRetry = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  async flush(timeoutMs: number): Promise<number> {
    if (this.busy || this.queue.length > 0) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          this.idleWaiters.delete(done);
          resolve();
        };
        // Kept referenced: the process stays up for (at most) this wait, so retries can still run.
        const t = setTimeout(done, timeoutMs);
        this.idleWaiters.add(done);
      });
    }
    return this.pending;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stats.failed += this.pending;
    this.queue.length = 0;
    this.wakeRetry?.();
    try {
      this.shutdown();
    } catch {
      // closing is best effort
    }
  }
}

/** Every configured sink behind one `deliver` callback, with summed counters. */
export class AlertDelivery {
  constructor(readonly sinks: readonly AlertSinkAdapter[]) {}

  send(record: AlertRecord): void {
    for (const s of this.sinks) s.send(record);
  }

  /** Waits for every sink (together, at most `timeoutMs`), then closes them; returns the undelivered count per sink. */
  async finish(timeoutMs: number): Promise<Array<{ name: string; undelivered: number }>> {
    const left = await Promise.all(this.sinks.map(async (s) => ({ name: s.name, undelivered: await s.flush(timeoutMs) })));
    for (const s of this.sinks) s.close();
    return left;
  }

  get stats(): DeliveryStats {
    const t: DeliveryStats = { delivered: 0, retried: 0, failed: 0, dropped: 0 };
    for (const s of this.sinks) {
      t.delivered += s.stats.delivered;
      t.retried += s.stats.retried;
      t.failed += s.stats.failed;
      t.dropped += s.stats.dropped;
    }
    return t;
  }
}
