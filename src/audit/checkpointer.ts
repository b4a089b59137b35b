/**
 * Signs, stores and publishes checkpoints of a writer's tree. The log never signs two
 * inconsistent checkpoints: its tree is only ever a prefix of the store (checked against the
 * latest stored and published checkpoints when opened and whenever it catches up), and signing
 * refuses a size below the latest stored one. After each checkpoint, the tree's frontier is saved
 * for the next open (log-tree.ts).
 */
import { signCheckpoint } from './checkpoint/checkpoint.js';
import type { NoteSigner } from './checkpoint/note.js';
import { AuditError } from './errors.js';
import type { LogTree } from './log-tree.js';
import { encodeFrontier } from './merkle/frontier.js';
import type { CheckpointSink } from './publish.js';
import type { AuditStore } from './store/types.js';

export interface CheckpointerOptions {
  readonly store: AuditStore;
  readonly tree: LogTree;
  readonly signer: NoteSigner;
  /** Checkpoint origin line. */
  readonly origin: string;
  readonly sink: CheckpointSink;
  /** Failures that must not fail the checkpoint itself (saving the frontier). */
  readonly onError: (err: unknown) => void;
}

export class Checkpointer {
  /** Signed and stored, not yet accepted by the sink (retried first next time). */
  private readonly unpublished: string[] = [];

  private readonly store: AuditStore;
  private readonly tree: LogTree;
  private readonly signer: NoteSigner;
  private readonly origin: string;
  private readonly sink: CheckpointSink;
  private readonly onError: (err: unknown) => void;

  constructor(o: CheckpointerOptions) {
    this.store = o.store;
    this.tree = o.tree;
    this.signer = o.signer;
    this.origin = o.origin;
    this.sink = o.sink;
    this.onError = o.onError;
  }

  /**
   * Signs, stores and publishes a checkpoint of the current tree if it grew since the last one
   * (and retries publishing earlier ones the sink refused).
   */
  async checkpoint(): Promise<void> {
    const { store, tree } = this;
    await this.republish();
    const size = tree.size;
    if (size <= tree.signedSize || tree.broken !== undefined) return;
    const note = signCheckpoint({ origin: this.origin, size, root: tree.tree.root(size), extensions: [] }, this.signer);
    const frontier = encodeFrontier(tree.tree.frontier());
    try {
      await store.appendCheckpoint(size, note);
    } catch (err) {
      if (err instanceof AuditError && err.code === 'audit.checkpoint_inconsistent') {
        // Another writer signed a bigger tree: check it against ours where we can, never sign
        // below it. (Not catchUp(): a batch write may be in flight, and only the write path may
        // add leaves to the tree.)
        tree.checkLatestStoredCheckpoint(await store.readCheckpoints(), false);
        return;
      }
      throw err;
    }
    tree.signedSize = size;
    this.unpublished.push(note);
    // After the checkpoint is durable: a frontier is only ever used with the checkpoint it matches.
    // Losing it costs the next open a full rebuild, so a failure is reported, not thrown.
    await store.writeFrontier(size, frontier).catch((err: unknown) => this.onError(err));
    await this.republish();
  }

  private async republish(): Promise<void> {
    while (this.unpublished.length > 0) {
      try {
        await this.sink.publish(this.unpublished[0] as string);
      } catch (cause) {
        throw new AuditError('audit.publish_failed', `cannot publish checkpoint to ${this.sink.description} (will retry)`, { cause });
      }
      this.unpublished.shift();
    }
  }
}
