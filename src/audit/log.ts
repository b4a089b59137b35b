/**
 * The audit log service: the one audit API that the sandbox, gateway and CLI write through.
 *
 * - append(): validates the event, queues it, and resolves once it is durable in the store
 *   (group commit: events that arrive while a batch is being written and fsync'd form the next
 *   batch). Payloads are encrypted before the entry is hashed (envelope.ts).
 * - A timer signs a C2SP checkpoint of the current tree at least every `checkpointIntervalMs`
 *   while the tree grows, stores it, and publishes it to the sink.
 * - The log never signs two inconsistent checkpoints: its tree is only ever a prefix of the
 *   store, is checked against the latest stored (and published) checkpoint when opened and
 *   whenever it catches up with other writers, and signing refuses a size below the latest.
 * - Opening does not read every leaf: each checkpoint it signs is followed by the tree's frontier
 *   (merkle/frontier.ts), saved in the store. On open the frontier is used only if it hashes to
 *   the root of a stored checkpoint of its size that verifies under the log key (a mismatch is
 *   store-corrupt: refused); then only the leaves stored after it are read. No frontier, a torn
 *   one, or one that no checkpoint signs: the tree is rebuilt from every leaf hash, as before.
 *   Proofs load the whole tree from the store on demand (fullTree()).
 * - Retention destroys data keys older than `retentionDays`; forget() destroys a data subject's
 *   keys. Hashes, proofs and checkpoints are unaffected by either.
 * Clock, timers and randomness are injected so tests control them.
 */
import { randomFillSync } from 'node:crypto';
import { type Checkpoint, openCheckpoint, signCheckpoint } from './checkpoint/checkpoint.js';
import { type NoteSigner, type NoteVerifier, encodeVerifierKey } from './checkpoint/note.js';
import { completeEvent } from './event-input.js';
import { type RandomFill, uuidv7Generator } from './event-id.js';
import type { AuditEvent, AuditEventInput, AuditSink } from './event.js';
import { parseEntry, parseSecretPart, secretJson } from './entry.js';
import { type BatchItem, entryParts } from './entry-batch.js';
import { EncodePool } from './encode-pool.js';
import {
  type MasterKeys,
  decryptPayload,
  makeKeyId,
  parseKeyId,
  payloadAad,
  subjectHash,
  unwrapDataKey,
  wrapDataKey,
} from './envelope.js';
import { AuditError } from './errors.js';
import { bytesEqual, MerkleTree } from './merkle/index.js';
import { decodeFrontier, encodeFrontier, frontierRoot } from './merkle/frontier.js';
import type { CheckpointSink } from './publish.js';
import type { AuditStore, EntryBatch } from './store/types.js';

export interface Clock {
  now(): number;
}

export interface Timers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export interface AuditLogOptions {
  readonly store: AuditStore;
  readonly signer: NoteSigner;
  readonly verifier: NoteVerifier;
  /** Checkpoint origin line (also the note key name). */
  readonly origin: string;
  readonly masterKeys: MasterKeys;
  readonly sink: CheckpointSink;
  /** Checkpoints already published (file sinks): a store behind them is refused. */
  readonly published?: readonly string[];
  readonly clock?: Clock;
  readonly timers?: Timers;
  readonly random?: RandomFill;
  /** Default 1000 ms. */
  readonly checkpointIntervalMs?: number;
  /** Default 90 days. 0 disables retention (keys kept forever). */
  readonly retentionDays?: number;
  /** Largest group-commit batch (default 2048 events: small enough to pipeline encode and write). */
  readonly maxBatch?: number;
  /** Encode on the calling thread instead of a worker thread (default: worker). */
  readonly inlineEncoding?: boolean;
  /** Where background failures (publication, timers) are reported; default: process warning. */
  readonly onError?: (err: unknown) => void;
}

/**
 * Events waiting to be written, in groups of at most maxBatch: a group is written as one batch and
 * acknowledged with one promise, which every append() into it returns (no promise per event).
 */
interface Group {
  readonly events: AuditEvent[];
  readonly payloads: string[];
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
  return { events: [], payloads: [], promise, resolve, reject };
}

interface DataKey {
  readonly id: string;
  readonly key: Uint8Array;
}

export type DecryptedEntry =
  | { readonly index: number; readonly event: AuditEvent; readonly keyDestroyed?: undefined }
  | { readonly index: number; readonly event: Omit<AuditEvent, 'payload'> & { payload: null }; readonly keyDestroyed: true };

const DAY_MS = 86_400_000;
/** Stored checkpoints searched (newest first) for the one a saved frontier belongs to. */
const FRONTIER_SEARCH = 64;
/** Newest published checkpoints checked against the store at open. */
const PUBLISHED_CHECKED = 16;
const RETENTION_EVERY_MS = 3_600_000;

function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

export class AuditLog implements AuditSink {
  private tree = new MerkleTree();
  /** Every leaf, loaded from the store for proofs when `tree` was restored from a frontier. */
  private full: MerkleTree | undefined;
  private readonly queue: Group[] = [];
  private draining: Promise<void> | undefined;
  private drainScheduled = false;
  private readonly keyCache = new Map<string, DataKey>();
  private readonly unwrapped = new Map<string, Uint8Array>();
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly random: RandomFill;
  private readonly newId: () => string;
  private isoMs = Number.NaN;
  private isoText = '';
  /** RFC 3339 time of the clock, formatted once per millisecond. */
  private readonly nowIso = (): string => {
    const ms = this.clock.now();
    if (ms !== this.isoMs) {
      this.isoMs = ms;
      this.isoText = new Date(ms).toISOString();
    }
    return this.isoText;
  };
  private readonly onError: (err: unknown) => void;
  private timer: unknown;
  private signedSize = -1;
  private signing: Promise<void> | undefined;
  private unpublished: string[] = [];
  private lastRetention = -Infinity;
  private broken: AuditError | undefined;
  private closed = false;
  private readonly pool: EncodePool;

  private constructor(private readonly o: AuditLogOptions) {
    this.clock = o.clock ?? { now: () => Date.now() };
    this.timers = o.timers ?? { setInterval: (fn, ms) => setInterval(fn, ms).unref(), clearInterval: (h) => clearInterval(h as NodeJS.Timeout) };
    this.random = o.random ?? ((b) => void randomFillSync(b));
    this.newId = uuidv7Generator(() => this.clock.now(), this.random);
    this.pool = new EncodePool(o.random !== undefined || o.inlineEncoding === true ? { random: this.random } : undefined);
    this.onError = o.onError ?? ((err) => process.emitWarning(`audit: ${err instanceof Error ? err.message : String(err)}`));
  }

  /**
   * Loads the tree (from the saved frontier when a signed checkpoint vouches for it, else from
   * every leaf hash), checks it against the latest stored and the newest published checkpoints.
   */
  static async open(o: AuditLogOptions): Promise<AuditLog> {
    const log = new AuditLog(o);
    await log.restoreFrontier();
    await log.catchUp();
    await log.checkPublished(o.published ?? []);
    await o.sink.pinKey(encodeVerifierKey(o.verifier));
    await log.applyRetention();
    if (o.inlineEncoding !== true) log.pool.warm();
    // Create today's data key now: the first append would otherwise wait for its fsync'd write.
    await log.dataKey(isoDay(log.clock.now()), undefined);
    log.timer = log.timers.setInterval(() => log.tick(), o.checkpointIntervalMs ?? 1000);
    return log;
  }

  get size(): number {
    return this.tree.size;
  }

  get origin(): string {
    return this.o.origin;
  }

  /**
   * Appends one event; resolves once it is durable (survives kill -9). Events appended together
   * share one promise (their batch's).
   */
  append(input: AuditEventInput): Promise<void> {
    if (this.closed) return Promise.reject(new AuditError('closed', 'audit log is closed'));
    if (this.broken !== undefined) return Promise.reject(this.broken);
    let done: { event: AuditEvent; payloadJson: string };
    try {
      done = completeEvent(input, this.newId, this.nowIso);
    } catch (err) {
      return Promise.reject(err);
    }
    const g = this.openGroup();
    g.events.push(done.event);
    g.payloads.push(done.payloadJson);
    this.scheduleDrain();
    return g.promise;
  }

  /** The group new events join: the last queued one unless it is full. */
  private openGroup(): Group {
    let g = this.queue[this.queue.length - 1];
    if (g === undefined || g.events.length >= (this.o.maxBatch ?? 2048)) {
      g = newGroup();
      this.queue.push(g);
    }
    return g;
  }

  private scheduleDrain(): void {
    if (!this.drainScheduled && this.draining === undefined) {
      this.drainScheduled = true;
      setImmediate(() => {
        this.drainScheduled = false;
        this.startDrain();
      });
    }
  }

  /**
   * Appends several events with one acknowledgement: resolves once all are durable, rejects if
   * any is invalid (then none is appended) or cannot be written.
   */
  appendMany(inputs: readonly AuditEventInput[]): Promise<void> {
    if (this.closed) return Promise.reject(new AuditError('closed', 'audit log is closed'));
    if (this.broken !== undefined) return Promise.reject(this.broken);
    const done: Array<{ event: AuditEvent; payloadJson: string }> = [];
    try {
      for (const input of inputs) done.push(completeEvent(input, this.newId, this.nowIso));
    } catch (err) {
      return Promise.reject(err);
    }
    const groups = new Set<Promise<void>>();
    for (const d of done) {
      const g = this.openGroup();
      g.events.push(d.event);
      g.payloads.push(d.payloadJson);
      groups.add(g.promise);
    }
    if (groups.size === 0) return Promise.resolve();
    this.scheduleDrain();
    return groups.size === 1 ? (groups.values().next().value as Promise<void>) : Promise.all(groups).then(() => undefined);
  }

  /** Resolves when every event appended so far is durable. */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.draining !== undefined || this.drainScheduled) {
      if (this.draining === undefined && !this.drainScheduled) this.startDrain();
      await (this.draining ?? new Promise((r) => setImmediate(r)));
    }
  }

  /** Flushes, signs and publishes a final checkpoint, stops the timer, closes the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.timers.clearInterval(this.timer);
    await this.signing;
    await this.checkpoint().catch((err: unknown) => this.onError(err));
    this.closed = true;
    await this.pool.close();
    await this.o.store.close();
  }

  private startDrain(): void {
    if (this.draining !== undefined) return;
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
      if (this.queue.length > 0) this.startDrain();
    });
  }

  /**
   * Group commit with a two-stage pipeline: while batch N is written and fsync'd, batch N+1 is
   * encoded (in the worker) at the positions that follow N. If N does not land where expected
   * (another writer got there first), N+1 is re-encoded at its real position.
   */
  private async drain(): Promise<void> {
    let inFlight: { batch: Group; start: number; entries: EntryBatch; write: Promise<void> } | undefined;
    while (this.queue.length > 0 || inFlight !== undefined) {
      let next: { batch: Group; start: number; encoded: Promise<EntryBatch> } | undefined;
      if (this.queue.length > 0) {
        const batch = this.queue.shift() as Group;
        const start = this.tree.size + (inFlight?.entries.count ?? 0);
        const encoded = this.encode(batch, start);
        encoded.catch(() => undefined); // handled below, after the in-flight write
        next = { batch, start, encoded };
      }
      if (inFlight !== undefined) await this.finishWrite(inFlight);
      inFlight = undefined;
      if (next === undefined) continue;
      try {
        if (this.broken !== undefined) throw this.broken;
        let entries = await next.encoded;
        let start = next.start;
        if (start !== this.tree.size) {
          start = this.tree.size;
          entries = await this.encode(next.batch, start);
        }
        inFlight = { batch: next.batch, start, entries, write: this.o.store.append(start, entries) };
        inFlight.write.catch(() => undefined); // handled in finishWrite
      } catch (err) {
        next.batch.reject(err);
      }
    }
  }

  /** Waits for a batch write; on conflict catches up and rewrites it at its new position. */
  private async finishWrite(w: { batch: Group; start: number; entries: EntryBatch; write: Promise<void> }): Promise<void> {
    let entries = w.entries;
    let write = w.write;
    for (let attempt = 0; ; attempt++) {
      try {
        await write;
        this.tree.appendMany(entries.hashes, entries.count);
        w.batch.resolve();
        return;
      } catch (err) {
        if (err instanceof AuditError && err.code === 'conflict' && attempt < 100) {
          try {
            await this.catchUp();
            const start = this.tree.size;
            entries = await this.encode(w.batch, start);
            write = this.o.store.append(start, entries);
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
    const day = isoDay(this.clock.now());
    const events = group.events;
    const items: BatchItem[] = new Array<BatchItem>(events.length);
    const keys = new Map<string, Uint8Array>();
    const general = await this.dataKey(day, undefined);
    keys.set(general.id, general.key);
    for (let i = 0; i < events.length; i++) {
      const ev = events[i] as AuditEvent;
      const payloadJson = group.payloads[i] as string;
      let dk = general;
      let subj: string | undefined;
      if (ev.subject !== undefined) {
        subj = subjectHash(this.o.masterKeys, ev.subject);
        dk = this.keyCache.get(`${subj}/${day}`) ?? (await this.dataKey(day, subj));
        keys.set(dk.id, dk.key);
      }
      const { pre, post } = entryParts(ev, subj);
      items[i] = { pre, post, secret: secretJson(ev, payloadJson), keyId: dk.id };
    }
    return this.pool.encode(items, start, this.o.origin, keys);
  }

  /** The current data key for (day, subject), created and stored durably on first use. */
  private async dataKey(day: string, subj: string | undefined): Promise<DataKey> {
    const scope = `${subj ?? 'd'}/${day}`;
    const cached = this.keyCache.get(scope);
    if (cached !== undefined) return cached;
    const tag = new Uint8Array(4);
    this.random(tag);
    const id = makeKeyId(day, Buffer.from(tag).toString('hex'), subj);
    const key = new Uint8Array(32);
    const nonce = new Uint8Array(12);
    this.random(key);
    this.random(nonce);
    await this.o.store.putKey(id, wrapDataKey(this.o.masterKeys, id, key, nonce));
    const dk = { id, key };
    this.keyCache.set(scope, dk);
    this.unwrapped.set(id, key);
    return dk;
  }

  /**
   * Starts the tree from the saved frontier if a stored checkpoint of the same size verifies and
   * has the frontier's root. Never trusts it beyond that: a frontier that no checkpoint signs
   * (or a torn one) is ignored and the tree rebuilt from the leaves; one that contradicts the
   * signed root means the store was damaged or tampered with, and the log refuses to open.
   */
  private async restoreFrontier(): Promise<void> {
    const bytes = await this.o.store.readFrontier();
    const f = bytes === undefined ? undefined : decodeFrontier(bytes);
    if (f === undefined || f.size === 0) return;
    const notes = await this.o.store.readCheckpoints();
    for (let i = notes.length - 1; i >= 0 && i >= notes.length - FRONTIER_SEARCH; i--) {
      let cp: Checkpoint;
      try {
        cp = openCheckpoint(notes[i] as string, this.o.verifier, this.o.origin);
      } catch {
        return; // catchUp() reports a damaged latest checkpoint; older ones are verify's job
      }
      if (cp.size < f.size) return;
      if (cp.size === f.size) {
        if (!bytesEqual(frontierRoot(f), cp.root)) {
          throw this.fail(new AuditError('store-corrupt', `the saved tree frontier (size ${f.size}) does not match stored checkpoint ${i}: the store is damaged or was tampered with`));
        }
        this.tree = MerkleTree.fromFrontier(f);
        return;
      }
    }
  }

  /**
   * Checks the newest published checkpoints against the tree: a store behind them, or with other
   * roots, is refused. Those at or above the restored frontier's size are checked directly;
   * earlier ones are `aegis audit verify`'s job (each was checked like this by writers that
   * opened the log while it was the newest), unless none reaches the frontier's size: then the
   * newest one is checked against the whole tree, loaded from the store (rare: publication failed,
   * or a writer died between storing and publishing a checkpoint).
   */
  private async checkPublished(published: readonly string[]): Promise<void> {
    const first = Math.max(0, published.length - PUBLISHED_CHECKED);
    const cps: Array<{ cp: Checkpoint; what: string }> = [];
    for (let i = published.length - 1; i >= first; i--) {
      try {
        cps.push({ cp: openCheckpoint(published[i] as string, this.o.verifier, this.o.origin), what: `published checkpoint ${i}` });
      } catch (cause) {
        throw this.fail(new AuditError('store-corrupt', `published checkpoint ${i} does not verify under the log key`, { cause }));
      }
    }
    const recent = cps.filter((c) => c.cp.size >= this.tree.base);
    for (const { cp, what } of recent) this.checkAgainst(cp, what);
    const newest = cps.reduce<{ cp: Checkpoint; what: string } | undefined>((a, c) => (a === undefined || c.cp.size > a.cp.size ? c : a), undefined);
    if (recent.length > 0 || newest === undefined) return;
    if (!bytesEqual((await this.fullTree()).root(newest.cp.size), newest.cp.root)) {
      throw this.fail(new AuditError('store-corrupt', `${newest.what} (size ${newest.cp.size}) does not match the stored entries`));
    }
  }

  /**
   * The tree with every leaf, for proofs: this log's tree if it holds them all, else built from
   * the store's leaf hashes up to this log's size (checked against this log's root).
   */
  private async fullTree(): Promise<MerkleTree> {
    if (this.tree.base === 0) return this.tree;
    const size = this.tree.size;
    const t = this.full ?? new MerkleTree();
    if (t.size < size) {
      const { hashes } = await this.o.store.readLeafHashes(t.size);
      if (t.size + hashes.length / 32 < size) {
        throw this.fail(new AuditError('store-corrupt', `the store holds ${t.size + hashes.length / 32} entries, fewer than ${size}`));
      }
      t.appendMany(hashes, size - t.size);
    }
    if (!bytesEqual(t.root(size), this.tree.root())) {
      throw this.fail(new AuditError('store-corrupt', `the stored leaf hashes do not match the tree restored from the saved frontier (size ${this.tree.base})`));
    }
    this.full = t;
    return t;
  }

  /**
   * Reads entries other writers appended and re-checks the latest stored checkpoint. Only called
   * when no batch write of this log is in flight (open, the write path itself, refresh()).
   */
  private async catchUp(): Promise<void> {
    const { size, hashes } = await this.o.store.readLeafHashes(this.tree.size);
    if (size < this.tree.size) {
      throw this.fail(new AuditError('store-corrupt', `the store holds ${size} entries, fewer than the ${this.tree.size} already seen (truncated or rolled back)`));
    }
    this.tree.appendMany(hashes, hashes.length / 32);
    await this.checkLatestStoredCheckpoint(true);
  }

  /**
   * Verifies the latest stored checkpoint against the tree. `caughtUp`: the tree holds every
   * stored entry, so a checkpoint beyond it means entries were removed; otherwise such a
   * checkpoint (another writer's) is checked later, when this log catches up.
   */
  private async checkLatestStoredCheckpoint(caughtUp: boolean): Promise<void> {
    const notes = await this.o.store.readCheckpoints();
    const latest = notes.at(-1);
    if (latest === undefined) return;
    let cp: Checkpoint;
    try {
      cp = openCheckpoint(latest, this.o.verifier, this.o.origin);
    } catch (cause) {
      throw this.fail(new AuditError('store-corrupt', `latest stored checkpoint (${notes.length - 1}) does not verify under the log key`, { cause }));
    }
    if (cp.size <= this.tree.size || caughtUp) this.checkAgainst(cp, `stored checkpoint ${notes.length - 1}`);
    this.signedSize = Math.max(this.signedSize, cp.size);
  }

  private checkAgainst(cp: Checkpoint, what: string): void {
    if (cp.size > this.tree.size) {
      throw this.fail(new AuditError('store-corrupt', `${what} has size ${cp.size} but the store holds ${this.tree.size} entries (truncated or rolled back)`));
    }
    if (!bytesEqual(this.tree.root(cp.size), cp.root)) {
      throw this.fail(new AuditError('store-corrupt', `${what} (size ${cp.size}) does not match the stored entries`));
    }
  }

  private fail(err: AuditError): AuditError {
    this.broken = err;
    return err;
  }

  private tick(): void {
    if (this.signing !== undefined || this.closed) return;
    this.signing = this.checkpoint()
      .then(async () => {
        if (this.clock.now() - this.lastRetention >= RETENTION_EVERY_MS) await this.applyRetention();
      })
      .catch((err: unknown) => this.onError(err))
      .finally(() => {
        this.signing = undefined;
      });
  }

  /**
   * Signs, stores and publishes a checkpoint of the current tree if it grew since the last one
   * (and retries publishing earlier ones the sink refused). `latestCheckpoint()` reads it back.
   */
  async checkpoint(): Promise<void> {
    await this.republish();
    const size = this.tree.size;
    if (size <= this.signedSize || this.broken !== undefined) return;
    const note = signCheckpoint({ origin: this.o.origin, size, root: this.tree.root(size), extensions: [] }, this.o.signer);
    const frontier = encodeFrontier(this.tree.frontier());
    try {
      await this.o.store.appendCheckpoint(size, note);
    } catch (err) {
      if (err instanceof AuditError && err.code === 'checkpoint-inconsistent') {
        // Another writer signed a bigger tree: check it against ours where we can, never sign
        // below it. (Not catchUp(): a batch write may be in flight, and only the write path may
        // add leaves to the tree.)
        await this.checkLatestStoredCheckpoint(false);
        return;
      }
      throw err;
    }
    this.signedSize = size;
    this.unpublished.push(note);
    // After the checkpoint is durable: a frontier is only ever used with the checkpoint it matches.
    // Losing it costs the next open a full rebuild, so a failure is reported, not thrown.
    await this.o.store.writeFrontier(size, frontier).catch((err: unknown) => this.onError(err));
    await this.republish();
  }

  private async republish(): Promise<void> {
    while (this.unpublished.length > 0) {
      try {
        await this.o.sink.publish(this.unpublished[0] as string);
      } catch (cause) {
        throw new AuditError('publish-failed', `cannot publish checkpoint to ${this.o.sink.description} (will retry)`, { cause });
      }
      this.unpublished.shift();
    }
  }

  /** Destroys data keys whose day is older than the retention period. Returns their ids. */
  async applyRetention(): Promise<string[]> {
    this.lastRetention = this.clock.now();
    const days = this.o.retentionDays ?? 90;
    if (days <= 0) return [];
    const cutoff = isoDay(this.clock.now() - days * DAY_MS);
    const doomed = (await this.o.store.listKeyIds()).filter((id) => {
      const p = parseKeyId(id);
      return p !== undefined && p.day < cutoff;
    });
    for (const id of doomed) await this.destroyKey(id);
    return doomed;
  }

  /**
   * Crypto-shredding: destroys every data key of `subject` and appends an
   * `audit.subject-erased` event naming only the subject's keyed hash. Returns the key count.
   */
  async forget(subject: string, actor: AuditEventInput['actor'] = {}): Promise<number> {
    const hash = subjectHash(this.o.masterKeys, subject);
    const doomed = (await this.o.store.listKeyIds()).filter((id) => parseKeyId(id)?.subject === hash);
    for (const id of doomed) await this.destroyKey(id);
    await this.append({ actor, action: 'audit.subject-erased', decision: 'info', payload: { subjectHash: hash, keysDestroyed: doomed.length } });
    await this.flush();
    return doomed.length;
  }

  private async destroyKey(id: string): Promise<void> {
    await this.o.store.deleteKey(id);
    this.unwrapped.delete(id);
    for (const [scope, dk] of this.keyCache) if (dk.id === id) this.keyCache.delete(scope);
  }

  /** Latest stored checkpoint note, if any. */
  async latestCheckpoint(): Promise<string | undefined> {
    return (await this.o.store.readCheckpoints()).at(-1);
  }

  /** RFC 6962 inclusion proof (reads the store's leaf hashes when the tree was restored). */
  async inclusionProof(index: number, size: number = this.tree.size): Promise<{ leafHash: Uint8Array; proof: Uint8Array[]; root: Uint8Array }> {
    const t = await this.fullTree();
    return { leafHash: t.leafHash(index), proof: t.inclusionProof(index, size), root: t.root(size) };
  }

  /** RFC 6962 consistency proof (reads the store's leaf hashes when the tree was restored). */
  async consistencyProof(size1: number, size2: number = this.tree.size): Promise<{ root1: Uint8Array; root2: Uint8Array; proof: Uint8Array[] }> {
    const t = await this.fullTree();
    return { root1: t.root(size1), root2: t.root(size2), proof: t.consistencyProof(size1, size2) };
  }

  /** MTH at `size` (sizes below a restored frontier read the store's leaf hashes). */
  async root(size: number = this.tree.size): Promise<Uint8Array> {
    return (size >= this.tree.base ? this.tree : await this.fullTree()).root(size);
  }

  /** Catches up with entries and checkpoints other writers stored since open. */
  async refresh(): Promise<void> {
    await this.flush();
    await this.catchUp();
  }

  /**
   * Stored entries from `from` on, decrypted where their key still exists. Damaged entries are
   * reported as `error` (run `aegis audit verify` for the full check).
   */
  async *read(from = 0): AsyncIterable<{ index: number; entry: Uint8Array; decoded?: DecryptedEntry; error?: string }> {
    for await (const r of this.o.store.readEntries(from)) {
      if (r.error !== undefined) {
        yield { index: r.index, entry: new Uint8Array(0), error: r.error };
        return;
      }
      try {
        yield { index: r.index, entry: r.entry, decoded: await this.decrypt(r.index, r.entry) };
      } catch (err) {
        yield { index: r.index, entry: r.entry, error: err instanceof Error ? err.message : String(err) };
      }
    }
  }

  /** Decrypts a stored entry (index = its position in the store). */
  async decrypt(index: number, entry: Uint8Array): Promise<DecryptedEntry> {
    const p = parseEntry(entry);
    const head = {
      v: 1 as const,
      id: p.id,
      time: p.time,
      actor: p.actor,
      action: p.action,
      decision: p.decision,
      ...(p.reason !== undefined ? { reason: p.reason } : {}),
    };
    let key = this.unwrapped.get(p.enc.keyId);
    if (key === undefined) {
      const wrapped = await this.o.store.getKey(p.enc.keyId);
      if (wrapped === undefined) return { index, event: { ...head, payload: null }, keyDestroyed: true };
      key = unwrapDataKey(this.o.masterKeys, p.enc.keyId, wrapped);
      this.unwrapped.set(p.enc.keyId, key);
    }
    const secret = parseSecretPart(decryptPayload(key, p.enc.nonce, p.enc.ciphertext, payloadAad(this.o.origin, index)));
    const event: AuditEvent = { ...head, ...(secret.subject !== undefined ? { subject: secret.subject } : {}), payload: secret.payload };
    return { index, event };
  }
}
