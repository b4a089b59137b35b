/**
 * An append-only RFC 6962 Merkle tree held in memory: every complete subtree hash is kept (one
 * flat byte array per level, about 2 x 32 bytes per leaf), so appending costs one amortized
 * node hash, and roots and proofs for any size up to the current one cost O(log^2 n) hashes.
 * Pure: no I/O. Proofs follow RFC 6962 §2.1.1 (PATH) and §2.1.2 (SUBPROOF).
 */
import { AuditError } from '../errors.js';
import { EMPTY_ROOT, HASH_SIZE, hashAdjacentChildren, hashChildren } from './hash.js';

/** A growable array of 32-byte hashes stored contiguously. */
class HashArray {
  private buf = new Uint8Array(HASH_SIZE * 1024);
  length = 0;

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

/** Largest power of two strictly less than n (n >= 2). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

export class MerkleTree {
  /** levels[l] holds the hashes of the complete subtrees of 2^l leaves, left to right. */
  private readonly levels: HashArray[] = [new HashArray()];

  get size(): number {
    return (this.levels[0] as HashArray).length;
  }

  /** Appends a leaf hash (already SHA-256(0x00 || entry)). */
  append(leafHash: Uint8Array): void {
    if (leafHash.length !== HASH_SIZE) throw new AuditError('proof-invalid', 'leaf hash must be 32 bytes');
    this.appendAt(leafHash, 0);
  }

  /** Appends `count` leaf hashes stored back to back in `hashes`. */
  appendMany(hashes: Uint8Array, count: number): void {
    if (!Number.isInteger(count) || hashes.length < count * HASH_SIZE) throw new AuditError('proof-invalid', 'leaf hashes must be 32 bytes each');
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
      const i = arr.length - 1;
      if (i % 2 === 0) return;
      node = arr.parentOf(i - 1);
      level++;
      if (this.levels.length === level) this.levels.push(new HashArray());
    }
  }

  /** Hash of leaf `index` (a view; copy before keeping it). */
  leafHash(index: number): Uint8Array {
    this.checkRange(index, this.size - 1);
    return (this.levels[0] as HashArray).get(index);
  }

  /** MTH(D[0:size]); size defaults to the current size. */
  root(size: number = this.size): Uint8Array {
    this.checkRange(size, this.size);
    return size === 0 ? EMPTY_ROOT : this.mth(0, size);
  }

  /** RFC 6962 PATH(index, D[0:size]): sibling hashes from the leaf up. */
  inclusionProof(index: number, size: number = this.size): Uint8Array[] {
    this.checkRange(size, this.size);
    if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
      throw new AuditError('proof-range', `index ${index} is not below tree size ${size}`);
    }
    const out: Uint8Array[] = [];
    this.path(index, 0, size, out);
    return out;
  }

  /** RFC 6962 PROOF(size1, D[0:size2]); 0 < size1 <= size2 <= current size. */
  consistencyProof(size1: number, size2: number = this.size): Uint8Array[] {
    this.checkRange(size2, this.size);
    if (!Number.isSafeInteger(size1) || size1 < 1 || size1 > size2) {
      throw new AuditError('proof-range', `size1 ${size1} must be in 1..${size2}`);
    }
    const out: Uint8Array[] = [];
    if (size1 < size2) this.subproof(size1, 0, size2, true, out);
    return out;
  }

  private checkRange(n: number, max: number): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > max) {
      throw new AuditError('proof-range', `size ${n} is outside 0..${max}`);
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
        if (arr !== undefined && i < arr.length) return arr.get(i);
      }
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
