/**
 * Folding of refused DNS questions into counts (pure: the clock is injected).
 *
 * Every DNS question the gateway refuses (rate limit, policy, question type, malformed, upstream
 * failure, rebinding guard, gateway closed) costs the agent nothing but a packet, so one event
 * per refusal lets an agent fill the disk under $AEGIS_HOME and bury what matters (a 3-second
 * UDP flood under `rate_limit: 10/s` once wrote ~60,000 events). As `net.blocked` does for
 * dropped packets, refusals are kept in full only at first and summarised after that:
 *
 * - the first `firstPerKey` refusals of each (name, type, reason) are `net.dns` events in full,
 *   at most `fullPerSecond` of them a second over all keys (a token bucket: a flood of random
 *   names does not get one full event per name), and only for the first `maxKeys` distinct keys;
 * - every other refusal is counted; `flush(now)` (every second while the gateway runs, and at
 *   close) turns the counts into one `net.dns.summary` event per reason that grew, listing the
 *   `listed` (name, type) pairs with the most questions and counting the rest
 *   (`questionsOmitted`), so the counts of the full events and the summaries add up to the
 *   questions refused.
 *
 * Allowed questions are not folded: each costs a token of the sandbox's DNS bucket (5x the
 * policy's rate), so they are bounded by the rate limit, and the run's audit budget
 * (src/audit/budget.ts) bounds everything over the whole execution.
 *
 * ARCHITECTURE NOTE: reasons are a closed set (policy DenyReason and GatewayReason), so a flush
 * writes at most that many events (about fifteen), and folding is bounded in memory: at most
 * `maxKeys` keys remembered and `maxPendingPerReason` (name, type) pairs counted per reason and
 * interval (later pairs are counted in `questionsOmitted` only).
 */
import type { AuditActor, AuditEventInput } from '../../audit/event.js';
import { TokenBucket, type Clock } from '../ratelimit/token-bucket.js';
import { bounded } from '../audit/events.js';

export interface FoldLimits {
  /** Refusals of one (name, type, reason) written in full before it is only counted. */
  readonly firstPerKey: number;
  /** Full refusal events per second over all keys (also the burst). */
  readonly fullPerSecond: number;
  /** Distinct (name, type, reason) keys remembered for `firstPerKey`; later keys are only counted. */
  readonly maxKeys: number;
  /** (name, type) pairs listed per summary event; the rest are counted in `questionsOmitted`. */
  readonly listed: number;
  /** (name, type) pairs counted per reason and interval; the rest are counted in `questionsOmitted`. */
  readonly maxPendingPerReason: number;
}

export const DEFAULT_FOLD_LIMITS: FoldLimits = { firstPerKey: 3, fullPerSecond: 20, maxKeys: 4096, listed: 16, maxPendingPerReason: 1024 };

/** One refused question, as the DNS server saw it. */
export interface RefusedQuestion {
  readonly name: string;
  readonly type: string;
  readonly reason: string;
}

interface Pending {
  count: number;
  /** (name, type) -> questions, at most maxPendingPerReason entries. */
  readonly questions: Map<string, { name: string; type: string; count: number }>;
  /** Questions of pairs that did not fit in `questions`. */
  unlisted: number;
}

export class RefusalFolder {
  private readonly seen = new Map<string, number>();
  private readonly bucket: TokenBucket;
  private readonly pending = new Map<string, Pending>();
  private readonly limits: FoldLimits;
  private lastFlush: number;

  constructor(
    private readonly actor: AuditActor,
    private readonly clock: Clock,
    limits: Partial<FoldLimits> = {},
  ) {
    this.limits = { ...DEFAULT_FOLD_LIMITS, ...limits };
    this.bucket = new TokenBucket(this.limits.fullPerSecond, Math.max(1, this.limits.fullPerSecond), clock);
    this.lastFlush = clock();
  }

  /**
   * Whether this refusal is written in full (true) or only counted (false: it will be in the
   * next summary). Call once per refused question.
   */
  admit(q: RefusedQuestion): boolean {
    const key = `${q.reason}\0${q.type}\0${q.name}`;
    const n = this.seen.get(key);
    const known = n !== undefined || this.seen.size < this.limits.maxKeys;
    if (known && (n ?? 0) < this.limits.firstPerKey && this.bucket.take()) {
      this.seen.set(key, (n ?? 0) + 1);
      return true;
    }
    if (known && n === undefined) this.seen.set(key, 0); // remembered: a later quiet second may still show it in full
    this.count(q);
    return false;
  }

  private count(q: RefusedQuestion): void {
    let p = this.pending.get(q.reason);
    if (!p) {
      p = { count: 0, questions: new Map(), unlisted: 0 };
      this.pending.set(q.reason, p);
    }
    p.count++;
    const pair = `${q.type}\0${q.name}`;
    const had = p.questions.get(pair);
    if (had) had.count++;
    else if (p.questions.size < this.limits.maxPendingPerReason) p.questions.set(pair, { name: q.name, type: q.type, count: 1 });
    else p.unlisted++;
  }

  /** Questions counted since the last flush (not yet in any event). */
  get pendingCount(): number {
    let n = 0;
    for (const p of this.pending.values()) n += p.count;
    return n;
  }

  /** One `net.dns.summary` event per reason with refusals counted since the last flush. */
  flush(): AuditEventInput[] {
    const now = this.clock();
    const intervalMs = Math.max(0, Math.round(now - this.lastFlush));
    this.lastFlush = now;
    const events: AuditEventInput[] = [];
    for (const [reason, p] of [...this.pending].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const all = [...p.questions.values()].sort((a, b) => b.count - a.count);
      const listed = all.slice(0, this.limits.listed).map((x) => ({ name: bounded(x.name, 255), type: x.type, count: x.count }));
      const omitted = p.count - listed.reduce((s, x) => s + x.count, 0);
      const top = listed
        .slice(0, 3)
        .map((x) => `${x.type} ${x.name || '(unparseable)'} x${x.count}`)
        .join(', ');
      const detail = `${p.count} DNS question${p.count === 1 ? '' : 's'} refused (${reason}) in the last ${intervalMs} ms, counted instead of logged one by one${top ? `: ${top}${all.length > 3 || p.unlisted > 0 ? ', ...' : ''}` : ''}`;
      events.push({
        actor: this.actor,
        action: 'net.dns.summary',
        decision: 'deny',
        reason,
        payload: { count: p.count, intervalMs, questions: listed, questionsOmitted: omitted, detail },
      });
    }
    this.pending.clear();
    return events;
  }
}
