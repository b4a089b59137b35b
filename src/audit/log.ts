/**
 * The audit log writer: the one audit API that the sandbox, gateway and CLI write through. It
 * wires the parts, each in its own module:
 *
 * - batch-writer.ts  append(): validates the event, queues it, and resolves once it is durable in
 *                    the store (group commit). Payloads are encrypted before the entry is hashed.
 * - key-ring.ts      data keys per day and per data subject, created on first use.
 * - log-tree.ts      the tree: restored from the saved frontier, caught up with other writers,
 *                    checked against stored and published checkpoints.
 * - checkpointer.ts  a timer signs a C2SP checkpoint of the current tree at least every
 *                    `checkpointIntervalMs` while the tree grows, stores it, and publishes it.
 * - retention.ts     retention destroys data keys older than `retentionDays`; forget() destroys a
 *                    data subject's keys. Hashes, proofs and checkpoints are unaffected by either.
 * - reader.ts        entries, decryption and proofs (also the read-only AuditReader).
 * Clock, timers and randomness are injected so tests control them.
 */
import { randomFillSync } from 'node:crypto';
import { BatchWriter, isoDay } from './batch-writer.js';
import { Checkpointer } from './checkpointer.js';
import { type NoteSigner, type NoteVerifier, encodeVerifierKey } from './checkpoint/note.js';
import { completeEvent } from './event-input.js';
import { type RandomFill, uuidv7Generator } from './event-id.js';
import type { AuditEvent, AuditEventInput, AuditSink } from './event.js';
import { EncodePool } from './encode-pool.js';
import type { MasterKeys } from './envelope.js';
import { AuditError } from './errors.js';
import { KeyRing } from './key-ring.js';
import { LogTree } from './log-tree.js';
import type { CheckpointSink } from './publish.js';
import { type DecryptedEntry, type ReadRecord, consistencyProof, decryptEntry, inclusionProof, readEntries } from './reader.js';
import { applyRetention, eraseSubject } from './retention.js';
import type { AuditStore } from './store/types.js';

export type { DecryptedEntry } from './reader.js';

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

const RETENTION_EVERY_MS = 3_600_000;

export class AuditLog implements AuditSink {
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
  private timer: unknown;
  private signing: Promise<void> | undefined;
  private lastRetention = -Infinity;
  private closed = false;

  private constructor(
    private readonly store: AuditStore,
    private readonly origin_: string,
    private readonly masterKeys: MasterKeys,
    private readonly tree: LogTree,
    private readonly keys: KeyRing,
    private readonly writer: BatchWriter,
    private readonly checkpointer: Checkpointer,
    private readonly pool: EncodePool,
    private readonly clock: Clock,
    private readonly timers: Timers,
    private readonly newId: () => string,
    private readonly retentionDays: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  /**
   * Loads the tree (from the saved frontier when a signed checkpoint vouches for it, else from
   * every leaf hash), checks it against the latest stored and the newest published checkpoints,
   * pins the key with the sink, applies retention and starts the checkpoint timer.
   */
  static async open(o: AuditLogOptions): Promise<AuditLog> {
    const { store, origin, masterKeys } = o;
    const clock = o.clock ?? { now: () => Date.now() };
    const timers = o.timers ?? {
      setInterval: (fn, ms) => setInterval(fn, ms).unref(),
      clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
    };
    const random = o.random ?? ((b) => void randomFillSync(b));
    const onError = o.onError ?? ((err) => process.emitWarning(`audit: ${err instanceof Error ? err.message : String(err)}`));
    const pool = new EncodePool(o.random !== undefined || o.inlineEncoding === true ? { random } : undefined);
    const tree = await LogTree.open({ store, verifier: o.verifier, origin }, o.published ?? []);
    const keys = new KeyRing({ store, masterKeys, random });
    const writer = new BatchWriter({ store, tree, keys, masterKeys, pool, origin, maxBatch: o.maxBatch ?? 2048, now: () => clock.now() });
    const checkpointer = new Checkpointer({ store, tree, signer: o.signer, origin, sink: o.sink, onError });
    const newId = uuidv7Generator(() => clock.now(), random);
    const log = new AuditLog(
      store,
      origin,
      masterKeys,
      tree,
      keys,
      writer,
      checkpointer,
      pool,
      clock,
      timers,
      newId,
      o.retentionDays ?? 90,
      onError,
    );
    await o.sink.pinKey(encodeVerifierKey(o.verifier));
    await log.applyRetention();
    if (o.inlineEncoding !== true) pool.warm();
    // Create today's data key now: the first append would otherwise wait for its fsync'd write.
    await keys.dataKey(isoDay(clock.now()), undefined);
    log.timer = timers.setInterval(() => log.tick(), o.checkpointIntervalMs ?? 1000);
    return log;
  }

  get size(): number {
    return this.tree.size;
  }

  get origin(): string {
    return this.origin_;
  }

  private refusal(): Promise<never> | undefined {
    if (this.closed) return Promise.reject(new AuditError('audit.closed', 'audit log is closed'));
    if (this.tree.broken !== undefined) return Promise.reject(this.tree.broken);
    return undefined;
  }

  /**
   * Appends one event; resolves once it is durable (survives kill -9). Events appended together
   * share one promise (their batch's).
   */
  append(input: AuditEventInput): Promise<void> {
    const refused = this.refusal();
    if (refused !== undefined) return refused;
    let done: { event: AuditEvent; payloadJson: string };
    try {
      done = completeEvent(input, this.newId, this.nowIso);
    } catch (err) {
      return Promise.reject(err);
    }
    const p = this.writer.add(done.event, done.payloadJson);
    this.writer.scheduleDrain();
    return p;
  }

  /**
   * Appends several events with one acknowledgement: resolves once all are durable, rejects if
   * any is invalid (then none is appended) or cannot be written.
   */
  appendMany(inputs: readonly AuditEventInput[]): Promise<void> {
    const refused = this.refusal();
    if (refused !== undefined) return refused;
    const done: Array<{ event: AuditEvent; payloadJson: string }> = [];
    try {
      for (const input of inputs) done.push(completeEvent(input, this.newId, this.nowIso));
    } catch (err) {
      return Promise.reject(err);
    }
    const groups = new Set<Promise<void>>();
    for (const d of done) groups.add(this.writer.add(d.event, d.payloadJson));
    if (groups.size === 0) return Promise.resolve();
    this.writer.scheduleDrain();
    return groups.size === 1 ? (groups.values().next().value as Promise<void>) : Promise.all(groups).then(() => undefined);
  }

  /** Resolves when every event appended so far is durable. */
  flush(): Promise<void> {
    return this.writer.flush();
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
    await this.store.close();
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
  checkpoint(): Promise<void> {
    return this.checkpointer.checkpoint();
  }

  /** Destroys data keys whose day is older than the retention period. Returns their ids. */
  async applyRetention(): Promise<string[]> {
    this.lastRetention = this.clock.now();
    return applyRetention(this.store, this.keys, this.retentionDays, this.clock.now());
  }

  /**
   * Crypto-shredding: destroys every data key of `subject` and appends an
   * `audit.subject-erased` event naming only the subject's keyed hash. Returns the key count.
   */
  async forget(subject: string, actor: AuditEventInput['actor'] = {}): Promise<number> {
    const erased = await eraseSubject(this.store, this.keys, this.masterKeys, subject);
    await this.append({ actor, action: 'audit.subject-erased', decision: 'info', payload: erased });
    await this.flush();
    return erased.keysDestroyed;
  }

  /** Latest stored checkpoint note, if any. */
  async latestCheckpoint(): Promise<string | undefined> {
    return (await this.store.readCheckpoints()).at(-1);
  }

  /** RFC 6962 inclusion proof (reads the store's leaf hashes when the tree was restored). */
  inclusionProof(index: number, size: number = this.tree.size): Promise<{ leafHash: Uint8Array; proof: Uint8Array[]; root: Uint8Array }> {
    return inclusionProof(this.tree, index, size);
  }

  /** RFC 6962 consistency proof (reads the store's leaf hashes when the tree was restored). */
  consistencyProof(size1: number, size2: number = this.tree.size): Promise<{ root1: Uint8Array; root2: Uint8Array; proof: Uint8Array[] }> {
    return consistencyProof(this.tree, size1, size2);
  }

  /** MTH at `size` (sizes below a restored frontier read the store's leaf hashes). */
  root(size: number = this.tree.size): Promise<Uint8Array> {
    return this.tree.root(size);
  }

  /** Catches up with entries and checkpoints other writers stored since open. */
  async refresh(): Promise<void> {
    await this.flush();
    await this.tree.catchUp();
  }

  /**
   * Stored entries from `from` on, decrypted where their key still exists. Damaged entries are
   * reported as `error` (run `aegis audit verify` for the full check).
   */
  read(from = 0): AsyncIterable<ReadRecord> {
    return readEntries(this.store, this.keys, this.origin_, from);
  }

  /** Decrypts a stored entry (index = its position in the store). */
  decrypt(index: number, entry: Uint8Array): Promise<DecryptedEntry> {
    return decryptEntry(this.keys, this.origin_, index, entry);
  }
}
