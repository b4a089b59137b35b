/**
 * The worker loop of `aegis serve` (issue 11): claims queued executions from the Store, runs each
 * through the ExecutionEngine, records what it prints and ends as output chunks and a final
 * status, and keeps the worker's place in a cluster (heartbeats, reaping dead workers'
 * executions, cancel requests, output retention, warm pools of the Store's pool table).
 *
 * One Dispatcher per `aegis serve` process; several processes (on one or many hosts) may share one
 * PostgreSQL Store (docs/cluster.md). Timing:
 * - claims: at once on kick() (the API calls it after creating an execution on this worker), when
 *   the Store wakes it (PostgreSQL: LISTEN/NOTIFY on each new execution, so an idle worker claims
 *   what another worker's API created at once), and every `pollMs` (default 250 ms) regardless:
 *   the poll is the fallback when a wake-up is lost (the listening connection dropped);
 * - heartbeat every `heartbeatMs` (default 1 s); a worker whose last heartbeat is older than
 *   `staleMs` (default 10 s) is dead: any live worker records its running executions `lost` and
 *   audits `execution.lost`. At start a worker records its own leftovers (a previous process of
 *   the same worker id, killed) the same way;
 * - cancel requests (the Store's flag, set by any worker's API) are polled every `pollMs` while
 *   something runs here; cancel(id) cancels a local execution at once.
 *
 * Code: each agent version is materialised once per codeDigest under `<data>/code/<hex>/` with the
 * upload module's extractor (bounded, no links, all-or-nothing), and its manifest is written beside
 * the code as `.aegis-manifest-<manifest hex>.yaml` (so the manifest's folder holds the code, as
 * the engine expects). Both digests are checked against the bytes before use.
 * Outputs: `<data>/outputs/<execution id>/`, created empty before the run, removed `retentionMs`
 * (default 24 h) after the execution ended.
 *
 * ARCHITECTURE NOTE (fail secure): an execution that cannot be materialised, or whose outputs
 * folder cannot be made, never reaches the engine: it ends `failed_to_start`. A worker that has
 * not managed to heartbeat for `staleMs` cancels everything it runs: the other workers are about
 * to record those executions `lost`, and nothing recorded as ended may keep running; likewise a
 * worker whose heartbeats resume after a gap longer than `staleMs` cancels each of its executions
 * that another worker recorded `lost` meanwhile.
 * LIMITATION: the code cache under `<data>/code/` is not pruned (one tree per code digest ever
 * run on this host). An output batch the Store refuses (database down) is dropped and reported
 * through onError; the execution's final status is still written when the database is back
 * before the worker is reaped. Reaping marks executions `lost` first and audits them after: if
 * the audit log refuses the event (reported through onError), the record still says `lost`.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { lstat, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { AuditSink } from '../audit/event.js';
import { isAegisError } from '../errors.js';
import type {
  AgentVersionRef,
  ExecutionEngine,
  ExecutionStatus,
  ExecutionSummary,
  FinalStatus,
  RunningExecution,
} from '../orchestrator/types.js';
import { StoreError } from './store/errors.js';
import type { AgentVersionRecord, ExecutionRecord, OutputChunk, Store } from './store/types.js';
import { UploadError } from './upload/errors.js';
import { extractCodeArchive } from './upload/extract.js';

/** Extracts a checked code archive into `destDir` (which must not exist); returns its digest. */
export type CodeExtractor = (archive: Buffer, destDir: string) => Promise<{ digest: string }>;

export interface DispatcherOptions {
  readonly store: Store;
  readonly engine: ExecutionEngine;
  /** This worker's id, unique in the cluster and stable across restarts of the same worker. */
  readonly workerId: string;
  /** The server's data folder (code cache and outputs live below it). */
  readonly dataDir: string;
  /** Executions run at once on this worker. */
  readonly capacity: number;
  /** Where `execution.lost` events go (the server's audit log). */
  readonly audit: AuditSink;
  readonly now?: () => number;
  readonly pollMs?: number;
  readonly heartbeatMs?: number;
  readonly staleMs?: number;
  /** Output is appended to the Store in batches at most this often (default 25 ms) or per 64 KiB. */
  readonly flushMs?: number;
  /** How long an ended execution's outputs folder is kept (default 24 h). */
  readonly retentionMs?: number;
  /** Keep the engine's warm pools in step with the Store's pool table (default true). */
  readonly syncPools?: boolean;
  readonly extract?: CodeExtractor;
  /** Background failures (a heartbeat that did not reach the database, ...); never thrown. */
  readonly onError?: (err: unknown, what: string) => void;
}

const FINAL: readonly ExecutionStatus[] = ['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost'];
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/u;
const DIGEST_RE = /^sha256:([0-9a-f]{64})$/u;
const FLUSH_BYTES = 64 * 1024;
const READ_PAGE = 1000;
const REF_CACHE = 256;
const EXIT_CANNOT_START = 125;

export function isFinalStatus(s: ExecutionStatus): s is FinalStatus {
  return FINAL.includes(s);
}

/**
 * The `exit` chunk's JSON, what SSE followers get last: the execution's summary (the same fields
 * as `aegis run --summary`), or for an execution that never ran to an end here (recorded `lost`)
 * at least these fields.
 */
export interface ExitData {
  readonly executionId: string;
  readonly status: FinalStatus;
  readonly exitCode: number | null;
  readonly durationMs: number | null;
  readonly [field: string]: unknown;
}

interface Local {
  readonly id: string;
  readonly record: ExecutionRecord;
  running: RunningExecution | null;
  cancelled: boolean;
  readonly decoders: { stdout: StringDecoder; stderr: StringDecoder };
  pending: Omit<OutputChunk, 'seq'>[];
  pendingBytes: number;
  flushTimer: NodeJS.Timeout | null;
  /** Appends in order, one at a time. */
  chain: Promise<void>;
  lastSeq: number;
  readonly events: EventEmitter;
}

function digestHex(d: string, what: string): string {
  const m = DIGEST_RE.exec(d);
  if (m?.[1] === undefined) throw new StoreError('store.corrupt', `${what} ${JSON.stringify(d)} is not a sha256 digest`);
  return m[1];
}

function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function errorInfo(err: unknown): { code: string; message: string } {
  if (isAegisError(err)) return { code: err.code, message: err.message };
  return { code: 'server.internal', message: err instanceof Error ? err.message : String(err) };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

export class Dispatcher {
  private readonly store: Store;
  private readonly engine: ExecutionEngine;
  readonly workerId: string;
  private readonly dataDir: string;
  private readonly capacity: number;
  private readonly audit: AuditSink;
  private readonly now: () => number;
  private readonly pollMs: number;
  private readonly heartbeatMs: number;
  private readonly staleMs: number;
  private readonly flushMs: number;
  private readonly retentionMs: number;
  private readonly syncPoolsEnabled: boolean;
  private readonly extract: CodeExtractor;
  private readonly onError: (err: unknown, what: string) => void;

  private readonly local = new Map<string, Local>();
  private readonly materialising = new Map<string, Promise<void>>();
  /** Versions already materialised here (a deployed version never changes), newest last. */
  private readonly refs = new Map<string, AgentVersionRef>();
  private readonly pools = new Map<string, { version: number; warm: number; ref: AgentVersionRef }>();
  private timers: NodeJS.Timeout[] = [];
  private claiming: Promise<void> | null = null;
  private claimAgain = false;
  private started = false;
  private stopping = false;
  private lastBeatOk = 0;
  private lastRetention = 0;
  private lastPoolSync = 0;
  /** One housekeeping round and one cancel poll at a time (a slow database must not pile them up). */
  private housekeepingBusy = false;
  private cancelPollBusy = false;
  private unsubscribe: (() => Promise<void>) | undefined;

  constructor(o: DispatcherOptions) {
    if (!Number.isSafeInteger(o.capacity) || o.capacity < 1)
      throw new StoreError('store.invalid', `invalid capacity ${String(o.capacity)}`);
    if (!ID_RE.test(o.workerId)) throw new StoreError('store.invalid', `invalid worker id ${JSON.stringify(o.workerId)}`);
    this.store = o.store;
    this.engine = o.engine;
    this.workerId = o.workerId;
    this.dataDir = o.dataDir;
    this.capacity = o.capacity;
    this.audit = o.audit;
    this.now = o.now ?? Date.now;
    this.pollMs = o.pollMs ?? 250;
    this.heartbeatMs = o.heartbeatMs ?? 1000;
    this.staleMs = o.staleMs ?? 10_000;
    this.flushMs = o.flushMs ?? 25;
    this.retentionMs = o.retentionMs ?? 24 * 3600 * 1000;
    this.syncPoolsEnabled = o.syncPools ?? true;
    this.extract = o.extract ?? ((archive, dest) => extractCodeArchive(archive, dest));
    this.onError = o.onError ?? (() => undefined);
  }

  /** Heartbeats, records this worker's own leftovers `lost`, and starts claiming. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await mkdir(join(this.dataDir, 'code'), { recursive: true, mode: 0o700 });
    await mkdir(join(this.dataDir, 'outputs'), { recursive: true, mode: 0o700 });
    const t = this.now();
    await this.store.heartbeat(this.workerId, t);
    this.lastBeatOk = t;
    await this.reap(this.workerId);
    if (this.store.subscribeQueued !== undefined) {
      try {
        this.unsubscribe = await this.store.subscribeQueued(() => this.kick());
      } catch (err) {
        this.onError(err, 'listen for queued executions (polling only)');
      }
    }
    this.timers.push(setInterval(() => this.kick(), this.pollMs));
    this.timers.push(setInterval(() => void this.housekeeping(), this.heartbeatMs));
    this.timers.push(setInterval(() => void this.pollCancels(), this.pollMs));
    for (const timer of this.timers) timer.unref();
    void this.housekeeping();
    this.kick();
  }

  /** Claims queued executions now (coalesced); call after creating one. */
  kick(): void {
    if (!this.started || this.stopping) return;
    if (this.claiming !== null) {
      this.claimAgain = true;
      return;
    }
    this.claiming = this.claim()
      .catch((err: unknown) => this.onError(err, 'claim'))
      .finally(() => {
        this.claiming = null;
        if (this.claimAgain) {
          this.claimAgain = false;
          this.kick();
        }
      });
  }

  /** True while `id` runs on this worker. */
  isLocal(id: string): boolean {
    return this.local.has(id);
  }

  /** Ids of the executions running here. */
  runningIds(): string[] {
    return [...this.local.keys()];
  }

  /** Cancels a local execution at once (TERM, grace, KILL: it ends `killed`); false when it does not run here. */
  cancel(id: string): boolean {
    const l = this.local.get(id);
    if (l === undefined) return false;
    l.cancelled = true;
    l.running?.cancel();
    return true;
  }

  /**
   * Stops claiming, cancels what runs here, and waits until each of those is recorded (output
   * flushed, final status written). The engine itself is the caller's to shut down.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await this.unsubscribe?.().catch(() => undefined);
    this.unsubscribe = undefined;
    await this.claiming;
    const waits = [...this.local.values()].map(
      (l) =>
        new Promise<void>((resolve) => {
          l.events.once('end', resolve);
          this.cancel(l.id);
        }),
    );
    await Promise.all(waits);
  }

  /**
   * The output of an execution from `afterSeq` on, ending after its `exit` chunk (or when it has
   * ended and nothing more is stored). A local execution wakes the follower as each batch is
   * stored; another worker's is followed by reading the Store every `pollMs`.
   */
  async *follow(id: string, afterSeq = 0, signal?: AbortSignal): AsyncGenerator<OutputChunk> {
    let last = afterSeq;
    for (;;) {
      if (signal?.aborted === true) return;
      const page = await this.store.readOutput(id, last, READ_PAGE);
      for (const c of page) {
        yield c;
        last = c.seq;
        if (c.kind === 'exit') return;
      }
      if (page.length === READ_PAGE) continue;
      const l = this.local.get(id);
      if (l !== undefined) {
        if (l.lastSeq > last) continue;
        const fresh = await this.nextBatch(l, signal);
        if (fresh !== null && fresh[0]?.seq === last + 1) {
          for (const c of fresh) {
            yield c;
            last = c.seq;
            if (c.kind === 'exit') return;
          }
        }
        continue;
      }
      const rec = await this.store.getExecution(id);
      if (rec === null) return;
      if (isFinalStatus(rec.status)) {
        // Ended: whatever was stored before the end is there now.
        for (;;) {
          const rest = await this.store.readOutput(id, last, READ_PAGE);
          for (const c of rest) {
            yield c;
            last = c.seq;
            if (c.kind === 'exit') return;
          }
          if (rest.length < READ_PAGE) return;
        }
      }
      await sleep(this.pollMs, signal);
    }
  }

  private nextBatch(l: Local, signal?: AbortSignal): Promise<OutputChunk[] | null> {
    return new Promise((resolve) => {
      const onChunks = (c: OutputChunk[]): void => done(c);
      const onEnd = (): void => done(null);
      const timer = setTimeout(() => done(null), Math.max(this.pollMs * 4, 1000));
      function done(v: OutputChunk[] | null): void {
        clearTimeout(timer);
        l.events.off('chunks', onChunks);
        l.events.off('end', onEnd);
        signal?.removeEventListener('abort', onEnd);
        resolve(v);
      }
      l.events.on('chunks', onChunks);
      l.events.once('end', onEnd);
      signal?.addEventListener('abort', onEnd, { once: true });
    });
  }

  // ---- claiming and running ----

  private async claim(): Promise<void> {
    for (;;) {
      if (this.stopping) return;
      const free = this.capacity - this.local.size;
      if (free <= 0) return;
      const got = await this.store.claimQueued(this.workerId, free, this.now());
      for (const rec of got) this.launch(rec);
      if (got.length < free) return;
    }
  }

  private launch(rec: ExecutionRecord): void {
    const l: Local = {
      id: rec.id,
      record: rec,
      running: null,
      cancelled: rec.cancelRequested,
      decoders: { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') },
      pending: [],
      pendingBytes: 0,
      flushTimer: null,
      chain: Promise.resolve(),
      lastSeq: 0,
      events: new EventEmitter(),
    };
    l.events.setMaxListeners(0);
    this.local.set(rec.id, l);
    void this.run(l);
  }

  private async run(l: Local): Promise<void> {
    const startedAt = this.now();
    let summary: ExecutionSummary;
    try {
      summary = await this.execute(l);
    } catch (err) {
      summary = {
        executionId: l.id,
        status: 'failed_to_start',
        exitCode: EXIT_CANNOT_START,
        durationMs: this.now() - startedAt,
        cpuMs: 0,
        maxMemoryBytes: 0,
        warm: false,
        error: errorInfo(err),
      };
    }
    try {
      this.flushDecoders(l);
      await this.flush(l);
      const at = this.now();
      const ok = await this.store.finishExecution(l.id, {
        status: summary.status,
        exitCode: summary.exitCode,
        durationMs: summary.durationMs,
        summary: { ...summary },
        at,
      });
      // When someone ended it first (a reaper that took this worker for dead), the record's end
      // stands and whoever ended it writes the exit chunk.
      if (ok) {
        const exit: ExitData = { ...summary };
        this.enqueue(l, { kind: 'exit', data: JSON.stringify(exit) });
      }
      await this.flush(l);
    } catch (err) {
      this.onError(err, `record the end of ${l.id}`);
    } finally {
      this.local.delete(l.id);
      l.events.emit('end');
      this.kick();
    }
  }

  /** Materialises, prepares the outputs folder and runs; throws only before the engine has it. */
  private async execute(l: Local): Promise<ExecutionSummary> {
    const rec = l.record;
    if (l.cancelled) {
      // Cancelled while queued: it never starts.
      return { executionId: rec.id, status: 'killed', exitCode: 137, durationMs: 0, cpuMs: 0, maxMemoryBytes: 0, warm: false };
    }
    if (!ID_RE.test(rec.id)) throw new StoreError('store.corrupt', `execution id ${JSON.stringify(rec.id)} is not a safe folder name`);
    const agent = await this.versionRef(rec.agent, rec.version);
    const outputsDir = join(this.dataDir, 'outputs', rec.id);
    await rm(outputsDir, { recursive: true, force: true });
    await mkdir(outputsDir, { mode: 0o700 });
    if (l.cancelled) {
      return { executionId: rec.id, status: 'killed', exitCode: 137, durationMs: 0, cpuMs: 0, maxMemoryBytes: 0, warm: false };
    }
    const running = this.engine.execute(
      {
        executionId: rec.id,
        agent,
        input: { args: rec.args, env: rec.env, ...(rec.stdin === null ? {} : { stdin: rec.stdin }) },
        outputsDir,
        principal: { id: rec.createdBy, worker: this.workerId },
      },
      {
        started: () => undefined,
        stdout: (b) => this.enqueue(l, { kind: 'stdout', data: l.decoders.stdout.write(b) }),
        stderr: (b) => this.enqueue(l, { kind: 'stderr', data: l.decoders.stderr.write(b) }),
        audit: (ev) => this.enqueue(l, { kind: 'audit', data: JSON.stringify(ev) }),
      },
    );
    l.running = running;
    if (l.cancelled) running.cancel();
    return running.done;
  }

  private flushDecoders(l: Local): void {
    this.enqueue(l, { kind: 'stdout', data: l.decoders.stdout.end() });
    this.enqueue(l, { kind: 'stderr', data: l.decoders.stderr.end() });
  }

  private enqueue(l: Local, c: Omit<OutputChunk, 'seq'>): void {
    if (c.data === '' && c.kind !== 'exit') return;
    l.pending.push(c);
    l.pendingBytes += c.data.length;
    if (l.pendingBytes >= FLUSH_BYTES) void this.flush(l);
    else l.flushTimer ??= setTimeout(() => void this.flush(l), this.flushMs);
  }

  /** Appends what is pending (in order, after any append in flight); resolves when it is stored. */
  private flush(l: Local): Promise<void> {
    if (l.flushTimer !== null) {
      clearTimeout(l.flushTimer);
      l.flushTimer = null;
    }
    const batch = l.pending;
    l.pending = [];
    l.pendingBytes = 0;
    if (batch.length === 0) return l.chain;
    l.chain = l.chain.then(async () => {
      try {
        const stored = await this.store.appendOutput(l.id, batch);
        const tail = stored.at(-1);
        if (tail !== undefined) l.lastSeq = tail.seq;
        if (stored.length > 0) l.events.emit('chunks', stored);
      } catch (err) {
        this.onError(err, `store output of ${l.id}`);
      }
    });
    return l.chain;
  }

  // ---- code cache ----

  private async versionRef(name: string, version: number): Promise<AgentVersionRef> {
    const key = `${name}\u0000${version}`;
    const known = this.refs.get(key);
    if (known !== undefined) return known;
    const v = await this.store.getAgentVersion(name, version);
    if (v === null) throw new StoreError('store.not_found', `agent ${name} version ${version} is not in the store`);
    const ref = await this.materialise(v);
    this.refs.set(key, ref);
    if (this.refs.size > REF_CACHE) this.refs.delete(this.refs.keys().next().value ?? key);
    return ref;
  }

  /** The agent version on this host: code extracted once per digest, manifest beside it. */
  async materialise(v: AgentVersionRecord): Promise<AgentVersionRef> {
    const codeHex = digestHex(v.codeDigest, 'code digest');
    const manifestHex = digestHex(v.manifestDigest, 'manifest digest');
    if (sha256(v.manifestText) !== v.manifestDigest)
      throw new StoreError('store.corrupt', `the stored manifest of ${v.name} version ${v.version} does not match its digest`);
    const dir = join(this.dataDir, 'code', codeHex);
    let pending = this.materialising.get(codeHex);
    if (pending === undefined) {
      pending = this.extractOnce(v.codeDigest, dir);
      this.materialising.set(codeHex, pending);
      pending.catch(() => this.materialising.delete(codeHex));
    }
    await pending;
    const manifestPath = join(dir, `.aegis-manifest-${manifestHex}.yaml`);
    try {
      await writeFile(manifestPath, v.manifestText, { flag: 'wx', mode: 0o644 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // Ours from an earlier run, or a file of that name in the code archive: only the same text is accepted.
      const st = await lstat(manifestPath);
      if (!st.isFile() || (await readFile(manifestPath, 'utf8')) !== v.manifestText)
        throw new StoreError('store.corrupt', `${manifestPath} exists with other content`);
    }
    return { name: v.name, version: v.version, manifestDigest: v.manifestDigest, codeDigest: v.codeDigest, manifestPath };
  }

  private async extractOnce(codeDigest: string, dir: string): Promise<void> {
    try {
      if ((await lstat(dir)).isDirectory()) return;
      throw new StoreError('store.corrupt', `${dir} is not a directory`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await mkdir(join(this.dataDir, 'code'), { recursive: true, mode: 0o700 });
    const archive = await this.store.getCodeArchive(codeDigest);
    if (archive === null) throw new StoreError('store.not_found', `code archive ${codeDigest} is not in the store`);
    if (sha256(archive) !== codeDigest)
      throw new StoreError('store.corrupt', `the stored code archive ${codeDigest} does not match its digest`);
    try {
      const r = await this.extract(archive, dir);
      if (r.digest !== codeDigest) throw new StoreError('store.corrupt', `extracted archive digest ${r.digest} is not ${codeDigest}`);
    } catch (err) {
      // Another process on this host extracted it first (extraction is all-or-nothing: the tree is whole).
      if (err instanceof UploadError && err.code === 'upload.destination_exists') return;
      throw err;
    }
  }

  // ---- housekeeping: heartbeat, reaping, pools, retention ----

  private async housekeeping(): Promise<void> {
    if (this.stopping || this.housekeepingBusy) return;
    this.housekeepingBusy = true;
    try {
      await this.housekeepingRound();
    } finally {
      this.housekeepingBusy = false;
    }
  }

  private async housekeepingRound(): Promise<void> {
    const t = this.now();
    const previous = this.lastBeatOk;
    try {
      await this.store.heartbeat(this.workerId, t);
      this.lastBeatOk = t;
    } catch (err) {
      this.onError(err, 'heartbeat');
      if (t - this.lastBeatOk > this.staleMs) for (const id of this.local.keys()) this.cancel(id);
      return;
    }
    // A gap longer than staleMs (a stalled process, a partition that healed): other workers may
    // have recorded our executions lost meanwhile; those must not keep running.
    if (t - previous > this.staleMs) await this.cancelReaped().catch((err: unknown) => this.onError(err, 'reaped check'));
    await this.reap().catch((err: unknown) => this.onError(err, 'reap'));
    if (this.syncPoolsEnabled && t - this.lastPoolSync >= this.heartbeatMs * 5) {
      this.lastPoolSync = t;
      await this.syncPools().catch((err: unknown) => this.onError(err, 'pools'));
    }
    if (t - this.lastRetention >= Math.min(60_000, this.retentionMs)) {
      this.lastRetention = t;
      await this.applyRetention().catch((err: unknown) => this.onError(err, 'retention'));
    }
  }

  private async reap(own?: string): Promise<void> {
    const t = this.now();
    const lost = await this.store.reapLost(t - this.staleMs, t, own);
    for (const e of lost) {
      const v = await this.store.getAgentVersion(e.agent, e.version).catch(() => null);
      await this.audit.append({
        actor: { agent: e.agent, execution: e.id },
        action: 'execution.lost',
        decision: 'error',
        reason: e.worker === this.workerId ? 'worker_restarted' : 'worker_dead',
        payload: {
          execution: e.id,
          agent: e.agent,
          version: e.version,
          worker: e.worker,
          reapedBy: this.workerId,
          startedAt: e.startedAt,
          manifestDigest: v?.manifestDigest ?? null,
          codeDigest: v?.codeDigest ?? null,
        },
      });
      const exit: ExitData = { executionId: e.id, status: 'lost', exitCode: null, durationMs: null };
      await this.store.appendOutput(e.id, [{ kind: 'exit', data: JSON.stringify(exit) }]);
    }
  }

  /** Cancels the local executions that the Store says have ended (recorded lost by another worker). */
  private async cancelReaped(): Promise<void> {
    for (const id of [...this.local.keys()]) {
      const rec = await this.store.getExecution(id);
      if (rec === null || isFinalStatus(rec.status)) this.cancel(id);
    }
  }

  private async pollCancels(): Promise<void> {
    if (this.local.size === 0 || this.stopping || this.cancelPollBusy) return;
    this.cancelPollBusy = true;
    try {
      for (const id of await this.store.cancelRequested(this.workerId)) this.cancel(id);
    } catch (err) {
      this.onError(err, 'cancel poll');
    } finally {
      this.cancelPollBusy = false;
    }
  }

  /** Keeps `warm` sandboxes of each pooled agent's latest version on this worker. */
  async syncPools(): Promise<void> {
    const wanted = new Map((await this.store.listPools()).map((p) => [p.agent, p.warm]));
    for (const [agent, have] of this.pools) {
      if (!wanted.has(agent)) {
        this.engine.setPool(have.ref, 0);
        this.pools.delete(agent);
      }
    }
    for (const [agent, warm] of wanted) {
      const v = await this.store.getAgent(agent);
      const have = this.pools.get(agent);
      if (v === null) {
        if (have !== undefined) this.engine.setPool(have.ref, 0);
        this.pools.delete(agent);
        continue;
      }
      if (have?.version === v.version && have.warm === warm) continue;
      if (have !== undefined && have.version !== v.version) this.engine.setPool(have.ref, 0);
      const ref = await this.materialise(v);
      this.engine.setPool(ref, warm);
      this.pools.set(agent, { version: v.version, warm, ref });
    }
  }

  /** Removes outputs folders of executions that ended more than `retentionMs` ago (or are unknown). */
  async applyRetention(): Promise<number> {
    const root = join(this.dataDir, 'outputs');
    let names: string[];
    try {
      names = await readdir(root);
    } catch {
      return 0;
    }
    const cutoff = this.now() - this.retentionMs;
    let removed = 0;
    for (const name of names) {
      if (this.local.has(name)) continue;
      const rec = ID_RE.test(name) ? await this.store.getExecution(name) : null;
      if (rec !== null && !(isFinalStatus(rec.status) && rec.finishedAt !== null && rec.finishedAt < cutoff)) continue;
      await rm(join(root, name), { recursive: true, force: true });
      removed++;
    }
    return removed;
  }
}
