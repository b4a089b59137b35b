/**
 * RFC 6962 section 2.1 hashing with SHA-256. Pure: no I/O.
 */
import { createHash, hash } from 'node:crypto';

/** Size in bytes of every hash in the tree (SHA-256). */
export const HASH_SIZE = 32;

// RFC 6962 §2.1: leaf and interior-node domain-separation prefixes.
const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

/** MTH({}) = SHA-256() — the root of the empty tree. */
export const EMPTY_ROOT: Uint8Array = createHash('sha256').digest();

/** MTH({d}) = SHA-256(0x00 || d). */
export function hashLeaf(entry: Uint8Array): Uint8Array {
  return createHash('sha256').update(LEAF_PREFIX).update(entry).digest();
}

// Scratch buffer for interior nodes: 0x01 || left || right (single-threaded, never escapes).
const nodeScratch = Buffer.alloc(1 + 2 * HASH_SIZE);
nodeScratch[0] = NODE_PREFIX[0] as number;

/** SHA-256(0x01 || left || right). */
export function hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array {
  if (left.length !== HASH_SIZE || right.length !== HASH_SIZE) {
    return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
  }
  nodeScratch.set(left, 1);
  nodeScratch.set(right, 1 + HASH_SIZE);
  return hash('sha256', nodeScratch, 'buffer') as unknown as Uint8Array;
}

/** SHA-256(0x01 || buf[offset, offset + 64)): two sibling hashes stored side by side. */
export function hashAdjacentChildren(buf: Uint8Array, offset: number): Uint8Array {
  for (let k = 0; k < 2 * HASH_SIZE; k++) nodeScratch[1 + k] = buf[offset + k] as number;
  return hash('sha256', nodeScratch, 'buffer') as unknown as Uint8Array;
}

let leafScratch = Buffer.alloc(4096);

/** hashLeaf without a Hash object: copies 0x00 || entry into a scratch buffer, hashes once. */
export function hashLeafFast(entry: Uint8Array): Uint8Array {
  if (entry.length + 1 > leafScratch.length) leafScratch = Buffer.alloc(Math.max(entry.length + 1, leafScratch.length * 2));
  leafScratch[0] = 0x00;
  leafScratch.set(entry, 1);
  return hash('sha256', leafScratch.subarray(0, entry.length + 1), 'buffer') as unknown as Uint8Array;
}

/** Constant-length byte comparison (hashes are public, so timing does not matter here). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
