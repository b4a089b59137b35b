/**
 * The log's data keys (envelope.ts): one per day, and one per (data subject, day). Writers create
 * them on first use and store them wrapped under the master key; readers only unwrap stored ones.
 * Destroying a key (retention, erasure) makes the payloads it encrypted unreadable for good.
 */
import type { RandomFill } from './event-id.js';
import { type MasterKeys, makeKeyId, unwrapDataKey, wrapDataKey } from './envelope.js';
import { AuditError } from './errors.js';
import type { AuditStore } from './store/types.js';

export interface DataKey {
  readonly id: string;
  readonly key: Uint8Array;
}

export interface KeyRingOptions {
  readonly store: AuditStore;
  readonly masterKeys: MasterKeys;
  /** Randomness for new keys; a ring without it is read-only (it can only unwrap). */
  readonly random?: RandomFill;
}

export class KeyRing {
  /** Current key per scope (`<subject hash or d>/<day>`), for writing. */
  private readonly current = new Map<string, DataKey>();
  /** Unwrapped keys by id, for reading. */
  private readonly unwrapped = new Map<string, Uint8Array>();

  private readonly store: AuditStore;
  private readonly masterKeys: MasterKeys;
  private readonly random: RandomFill | undefined;

  constructor(o: KeyRingOptions) {
    this.store = o.store;
    this.masterKeys = o.masterKeys;
    this.random = o.random;
  }

  /** The cached current key for (day, subject hash), without touching the store. */
  cached(day: string, subj: string | undefined): DataKey | undefined {
    return this.current.get(`${subj ?? 'd'}/${day}`);
  }

  /** The current data key for (day, subject hash), created and stored durably on first use. */
  async dataKey(day: string, subj: string | undefined): Promise<DataKey> {
    const cached = this.cached(day, subj);
    if (cached !== undefined) return cached;
    const random = this.random;
    if (random === undefined) throw new AuditError('audit.read_only', 'a read-only key ring cannot create data keys');
    const tag = new Uint8Array(4);
    random(tag);
    const id = makeKeyId(day, Buffer.from(tag).toString('hex'), subj);
    const key = new Uint8Array(32);
    const nonce = new Uint8Array(12);
    random(key);
    random(nonce);
    await this.store.putKey(id, wrapDataKey(this.masterKeys, id, key, nonce));
    const dk = { id, key };
    this.current.set(`${subj ?? 'd'}/${day}`, dk);
    this.unwrapped.set(id, key);
    return dk;
  }

  /** The data key `id`, unwrapped; undefined when it was destroyed. */
  async unwrap(id: string): Promise<Uint8Array | undefined> {
    let key = this.unwrapped.get(id);
    if (key === undefined) {
      const wrapped = await this.store.getKey(id);
      if (wrapped === undefined) return undefined;
      key = unwrapDataKey(this.masterKeys, id, wrapped);
      this.unwrapped.set(id, key);
    }
    return key;
  }

  /** Destroys key `id` in the store and forgets every copy. */
  async destroy(id: string): Promise<void> {
    await this.store.deleteKey(id);
    this.unwrapped.delete(id);
    for (const [scope, dk] of this.current) if (dk.id === id) this.current.delete(scope);
  }
}
