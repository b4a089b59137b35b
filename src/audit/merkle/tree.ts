/**
 * An append-only RFC 6962 Merkle tree held in memory: every complete subtree hash is kept (one
 * flat byte array per level, about 2 x 32 bytes per leaf), so appending costs one amortized
 * node hash, and roots and proofs for any size up to the current one cost O(log^2 n) hashes.
 *
 * A tree can also start from a frontier (`MerkleTree.fromFrontier`, see frontier.ts): it then
 * holds only the subtrees appended after that size (`base`) plus the frontier's roots, which is
 * enough to append and to compute roots for every size >= base; leaf hashes and proofs below
 * base need a tree built from all the leaves (they throw audit.proof_range here).
 * Pure: no I/O. Proofs follow RFC 6962 §2.1.1 (PATH) and §2.1.2 (SUBPROOF).
 */
import { AuditError } from '../errors.js';
import { type Frontier, frontierLength } from './frontier.js';
import { EMPTY_ROOT, HASH_SIZE, hashAdjacentChildren, hashChildren } from './hash.js';

/**
 * A growable array of 32-byte hashes stored contiguously: the nodes of one level from index
 * `start` on (start > 0 in a tree restored from a frontier). get/push/parentOf take positions
 * relative to `start`.
 */
class HashArray {
  private buf: Uint8Array;
  length = 0;

  constructor(
    readonly start = 0,
    capacity = 1024,
  ) {
    this.buf = new Uint8Array(HASH_SIZE * capacity);
  }

  /** Index (in the level) one past the last stored node. */
  get end(): number {
    return this.start + this.length;
  }

  push(h: Uint8Array, offset = 0): void {
    if ((this.length + 1) * HASH_SIZE > this.buf.length) {
      const next = new Uint8Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    const at = this.length * HASH_SIZE;
    for (let k = 0; k < HASH_SIZE; k++) this.buf[at + k] = h[offset + k] as number;
    this.length++;
  }

  get(i: number): Uint8Array {
    return this.buf.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE);
  }

  /** Hash of the node whose children are entries i and i + 1. */
  parentOf(i: number): Uint8Array {
    return hashAdjacentChildren(this.buf, i * HASH_SIZE);
  }
}

/** Highest level holding a frontier node of a tree of `size` leaves (floor(log2(size)), 0 for 0). */
function frontierTop(size: number): number {
  let l = 0;
  while (2 ** (l + 1) <= size) l++;
  return l;
}

/** Largest power of two strictly less than n (n >= 2). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

export class MerkleTree {
  /** levels[l] holds the hashes of the complete subtrees of 2^l leaves, left to right. */
  private readonly levels: HashArray[] = [new HashArray()];
  /** Size the tree was restored at (0: built from every leaf). */
  private baseSize = 0;

  /**
   * A tree of `f.size` leaves knowing only its frontier (frontier.ts). The caller must have
   * checked the frontier (against a signed root): it is taken as is.
   */
  static fromFrontier(f: Frontier): MerkleTree {
    if (
      !Number.isSafeInteger(f.size) ||
      f.size < 0 ||
      f.nodes.length !== frontierLength(f.size) ||
      f.nodes.some((n) => n.length !== HASH_SIZE)
    ) {
      throw new AuditError('audit.proof_invalid', `a frontier of size ${f.size} must hold ${frontierLength(f.size)} hashes of 32 bytes`);
    }
    const t = new MerkleTree();
    t.baseSize = f.size;
    t.levels.length = 0;
    let next = 0;
    // Level l holds node floor(size / 2^l) - 1 when bit l of size is set, nothing otherwise.
    const top = frontierTop(f.size);
    for (let l = 0, q = f.size; l <= top; l++, q = Math.floor(q / 2)) {
      const bit = q % 2;
      t.levels[l] = new HashArray(q - bit, 64);
    }
    for (let l = top; l >= 0; l--) {
      if (Math.floor(f.size / 2 ** l) % 2 === 1) (t.levels[l] as HashArray).push(f.nodes[next++] as Uint8Array);
    }
    return t;
  }

  get size(): number {
    return (this.levels[0] as HashArray).end;
  }

  /** Size below which this tree holds no leaves (0 unless restored from a frontier). */
  get base(): number {
    return this.baseSize;
  }

  /** The current frontier: the roots of the complete subtrees of [0, size), left to right. */
  frontier(): Frontier {
    const size = this.size;
    const nodes: Uint8Array[] = [];
    for (let l = frontierTop(size); l >= 0; l--) {
      const q = Math.floor(size / 2 ** l);
      if (q % 2 === 1) nodes.push(new Uint8Array((this.levels[l] as HashArray).get(q - 1 - (this.levels[l] as HashArray).start)));
    }
    return { size, nodes };
  }

  /** Appends a leaf hash (already SHA-256(0x00 || entry)). */
  append(leafHash: Uint8Array): void {
    if (leafHash.length !== HASH_SIZE) throw new AuditError('audit.proof_invalid', 'leaf hash must be 32 bytes');
    this.appendAt(leafHash, 0);
  }

  /** Appends `count` leaf hashes stored back to back in `hashes`. */
  appendMany(hashes: Uint8Array, count: number): void {
    if (!Number.isInteger(count) || hashes.length < count * HASH_SIZE)
      throw new AuditError('audit.proof_invalid', 'leaf hashes must be 32 bytes each');
    for (let i = 0; i < count; i++) this.appendAt(hashes, i * HASH_SIZE);
  }

  private appendAt(src: Uint8Array, offset: number): void {
    let level = 0;
    let node = src;
    let off = offset;
    for (;;) {
      const arr = this.levels[level] as HashArray;
      arr.push(node, off);
      off = 0;
      const i = arr.end - 1;
      if (i % 2 === 0) return;
      // The left sibling is stored: appended since the base, or a frontier node (see fromFrontier).
      node = arr.parentOf(arr.length - 2);
      level++;
      if (this.levels.length === level) this.levels.push(new HashArray());
    }
  }

  /** Hash of leaf `index` (a view; copy before keeping it). */
  leafHash(index: number): Uint8Array {
    this.checkRange(index, this.size - 1);
    this.checkFull(index);
    const leaves = this.levels[0] as HashArray;
    return leaves.get(index - leaves.start);
  }

  /** MTH(D[0:size]); size defaults to the current size. Restored trees: size >= base. */
  root(size: number = this.size): Uint8Array {
    this.checkRange(size, this.size);
    if (size === 0) return EMPTY_ROOT;
    if (size < this.baseSize) this.checkFull(size);
    return this.mth(0, size);
  }

  /** RFC 6962 PATH(index, D[0:size]): sibling hashes from the leaf up. */
  inclusionProof(index: number, size: number = this.size): Uint8Array[] {
    this.checkRange(size, this.size);
    this.checkFull(0);
    if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
      throw new AuditError('audit.proof_range', `index ${index} is not below tree size ${size}`);
    }
    const out: Uint8Array[] = [];
    this.path(index, 0, size, out);
    return out;
  }

  /** RFC 6962 PROOF(size1, D[0:size2]); 0 < size1 <= size2 <= current size. */
  consistencyProof(size1: number, size2: number = this.size): Uint8Array[] {
    this.checkRange(size2, this.size);
    this.checkFull(0);
    if (!Number.isSafeInteger(size1) || size1 < 1 || size1 > size2) {
      throw new AuditError('audit.proof_range', `size1 ${size1} must be in 1..${size2}`);
    }
    const out: Uint8Array[] = [];
    if (size1 < size2) this.subproof(size1, 0, size2, true, out);
    return out;
  }

  private checkRange(n: number, max: number): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > max) {
      throw new AuditError('audit.proof_range', `size ${n} is outside 0..${max}`);
    }
  }

  /** Restored trees hold no leaves below their base: proofs and old roots need a full tree. */
  private checkFull(from: number): void {
    if (from < this.baseSize) {
      throw new AuditError(
        'audit.proof_range',
        `this tree was restored from its frontier at size ${this.baseSize}: it holds nothing below it`,
      );
    }
  }

  /** MTH(D[begin:end]); begin is always aligned to the largest power of two in the range. */
  private mth(begin: number, end: number): Uint8Array {
    const n = end - begin;
    if ((n & (n - 1)) === 0 && n <= 2 ** 30) {
      const level = Math.log2(n);
      if (Number.isInteger(level) && begin % n === 0) {
        const arr = this.levels[level];
        const i = begin / n;
        if (arr !== undefined && i >= arr.start && i < arr.end) return arr.get(i - arr.start);
      }
      // Never reached for sizes >= base (see fromFrontier); a guard against endless recursion.
      if (n === 1) throw new AuditError('audit.proof_range', `leaf ${begin} is below the restored base ${this.baseSize}`);
    }
    const k = splitPoint(n);
    return hashChildren(this.mth(begin, begin + k), this.mth(begin + k, end));
  }

  private path(m: number, begin: number, end: number, out: Uint8Array[]): void {
    const n = end - begin;
    if (n === 1) return;
    const k = splitPoint(n);
    if (m < k) {
      this.path(m, begin, begin + k, out);
      out.push(this.mth(begin + k, end));
    } else {
      this.path(m - k, begin + k, end, out);
      out.push(this.mth(begin, begin + k));
    }
  }

  private subproof(m: number, begin: number, end: number, complete: boolean, out: Uint8Array[]): void {
    const n = end - begin;
    if (m === n) {
      if (!complete) out.push(this.mth(begin, end));
      return;
    }
    const k = splitPoint(n);
    if (m <= k) {
      this.subproof(m, begin, begin + k, complete, out);
      out.push(this.mth(begin + k, end));
    } else {
      this.subproof(m - k, begin + k, end, false, out);
      out.push(this.mth(begin, begin + k));
    }
  }
}
