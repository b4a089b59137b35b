/**
 * Turns the nftables drop counters of one sandbox into `net.blocked` audit events: what the
 * gateway's listeners never see (a direct connection to another port or address, ICMP, IPv6,
 * UDP other than DNS) is still in the audit log as a denial.
 *
 * The counters are read every `intervalMs` while the sandbox runs (two `nft -j list table`
 * calls, ~6 ms each) and once more at `stop()`, before the tables are removed; each reading
 * emits one event per traffic class that dropped packets since the previous one. So a flood
 * costs at most one event per class and interval, and the last drops are never lost.
 *
 * Each event names where the packets went (address, protocol, TCP/UDP port), from the tables'
 * destination sets: at most DESTINATIONS_LISTED per event, and only the first 1024 distinct
 * destinations per family and table are remembered (later ones are counted, not named).
 * The in-namespace counters are as trustworthy as the sandbox is without CAP_NET_ADMIN; the
 * host-side ones are out of its reach.
 */
import type { AuditActor, AuditEventInput } from '../audit/event.js';
import { blockedEvent } from './audit/events.js';
import { BLOCKED_CLASSES, since, type BlockedClass, type BlockedCount, type BlockedTableReading } from './netns/blocked.js';

export const BLOCKED_POLL_MS = 1_000;

/**
 * One reading: the counters of each source (table) that could be read. A source that could not
 * be read (its table is gone) is absent and keeps its previous reading, so nothing is counted
 * twice when it comes back or when another source is missing.
 */
export type BlockedReading = ReadonlyMap<string, BlockedTableReading>;

/** Destinations listed per event; the rest are only counted (`destinationsOmitted`). */
export const DESTINATIONS_LISTED = 16;

export interface BlockedMonitorOptions {
  readonly actor: AuditActor;
  readonly read: () => Promise<BlockedReading>;
  readonly emit: (e: AuditEventInput) => void;
  readonly intervalMs?: number;
}

/** Events for one reading's increase over the previous one, summed over the sources (pure). */
export function blockedEvents(actor: AuditActor, prev: BlockedReading, cur: BlockedReading): AuditEventInput[] {
  const totals = new Map<BlockedClass, BlockedCount>();
  const dests = new Map<string, { class: BlockedClass; address: string; protocol: string; port: number | null; packets: number }>();
  for (const [source, r] of cur) {
    const p = prev.get(source);
    for (const c of BLOCKED_CLASSES) {
      const d = since(p?.counts[c], r.counts[c]);
      const t = totals.get(c) ?? { packets: 0, bytes: 0 };
      totals.set(c, { packets: t.packets + d.packets, bytes: t.bytes + d.bytes });
    }
    for (const [key, dest] of r.destinations) {
      const d = since(p?.destinations.get(key), dest);
      if (d.packets === 0) continue;
      const had = dests.get(key);
      dests.set(key, {
        class: dest.class,
        address: dest.address,
        protocol: dest.protocol,
        port: dest.port,
        packets: (had?.packets ?? 0) + d.packets,
      });
    }
  }
  const events: AuditEventInput[] = [];
  for (const c of BLOCKED_CLASSES) {
    const t = totals.get(c)!;
    if (t.packets === 0) continue;
    const all = [...dests.values()].filter((d) => d.class === c).sort((a, b) => b.packets - a.packets);
    const listed = all.slice(0, DESTINATIONS_LISTED).map(({ address, protocol, port, packets }) => ({ address, protocol, port, packets }));
    events.push(
      blockedEvent(actor, {
        protocol: c,
        packets: t.packets,
        bytes: t.bytes,
        destinations: listed,
        destinationsOmitted: all.length - listed.length,
      }),
    );
  }
  return events;
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
    this.inFlight = this.inFlight
      .then(async () => {
        let cur: BlockedReading;
        try {
          cur = await this.o.read();
        } catch (err) {
          process.stderr.write(`aegis gateway: reading drop counters: ${String(err)}\n`);
          return;
        }
        for (const e of blockedEvents(this.o.actor, this.last, cur)) this.o.emit(e);
        this.last = new Map([...this.last, ...cur]);
      })
      // Never an unhandled rejection in the gateway process; the next reading tries again.
      .catch((err: unknown) => void process.stderr.write(`aegis gateway: drop counters: ${String(err)}\n`));
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
