/**
 * Verification of RFC 6962 inclusion and consistency proofs, following the reference algorithm
 * of transparency-dev/merkle (proof/verify.go), including its conventions:
 * - a consistency proof from size 0 is rejected (even 0 -> 0), as is size1 > size2;
 * - for size1 = size2 the proof must be empty and the roots equal;
 * - every proof hash and root must be exactly 32 bytes; a proof of the wrong length fails.
 * Pure: hashes come in as arguments. Sizes are JavaScript numbers (safe up to 2^53) and are
 * handled as BigInt internally so that bit operations do not overflow 32 bits.
 */
import { AuditError } from '../errors.js';
import { HASH_SIZE, bytesEqual, hashChildren } from './hash.js';

function checkSize(n: number, what: string): bigint {
  if (!Number.isSafeInteger(n) || n < 0) throw new AuditError('audit.proof_range', `${what} must be a non-negative integer`);
  return BigInt(n);
}

function checkHash(h: Uint8Array, what: string): void {
  if (h.length !== HASH_SIZE) throw new AuditError('audit.proof_invalid', `${what} has ${h.length} bytes, want ${HASH_SIZE}`);
}

function bitLen(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

function onesCount(x: bigint): number {
  let c = 0;
  for (const ch of x.toString(2)) if (ch === '1') c++;
  return c;
}

function trailingZeros(x: bigint): number {
  if (x === 0n) return 64;
  let n = 0;
  while ((x & 1n) === 0n) {
    x >>= 1n;
    n++;
  }
  return n;
}

/** Splits an inclusion proof length into the inner part (below the split) and the border part. */
function decompInclProof(index: bigint, size: bigint): [number, number] {
  const inner = bitLen(index ^ (size - 1n));
  const border = onesCount(index >> BigInt(inner));
  return [inner, border];
}

function chainInner(seed: Uint8Array, proof: readonly Uint8Array[], index: bigint): Uint8Array {
  proof.forEach((h, i) => {
    seed = ((index >> BigInt(i)) & 1n) === 0n ? hashChildren(seed, h) : hashChildren(h, seed);
  });
  return seed;
}

function chainInnerRight(seed: Uint8Array, proof: readonly Uint8Array[], index: bigint): Uint8Array {
  proof.forEach((h, i) => {
    if (((index >> BigInt(i)) & 1n) === 1n) seed = hashChildren(h, seed);
  });
  return seed;
}

function chainBorderRight(seed: Uint8Array, proof: readonly Uint8Array[]): Uint8Array {
  for (const h of proof) seed = hashChildren(h, seed);
  return seed;
}

/** Root implied by an inclusion proof; throws AuditError('audit.proof_invalid' | 'audit.proof_range'). */
export function rootFromInclusionProof(index: number, size: number, leafHash: Uint8Array, proof: readonly Uint8Array[]): Uint8Array {
  const idx = checkSize(index, 'index');
  const sz = checkSize(size, 'size');
  if (idx >= sz) throw new AuditError('audit.proof_range', `index ${index} is beyond size ${size}`);
  checkHash(leafHash, 'leaf hash');
  proof.forEach((h, i) => checkHash(h, `proof[${i}]`));
  const [inner, border] = decompInclProof(idx, sz);
  if (proof.length !== inner + border) {
    throw new AuditError('audit.proof_invalid', `wrong proof size ${proof.length}, want ${inner + border}`);
  }
  const res = chainInner(leafHash, proof.slice(0, inner), idx);
  return chainBorderRight(res, proof.slice(inner));
}

/** Verifies that `leafHash` is leaf `index` of the tree of `size` leaves with root `root`. */
export function verifyInclusion(index: number, size: number, leafHash: Uint8Array, proof: readonly Uint8Array[], root: Uint8Array): void {
  checkHash(root, 'root');
  const calc = rootFromInclusionProof(index, size, leafHash, proof);
  if (!bytesEqual(calc, root)) throw new AuditError('audit.proof_invalid', 'inclusion proof does not lead to the root');
}

/** Verifies that the tree (size2, root2) extends the tree (size1, root1). */
export function verifyConsistency(size1: number, size2: number, proof: readonly Uint8Array[], root1: Uint8Array, root2: Uint8Array): void {
  const s1 = checkSize(size1, 'size1');
  const s2 = checkSize(size2, 'size2');
  if (s2 < s1) throw new AuditError('audit.proof_range', `size2 (${size2}) < size1 (${size1})`);
  if (s1 === 0n) throw new AuditError('audit.proof_range', 'consistency proof from an empty tree is meaningless');
  if (s1 === s2) {
    if (proof.length > 0) throw new AuditError('audit.proof_invalid', 'sizes are equal but the proof is not empty');
    if (!bytesEqual(root1, root2)) throw new AuditError('audit.proof_invalid', 'sizes are equal but the roots differ');
    return;
  }
  if (proof.length === 0) throw new AuditError('audit.proof_invalid', 'empty consistency proof');
  checkHash(root1, 'root1');
  checkHash(root2, 'root2');
  proof.forEach((h, i) => checkHash(h, `proof[${i}]`));

  const [fullInner, border] = decompInclProof(s1 - 1n, s2);
  const shift = trailingZeros(s1);
  const inner = fullInner - shift; // shift < inner because size1 < size2

  // The proof starts with the root of the subtree of size 2^shift, unless size1 is that subtree.
  let seed: Uint8Array;
  let start: number;
  if (s1 === 1n << BigInt(shift)) {
    seed = root1;
    start = 0;
  } else {
    seed = proof[0] as Uint8Array;
    start = 1;
  }
  if (proof.length !== start + inner + border) {
    throw new AuditError('audit.proof_invalid', `wrong proof size ${proof.length}, want ${start + inner + border}`);
  }
  const rest = proof.slice(start);
  const mask = (s1 - 1n) >> BigInt(shift);
  let hash1 = chainInnerRight(seed, rest.slice(0, inner), mask);
  hash1 = chainBorderRight(hash1, rest.slice(inner));
  if (!bytesEqual(hash1, root1)) throw new AuditError('audit.proof_invalid', 'consistency proof does not lead to root1');
  let hash2 = chainInner(seed, rest.slice(0, inner), mask);
  hash2 = chainBorderRight(hash2, rest.slice(inner));
  if (!bytesEqual(hash2, root2)) throw new AuditError('audit.proof_invalid', 'consistency proof does not lead to root2');
}
