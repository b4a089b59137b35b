import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { AuditError, type AuditErrorCode } from '../errors.js';
import { propertyRuns } from '../../test-support/props.js';
import { MerkleTree, hashLeaf, verifyConsistency, verifyInclusion } from './index.js';
import { hasCode } from '../../test-support/errors.js';

// dist/src/audit/merkle/ -> repo root -> the vectors beside this test's source (testdata/README.md)
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const VECTORS = resolve(REPO, 'src/audit/merkle/testdata');
// A missing fixture fails loudly (every test of this file), never skips.
if (!existsSync(join(VECTORS, 'LICENSE')) || !existsSync(join(VECTORS, 'inclusion')) || !existsSync(join(VECTORS, 'consistency'))) {
  throw new Error(`the RFC 6962 test vectors are missing from ${VECTORS}`);
}

function jsonFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return jsonFiles(p);
    return name.endsWith('.json') ? [p] : [];
  });
}

const b64 = (s: string | null): Uint8Array => (s === null ? new Uint8Array(0) : Buffer.from(s, 'base64'));
const proofOf = (p: string[] | null): Uint8Array[] => (p ?? []).map((s) => b64(s));

function expectCode(fn: () => void, codes: readonly AuditErrorCode[]): void {
  assert.throws(fn, hasCode(AuditError, ...codes));
}

describe('RFC 6962 vectors (transparency-dev/merkle testdata)', () => {
  describe('inclusion', () => {
    const files = jsonFiles(join(VECTORS, 'inclusion'));
    it('finds the vector files', () => assert.ok(files.length > 50, `only ${files.length} files`));
    for (const file of files) {
      const v = JSON.parse(readFileSync(file, 'utf8')) as {
        leafIdx: number;
        treeSize: number;
        root: string | null;
        leafHash: string | null;
        proof: string[] | null;
        wantErr: boolean;
      };
      it(`${relative(VECTORS, file)} (${v.wantErr ? 'must fail' : 'must pass'})`, () => {
        const run = (): void => verifyInclusion(v.leafIdx, v.treeSize, b64(v.leafHash), proofOf(v.proof), b64(v.root));
        if (v.wantErr) expectCode(run, ['audit.proof_invalid', 'audit.proof_range']);
        else run();
      });
    }
  });

  describe('consistency', () => {
    const files = jsonFiles(join(VECTORS, 'consistency'));
    it('finds the vector files', () => assert.ok(files.length > 50, `only ${files.length} files`));
    for (const file of files) {
      const v = JSON.parse(readFileSync(file, 'utf8')) as {
        size1: number;
        size2: number;
        root1: string | null;
        root2: string | null;
        proof: string[] | null;
        wantErr: boolean;
      };
      it(`${relative(VECTORS, file)} (${v.wantErr ? 'must fail' : 'must pass'})`, () => {
        const run = (): void => verifyConsistency(v.size1, v.size2, proofOf(v.proof), b64(v.root1), b64(v.root2));
        if (v.wantErr) expectCode(run, ['audit.proof_invalid', 'audit.proof_range']);
        else run();
      });
    }
  });
});

function treeOf(n: number): MerkleTree {
  const t = new MerkleTree();
  for (let i = 0; i < n; i++) t.append(hashLeaf(Buffer.from(`leaf ${i}`)));
  return t;
}

describe('MerkleTree', () => {
  it('matches the RFC 6962 reference root for the 8 standard leaves', () => {
    // Leaves from transparency-dev/merkle testonly: "", 0x00, 0x10, 0x2021, 0x3031, 0x40414243,
    // 0x5051525354555657, 0x606162636465666768696a6b6c6d6e6f; root of size 8 from the vectors.
    const leaves = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'];
    const t = new MerkleTree();
    for (const l of leaves) t.append(hashLeaf(Buffer.from(l, 'hex')));
    assert.equal(Buffer.from(t.root()).toString('base64'), 'XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=');
  });

  for (const [label, params] of propertyRuns(100)) {
    it(`generates inclusion proofs that verify, for random sizes and indexes (${label})`, () => {
      const t = treeOf(300);
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), (size, r) => {
          const index = r % size;
          verifyInclusion(index, size, t.leafHash(index), t.inclusionProof(index, size), t.root(size));
        }),
        params,
      );
    });
  }

  for (const [label, params] of propertyRuns(100)) {
    it(`generates consistency proofs that verify, for random size pairs (${label})`, () => {
      const t = treeOf(300);
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 300 }), (a, b) => {
          const [s1, s2] = a <= b ? [a, b] : [b, a];
          verifyConsistency(s1, s2, t.consistencyProof(s1, s2), t.root(s1), t.root(s2));
        }),
        params,
      );
    });
  }

  for (const [label, params] of propertyRuns(100)) {
    it(`rejects any single-bit change to an inclusion or consistency proof (${label})`, () => {
      const t = treeOf(77);
      fc.assert(
        fc.property(fc.integer({ min: 2, max: 77 }), fc.nat(), fc.nat(), fc.nat(), (size, r, which, bit) => {
          const index = r % size;
          const proof = t.inclusionProof(index, size).map((h) => Uint8Array.from(h));
          const p = proof[which % proof.length] as Uint8Array;
          p[(bit >> 3) % 32] = (p[(bit >> 3) % 32] as number) ^ (1 << (bit & 7));
          expectCode(() => verifyInclusion(index, size, t.leafHash(index), proof, t.root(size)), ['audit.proof_invalid']);
        }),
        params,
      );
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 76 }), fc.nat(), fc.nat(), (s1, which, bit) => {
          const proof = t.consistencyProof(s1, 77).map((h) => Uint8Array.from(h));
          const p = proof[which % proof.length] as Uint8Array;
          p[(bit >> 3) % 32] = (p[(bit >> 3) % 32] as number) ^ (1 << (bit & 7));
          expectCode(() => verifyConsistency(s1, 77, proof, t.root(s1), t.root(77)), ['audit.proof_invalid']);
        }),
        params,
      );
    });
  }

  describe('when asked for something out of range', () => {
    it('refuses an index at or beyond the size', () => {
      expectCode(() => treeOf(4).inclusionProof(4, 4), ['audit.proof_range']);
    });
    it('refuses a size beyond the tree', () => {
      expectCode(() => treeOf(4).root(5), ['audit.proof_range']);
      expectCode(() => treeOf(4).consistencyProof(2, 5), ['audit.proof_range']);
    });
    it('refuses a consistency proof from size 0', () => {
      expectCode(() => treeOf(4).consistencyProof(0, 4), ['audit.proof_range']);
    });
  });
});
