import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { AuditError } from '../errors.js';
import { propertyRuns } from '../../test-support/props.js';
import { decodeFrontier, encodeFrontier, frontierLength, frontierRoot } from './frontier.js';
import { EMPTY_ROOT } from './hash.js';
import { MerkleTree, hashLeaf } from './index.js';

const leaf = (i: number): Uint8Array => hashLeaf(Buffer.from(`leaf ${i}`));

function fullTree(n: number): MerkleTree {
  const t = new MerkleTree();
  for (let i = 0; i < n; i++) t.append(leaf(i));
  return t;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('frontier (compact range)', () => {
  it('holds one subtree root per 1 bit of the size, and hashes to the root', () => {
    for (const n of [0, 1, 2, 3, 4, 5, 7, 8, 13, 64, 100, 1023, 1024, 1025]) {
      const t = fullTree(n);
      const f = t.frontier();
      assert.equal(f.size, n);
      assert.equal(f.nodes.length, frontierLength(n));
      assert.equal(hex(frontierRoot(f)), hex(t.root()), `size ${n}`);
    }
    assert.equal(hex(frontierRoot({ size: 0, nodes: [] })), hex(EMPTY_ROOT));
  });

  for (const [label, params] of propertyRuns(200)) {
    it(`property: frontier from the leaves == frontier encoded, decoded and restored (${label})`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 1500 }), (n) => {
          const f = fullTree(n).frontier();
          const back = decodeFrontier(encodeFrontier(f));
          assert.ok(back !== undefined);
          assert.equal(back.size, n);
          assert.deepEqual(back.nodes.map(hex), f.nodes.map(hex));
          const restored = MerkleTree.fromFrontier(back);
          assert.equal(restored.size, n);
          assert.equal(restored.base, n);
          assert.deepEqual(restored.frontier().nodes.map(hex), f.nodes.map(hex));
          assert.equal(hex(restored.root()), hex(fullTree(n).root()));
        }),
        params,
      );
    });
  }

  for (const [label, params] of propertyRuns(150)) {
    it(`property: appending after a reload gives the roots and frontiers of a full rebuild, at every size (${label})`, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: 2000 }),
          fc.integer({ min: 0, max: 300 }),
          fc.integer({ min: 1, max: 7 }),
          (base, extra, step) => {
            const full = fullTree(base + extra);
            const restored = MerkleTree.fromFrontier(decodeFrontier(encodeFrontier(fullTree(base).frontier()))!);
            for (let i = base; i < base + extra;) {
              const k = Math.min(step, base + extra - i);
              const batch = Buffer.concat(Array.from({ length: k }, (_, j) => leaf(i + j)));
              restored.appendMany(batch, k);
              i += k;
              assert.equal(hex(restored.root()), hex(full.root(i)), `base ${base}, size ${i}`);
              assert.equal(hex(frontierRoot(restored.frontier())), hex(full.root(i)));
            }
            assert.deepEqual(restored.frontier().nodes.map(hex), full.frontier().nodes.map(hex));
            // Every size from the base on, also the ones between batches.
            for (let s = base; s <= base + extra; s++) assert.equal(hex(restored.root(s)), hex(full.root(s)), `root(${s})`);
            for (let i = base; i < base + extra; i++) assert.equal(hex(restored.leafHash(i)), hex(leaf(i)));
          },
        ),
        params,
      );
    });
  }

  describe('when a restored tree is asked about sizes below its base', () => {
    it('refuses roots, leaf hashes and proofs with audit.proof_range', () => {
      const t = MerkleTree.fromFrontier(fullTree(37).frontier());
      t.append(leaf(37));
      for (const fn of [() => t.root(36), () => t.leafHash(36), () => t.inclusionProof(37, 38), () => t.consistencyProof(37, 38)]) {
        assert.throws(fn, (err: unknown) => err instanceof AuditError && err.code === 'audit.proof_range');
      }
      assert.equal(hex(t.leafHash(37)), hex(leaf(37)));
      assert.equal(hex(t.root(0)), hex(EMPTY_ROOT));
    });
  });

  describe('when the stored frontier is damaged (hostile input)', () => {
    const good = Buffer.from(encodeFrontier(fullTree(13).frontier()));
    it('rejects a torn (truncated) record', () => {
      for (let cut = 0; cut < good.length; cut += 7) assert.equal(decodeFrontier(good.subarray(0, cut)), undefined, `cut at ${cut}`);
    });
    it('rejects a flipped byte anywhere (checksum)', () => {
      for (let i = 0; i < good.length; i++) {
        const bad = Buffer.from(good);
        bad[i] = (bad[i] as number) ^ 0x40;
        assert.equal(decodeFrontier(bad), undefined, `byte ${i}`);
      }
    });
    it('rejects a size whose node count does not match, even with a valid checksum', () => {
      const body = Buffer.from(good.subarray(0, good.length - 32));
      body.writeBigUInt64BE(16n, 8); // 13 has three 1 bits, 16 has one
      const forged = Buffer.concat([body, createHash('sha256').update(body).digest()]);
      assert.equal(decodeFrontier(forged), undefined);
    });
    it('refuses to restore a frontier with the wrong number of nodes', () => {
      assert.throws(
        () => MerkleTree.fromFrontier({ size: 5, nodes: [leaf(0)] }),
        (err: unknown) => err instanceof AuditError && err.code === 'audit.proof_invalid',
      );
    });
  });
});
