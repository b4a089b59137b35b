/**
 * Turns the nftables drop counters of one sandbox into `net.blocked` audit events: what the
 * gateway's listeners never see (a direct connection to another port or address, ICMP, IPv6,
 * UDP other than DNS) is still in the audit log as a denial.
 *
 * The counters are read every `intervalMs` while the sandbox runs (two `nft -j list counters`
 * calls, ~6 ms each) and once more at `stop()`, before the tables are removed; each reading
 * emits one event per traffic class that dropped packets since the previous one. So a flood
 * costs at most one event per class and interval, and the last drops are never lost.
 *
 * LIMITATION: counters say how many packets of a class were dropped, not where they went (no
 * address or port in the event). The in-namespace counters are as trustworthy as the sandbox
 * is without CAP_NET_ADMIN; the host-side ones are out of its reach.
 */
import type { AuditActor, AuditEventInput } from '../audit/event.js';
import { blockedEvent } from './audit/events.js';
import { addCounts, BLOCKED_CLASSES, countsSince, zeroCounts, type BlockedCounts } from './netns/plan.js';

export const BLOCKED_POLL_MS = 1_000;

/**
 * One reading: the counters of each source (table) that could be read. A source that could not
 * be read (its table is gone) is absent and keeps its previous reading, so nothing is counted
 * twice when it comes back or when another source is missing.
 */
export type BlockedReading = ReadonlyMap<string, BlockedCounts>;

export interface BlockedMonitorOptions {
  readonly actor: AuditActor;
  readonly read: () => Promise<BlockedReading>;
  readonly emit: (e: AuditEventInput) => void;
  readonly intervalMs?: number;
}

/** Events for one reading's increase over the previous one, summed over the sources (pure). */
export function blockedEvents(actor: AuditActor, prev: BlockedReading, cur: BlockedReading): AuditEventInput[] {
  let d = zeroCounts();
  for (const [source, counts] of cur) d = addCounts(d, countsSince(prev.get(source) ?? zeroCounts(), counts));
  return BLOCKED_CLASSES.filter((c) => d[c].packets > 0).map((c) => blockedEvent(actor, { protocol: c, packets: d[c].packets, bytes: d[c].bytes }));
}

export class BlockedMonitor {
  private last: BlockedReading = new Map();
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly o: BlockedMonitorOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), this.o.intervalMs ?? BLOCKED_POLL_MS);
    this.timer.unref();
  }

  /** One reading (never two at once); a failed read is reported on stderr and retried next time. */
  private poll(): Promise<void> {
    this.inFlight = this.inFlight.then(async () => {
      let cur: BlockedReading;
      try {
        cur = await this.o.read();
      } catch (err) {
        process.stderr.write(`aegis gateway: reading drop counters: ${String(err)}\n`);
        return;
      }
      for (const e of blockedEvents(this.o.actor, this.last, cur)) this.o.emit(e);
      this.last = new Map([...this.last, ...cur]);
    });
    return this.inFlight;
  }

  /** Stop polling and take the final reading (call before the tables are removed). Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return this.inFlight;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.poll();
  }
}
