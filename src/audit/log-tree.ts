/**
 * The log's Merkle tree as the store holds it, for writers and readers alike: restored from the
 * saved frontier when a signed checkpoint vouches for it, else from every leaf hash; caught up
 * with entries other writers stored; checked against the latest stored checkpoint and the newest
 * published ones. Reads the store only: it never writes.
 *
 * Opening does not read every leaf: each checkpoint a writer signs is followed by the tree's
 * frontier (merkle/frontier.ts), saved in the store. The frontier is used only if it hashes to the
 * root of a stored checkpoint of its size that verifies under the log key (a mismatch is
 * audit.store_corrupt: refused); then only the leaves stored after it are read. No frontier, a torn one,
 * or one that no checkpoint signs: the tree is rebuilt from every leaf hash. Proofs load the whole
 * tree from the store on demand (fullTree()).
 *
 * Any inconsistency is audit.store_corrupt and sticks (`broken`): a log that saw one refuses to go on.
 */
import { type Checkpoint, openCheckpoint } from './checkpoint/checkpoint.js';
import type { NoteVerifier } from './checkpoint/note.js';
import { AuditError } from './errors.js';
import { bytesEqual, MerkleTree } from './merkle/index.js';
import { decodeFrontier, frontierRoot } from './merkle/frontier.js';
import type { AuditStore } from './store/types.js';

/** Stored checkpoints searched (newest first) for the one a saved frontier belongs to. */
const FRONTIER_SEARCH = 64;
/** Newest published checkpoints checked against the store at open. */
const PUBLISHED_CHECKED = 16;

export interface LogTreeOptions {
  readonly store: AuditStore;
  readonly verifier: NoteVerifier;
  /** Checkpoint origin line. */
  readonly origin: string;
}

export class LogTree {
  /** The tree of every entry seen (from `base` on when restored from a frontier). */
  tree = new MerkleTree();
  /** Every leaf, loaded from the store for proofs when `tree` was restored from a frontier. */
  private full: MerkleTree | undefined;
  /** Size of the latest stored checkpoint seen (-1: none). */
  signedSize = -1;
  /** The first inconsistency found; every later use of the log fails with it. */
  broken: AuditError | undefined;

  private readonly store: AuditStore;
  private readonly verifier: NoteVerifier;
  private readonly origin: string;

  constructor(o: LogTreeOptions) {
    this.store = o.store;
    this.verifier = o.verifier;
    this.origin = o.origin;
  }

  /** Restores, catches up and checks against `published` (the newest few). */
  static async open(o: LogTreeOptions, published: readonly string[]): Promise<LogTree> {
    const t = new LogTree(o);
    await t.restoreFrontier();
    await t.catchUp();
    await t.checkPublished(published);
    return t;
  }

  get size(): number {
    return this.tree.size;
  }

  /**
   * Starts the tree from the saved frontier if a stored checkpoint of the same size verifies and
   * has the frontier's root. Never trusts it beyond that: a frontier that no checkpoint signs
   * (or a torn one) is ignored and the tree rebuilt from the leaves; one that contradicts the
   * signed root means the store was damaged or tampered with, and the log refuses to open.
   */
  private async restoreFrontier(): Promise<void> {
    const bytes = await this.store.readFrontier();
    const f = bytes === undefined ? undefined : decodeFrontier(bytes);
    if (f === undefined || f.size === 0) return;
    const notes = await this.store.readCheckpoints();
    for (let i = notes.length - 1; i >= 0 && i >= notes.length - FRONTIER_SEARCH; i--) {
      let cp: Checkpoint;
      try {
        cp = openCheckpoint(notes[i] as string, this.verifier, this.origin);
      } catch {
        return; // catchUp() reports a damaged latest checkpoint; older ones are verify's job
      }
      if (cp.size < f.size) return;
      if (cp.size === f.size) {
        if (!bytesEqual(frontierRoot(f), cp.root)) {
          throw this.fail(
            new AuditError(
              'audit.store_corrupt',
              `the saved tree frontier (size ${f.size}) does not match stored checkpoint ${i}: the store is damaged or was tampered with`,
            ),
          );
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
        cps.push({ cp: openCheckpoint(published[i] as string, this.verifier, this.origin), what: `published checkpoint ${i}` });
      } catch (cause) {
        throw this.fail(new AuditError('audit.store_corrupt', `published checkpoint ${i} does not verify under the log key`, { cause }));
      }
    }
    const recent = cps.filter((c) => c.cp.size >= this.tree.base);
    for (const { cp, what } of recent) this.checkAgainst(cp, what);
    const newest = cps.reduce<{ cp: Checkpoint; what: string } | undefined>(
      (a, c) => (a === undefined || c.cp.size > a.cp.size ? c : a),
      undefined,
    );
    if (recent.length > 0 || newest === undefined) return;
    if (!bytesEqual((await this.fullTree()).root(newest.cp.size), newest.cp.root)) {
      throw this.fail(new AuditError('audit.store_corrupt', `${newest.what} (size ${newest.cp.size}) does not match the stored entries`));
    }
  }

  /**
   * The tree with every leaf, for proofs: this log's tree if it holds them all, else built from
   * the store's leaf hashes up to this log's size (checked against this log's root).
   */
  async fullTree(): Promise<MerkleTree> {
    if (this.tree.base === 0) return this.tree;
    const size = this.tree.size;
    const t = this.full ?? new MerkleTree();
    if (t.size < size) {
      const { hashes } = await this.store.readLeafHashes(t.size);
      if (t.size + hashes.length / 32 < size) {
        throw this.fail(
          new AuditError('audit.store_corrupt', `the store holds ${t.size + hashes.length / 32} entries, fewer than ${size}`),
        );
      }
      t.appendMany(hashes, size - t.size);
    }
    if (!bytesEqual(t.root(size), this.tree.root())) {
      throw this.fail(
        new AuditError(
          'audit.store_corrupt',
          `the stored leaf hashes do not match the tree restored from the saved frontier (size ${this.tree.base})`,
        ),
      );
    }
    this.full = t;
    return t;
  }

  /** MTH at `size` (sizes below a restored frontier read the store's leaf hashes). */
  async root(size: number = this.tree.size): Promise<Uint8Array> {
    return (size >= this.tree.base ? this.tree : await this.fullTree()).root(size);
  }

  /**
   * Reads entries other writers appended and re-checks the latest stored checkpoint. A writer
   * calls it only when none of its batch writes is in flight. The checkpoints are read before
   * the leaves: the store is append-only, so every entry a checkpoint read first covers is among
   * the leaves read after it, even while other writers append and sign in between.
   */
  async catchUp(): Promise<void> {
    const notes = await this.store.readCheckpoints();
    const { size, hashes } = await this.store.readLeafHashes(this.tree.size);
    if (size < this.tree.size) {
      throw this.fail(
        new AuditError(
          'audit.store_corrupt',
          `the store holds ${size} entries, fewer than the ${this.tree.size} already seen (truncated or rolled back)`,
        ),
      );
    }
    this.tree.appendMany(hashes, hashes.length / 32);
    this.checkLatestStoredCheckpoint(notes, true);
  }

  /**
   * Verifies the latest of the stored checkpoints `notes` against the tree. `caughtUp`: the tree
   * holds every entry stored when `notes` was read, so a checkpoint beyond it means entries were
   * removed; otherwise such a checkpoint (another writer's) is checked later, when this log
   * catches up.
   */
  checkLatestStoredCheckpoint(notes: readonly string[], caughtUp: boolean): void {
    const latest = notes.at(-1);
    if (latest === undefined) return;
    let cp: Checkpoint;
    try {
      cp = openCheckpoint(latest, this.verifier, this.origin);
    } catch (cause) {
      throw this.fail(
        new AuditError('audit.store_corrupt', `latest stored checkpoint (${notes.length - 1}) does not verify under the log key`, {
          cause,
        }),
      );
    }
    if (cp.size <= this.tree.size || caughtUp) this.checkAgainst(cp, `stored checkpoint ${notes.length - 1}`);
    this.signedSize = Math.max(this.signedSize, cp.size);
  }

  private checkAgainst(cp: Checkpoint, what: string): void {
    if (cp.size > this.tree.size) {
      throw this.fail(
        new AuditError(
          'audit.store_corrupt',
          `${what} has size ${cp.size} but the store holds ${this.tree.size} entries (truncated or rolled back)`,
        ),
      );
    }
    if (!bytesEqual(this.tree.root(cp.size), cp.root)) {
      throw this.fail(new AuditError('audit.store_corrupt', `${what} (size ${cp.size}) does not match the stored entries`));
    }
  }

  fail(err: AuditError): AuditError {
    this.broken = err;
    return err;
  }
}
