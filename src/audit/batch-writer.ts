/**
 * Group commit: events queued while a batch is being written and fsync'd form the next batch,
 * and each batch is acknowledged with one promise. Payloads are encrypted (envelope.ts) before
 * entries are hashed, in the encode pool (a worker thread unless inline).
 */
import type { AuditEvent } from './event.js';
import { secretJson } from './entry.js';
import { BatchArena, entryParts } from './entry-batch.js';
import type { EncodePool } from './encode-pool.js';
import { type MasterKeys, subjectHash } from './envelope.js';
import { AuditError } from './errors.js';
import type { KeyRing } from './key-ring.js';
import type { LogTree } from './log-tree.js';
import type { AuditStore, EntryBatch } from './store/types.js';

/**
 * Events waiting to be written, in groups of at most maxBatch: a group is written as one batch and
 * acknowledged with one promise, which every event in it shares (no promise per event).
 */
interface Group {
  /** The events' entry parts as bytes (the events themselves are not kept). */
  readonly arena: BatchArena;
  /** Subject hash of each event that has a data subject (its payload uses that subject's key). */
  subjects: Map<number, string> | undefined;
  readonly promise: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

function newGroup(): Group {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { arena: new BatchArena(), subjects: undefined, promise, resolve, reject };
}

export function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

export interface BatchWriterOptions {
  readonly store: AuditStore;
  /** The tree this writer extends; it only grows by what this writer wrote or caught up with. */
  readonly tree: LogTree;
  readonly keys: KeyRing;
  readonly masterKeys: MasterKeys;
  readonly pool: EncodePool;
  /** Checkpoint origin (bound into each payload's AAD). */
  readonly origin: string;
  /** Largest group-commit batch. */
  readonly maxBatch: number;
  /** Milliseconds since the epoch (picks the day of the data key). */
  readonly now: () => number;
}

type InFlight = { batch: Group; start: number; entries: EntryBatch; write: Promise<void> };

export class BatchWriter {
  private readonly queue: Group[] = [];
  private draining: Promise<void> | undefined;
  private drainScheduled = false;

  private readonly store: AuditStore;
  private readonly tree: LogTree;
  private readonly keys: KeyRing;
  private readonly masterKeys: MasterKeys;
  private readonly pool: EncodePool;
  private readonly origin: string;
  private readonly maxBatch: number;
  private readonly now: () => number;

  constructor(o: BatchWriterOptions) {
    this.store = o.store;
    this.tree = o.tree;
    this.keys = o.keys;
    this.masterKeys = o.masterKeys;
    this.pool = o.pool;
    this.origin = o.origin;
    this.maxBatch = o.maxBatch;
    this.now = o.now;
  }

  /**
   * Queues a validated event; returns the promise of the batch it joined. The event's entry parts
   * are written into the batch's arena now, so nothing of the event is kept.
   */
  add(event: AuditEvent, payloadJson: string): Promise<void> {
    const g = this.openGroup();
    let subj: string | undefined;
    if (event.subject !== undefined) {
      subj = subjectHash(this.masterKeys, event.subject);
      (g.subjects ??= new Map()).set(g.arena.count, subj);
    }
    const { pre, post } = entryParts(event, subj);
    g.arena.add(pre, post, secretJson(event, payloadJson));
    return g.promise;
  }

  /** The group new events join: the last queued one unless it is full. */
  private openGroup(): Group {
    let g = this.queue[this.queue.length - 1];
    if (g === undefined || g.arena.count >= this.maxBatch) {
      g = newGroup();
      this.queue.push(g);
    }
    return g;
  }

  /** Starts writing on the next turn of the event loop (so that appends made now batch up). */
  scheduleDrain(): void {
    if (!this.drainScheduled && this.draining === undefined) {
      this.drainScheduled = true;
      setImmediate(() => {
        this.drainScheduled = false;
        this.startDrain();
      });
    }
  }

  /** Resolves when every event queued so far is durable (or its batch was rejected). */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.draining !== undefined || this.drainScheduled) {
      if (this.draining === undefined && !this.drainScheduled) this.startDrain();
      await (this.draining ?? new Promise((r) => setImmediate(r)));
    }
  }

  private startDrain(): void {
    if (this.draining !== undefined) return;
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
      if (this.queue.length > 0) this.startDrain();
    });
  }

  /**
   * A two-stage pipeline: while batch N is written and fsync'd, batch N+1 is encoded (in the
   * worker) at the positions that follow N. If N does not land where expected (another writer
   * got there first), N+1 is re-encoded at its real position.
   */
  private async drain(): Promise<void> {
    const tree = this.tree;
    let inFlight: InFlight | undefined;
    while (this.queue.length > 0 || inFlight !== undefined) {
      let next: { batch: Group; start: number; encoded: Promise<EntryBatch> } | undefined;
      if (this.queue.length > 0) {
        const batch = this.queue.shift() as Group;
        const start = tree.size + (inFlight?.entries.count ?? 0);
        const encoded = this.encode(batch, start);
        encoded.catch(() => undefined); // handled below, after the in-flight write
        next = { batch, start, encoded };
      }
      if (inFlight !== undefined) await this.finishWrite(inFlight);
      inFlight = undefined;
      if (next === undefined) continue;
      try {
        if (tree.broken !== undefined) throw tree.broken;
        let entries = await next.encoded;
        let start = next.start;
        if (start !== tree.size) {
          start = tree.size;
          entries = await this.encode(next.batch, start);
        }
        inFlight = { batch: next.batch, start, entries, write: this.store.append(start, entries) };
        inFlight.write.catch(() => undefined); // handled in finishWrite
      } catch (err) {
        next.batch.reject(err);
      }
    }
  }

  /** Waits for a batch write; on conflict catches up and rewrites it at its new position. */
  private async finishWrite(w: InFlight): Promise<void> {
    let entries = w.entries;
    let write = w.write;
    for (let attempt = 0; ; attempt++) {
      try {
        await write;
        this.tree.tree.appendMany(entries.hashes, entries.count);
        w.batch.resolve();
        return;
      } catch (err) {
        if (err instanceof AuditError && err.code === 'audit.conflict' && attempt < 100) {
          try {
            await this.tree.catchUp();
            const start = this.tree.size;
            entries = await this.encode(w.batch, start);
            write = this.store.append(start, entries);
          } catch (err2) {
            w.batch.reject(err2);
            return;
          }
          continue;
        }
        w.batch.reject(err);
        return;
      }
    }
  }

  private async encode(group: Group, start: number): Promise<EntryBatch> {
    const day = isoDay(this.now());
    const ring = this.keys;
    const keys = new Map<string, Uint8Array>();
    const general = await ring.dataKey(day, undefined);
    keys.set(general.id, general.key);
    let bySubject: Map<number, string> | undefined;
    if (group.subjects !== undefined) {
      bySubject = new Map();
      for (const [i, subj] of group.subjects) {
        const dk = ring.cached(day, subj) ?? (await ring.dataKey(day, subj));
        keys.set(dk.id, dk.key);
        bySubject.set(i, dk.id);
      }
    }
    return this.pool.encode(group.arena, start, this.origin, { general: general.id, bySubject, keys });
  }
}
