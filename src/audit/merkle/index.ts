/** RFC 6962 Merkle tree: hashing, an in-memory tree with proof generation, proof verification. */
export { EMPTY_ROOT, HASH_SIZE, bytesEqual, hashChildren, hashLeaf } from './hash.js';
export { MerkleTree } from './tree.js';
export { rootFromInclusionProof, verifyConsistency, verifyInclusion } from './verify.js';
