/**
 * The right frontier (compact range) of an RFC 6962 tree of size n: the roots of the complete
 * subtrees that n's binary decomposition splits [0, n) into, left (largest) to right (smallest),
 * at most log2(n) + 1 hashes. They are all a writer needs to append leaves and compute new roots.
 *
 * Persisted form (stored next to the signed checkpoints; untrusted on read):
 *   magic "AEGFRN1\n" || u64 BE size || popcount(size) x 32-byte nodes || SHA-256(all before)
 * The trailing digest only detects torn or truncated writes (anyone who can write the file can
 * recompute it); what makes a frontier trustworthy is that it hashes to the root of a signed
 * checkpoint of the same size (the log checks that before using it).
 * Pure: no I/O.
 */
import { createHash } from 'node:crypto';
import { EMPTY_ROOT, HASH_SIZE, hashChildren } from './hash.js';

const MAGIC = Buffer.from('AEGFRN1\n', 'ascii');

export interface Frontier {
  readonly size: number;
  /** Subtree roots, left to right (from the highest level down). */
  readonly nodes: readonly Uint8Array[];
}

/** Number of complete subtrees in the decomposition of `size` (its count of 1 bits). */
export function frontierLength(size: number): number {
  let n = 0;
  for (let s = size; s > 0; s = Math.floor(s / 2)) n += s % 2;
  return n;
}

/** MTH(D[0:size]) from the frontier: fold the subtree roots from the right (RFC 6962 §2.1). */
export function frontierRoot(f: Frontier): Uint8Array {
  const last = f.nodes.length - 1;
  if (last < 0) return EMPTY_ROOT;
  let root = f.nodes[last] as Uint8Array;
  for (let i = last - 1; i >= 0; i--) root = hashChildren(f.nodes[i] as Uint8Array, root);
  return root;
}

export function encodeFrontier(f: Frontier): Uint8Array {
  const body = Buffer.alloc(MAGIC.length + 8 + f.nodes.length * HASH_SIZE);
  MAGIC.copy(body, 0);
  body.writeBigUInt64BE(BigInt(f.size), MAGIC.length);
  f.nodes.forEach((n, i) => body.set(n, MAGIC.length + 8 + i * HASH_SIZE));
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/**
 * Parses a stored frontier (hostile input). Returns undefined for anything but a complete,
 * well-formed record: the caller then rebuilds the tree from the leaves.
 */
export function decodeFrontier(bytes: Uint8Array): Frontier | undefined {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const head = MAGIC.length + 8;
  if (buf.length < head + HASH_SIZE || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const big = buf.readBigUInt64BE(MAGIC.length);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  const size = Number(big);
  const count = frontierLength(size);
  if (buf.length !== head + count * HASH_SIZE + HASH_SIZE) return undefined;
  const body = buf.subarray(0, buf.length - HASH_SIZE);
  if (!createHash('sha256').update(body).digest().equals(buf.subarray(body.length))) return undefined;
  const nodes: Uint8Array[] = [];
  for (let i = 0; i < count; i++) nodes.push(new Uint8Array(body.subarray(head + i * HASH_SIZE, head + (i + 1) * HASH_SIZE)));
  return { size, nodes };
}
