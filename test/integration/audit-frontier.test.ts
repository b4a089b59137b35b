/**
 * Opening the audit log for append from its saved frontier (merkle/frontier.ts) instead of every
 * leaf hash, on a 200,000-event embedded log. Cost is asserted as the number of leaf hashes the
 * store reads (FileStore.leafHashesScanned), never as time (timings are in bench/audit.ts).
 * Tamper and damage: a modified frontier file is refused (audit.store_corrupt), a deleted or torn one
 * makes the log rebuild from every leaf, and neither changes what `verify` says.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuditEventInput, type Timers, auditPaths, openAuditLog, trustedVerifier, verifyLog } from '../../src/audit/index.js';
import { AuditError } from '../../src/audit/errors.js';
import { MerkleTree, verifyConsistency, verifyInclusion } from '../../src/audit/merkle/index.js';
import { encodeFrontier } from '../../src/audit/merkle/frontier.js';
import { FileStore } from '../../src/audit/store/file-store.js';

const N = 200_000;
const ENV = {};
const noTimers: Timers = { setInterval: () => null, clearInterval: () => undefined };

const ev = (i: number): AuditEventInput => ({ actor: { agent: 'frontier' }, action: 'test.append', decision: 'info', payload: { i } });

/** Opens the log on a FileStore handle the test can ask how many leaf hashes it read. */
async function openCounted(home: string, timers?: Timers): Promise<{ log: Awaited<ReturnType<typeof openAuditLog>>; store: FileStore }> {
  const store = await FileStore.open(auditPaths(home).dir);
  const log = await openAuditLog({ home, env: ENV, store, inlineEncoding: true, ...(timers !== undefined ? { timers } : {}) });
  return { log, store };
}

async function verifies(home: string): Promise<{ size: number; root: Uint8Array }> {
  const store = await FileStore.open(auditPaths(home).dir);
  try {
    const { verifier } = await trustedVerifier(home, ENV);
    const r = await verifyLog({ store, verifier, origin: verifier.name });
    assert.ok(r.ok, r.ok ? '' : r.problem);
    return { size: r.size, root: r.root };
  } finally {
    await store.close();
  }
}

/** Rewrites one frontier hash in frontier.dat and fixes up both checksums (a deliberate forgery). */
async function forgeFrontier(path: string): Promise<void> {
  const data = await readFile(path);
  const head = 8 + 3 * 8 + 32; // file-store header: magic, size, record start, record end, leaf hash
  const inner = Buffer.from(data.subarray(head, data.length - 32));
  inner[8 + 8] = (inner[8 + 8] as number) ^ 0x01; // first byte of the first subtree root
  inner.set(
    createHash('sha256')
      .update(inner.subarray(0, inner.length - 32))
      .digest(),
    inner.length - 32,
  );
  const body = Buffer.concat([data.subarray(0, head), inner]);
  await writeFile(path, Buffer.concat([body, createHash('sha256').update(body).digest()]));
}

describe('audit log: opening for append from the saved frontier (200,000 events)', () => {
  let home: string;
  const scratch: string[] = [];
  const copy = async (): Promise<string> => {
    const h = await mkdtemp(join(tmpdir(), 'aegis-frontier-copy-'));
    scratch.push(h);
    await cp(home, h, { recursive: true });
    return h;
  };
  const frontierFile = (h: string): string => join(auditPaths(h).dir, 'frontier.dat');

  before(async () => {
    home = await mkdtemp(join(tmpdir(), 'aegis-frontier-'));
    const log = await openAuditLog({ home, env: ENV });
    for (let i = 0; i < N; i += 10_000) await log.appendMany(Array.from({ length: 10_000 }, (_, k) => ev(i + k)));
    await log.close(); // signs the final checkpoint and saves the frontier
  });
  after(async () => {
    for (const h of [home, ...scratch]) await rm(h, { recursive: true, force: true });
  });

  it('reads no leaf hash when the latest checkpoint covers the whole log, and appends onto the same tree', async () => {
    const { log, store } = await openCounted(home);
    assert.equal(store.leafHashesScanned, 0);
    assert.equal(log.size, N);
    await log.appendMany([ev(N), ev(N + 1), ev(N + 2)]);
    const root = await log.root();
    await log.close();
    const v = await verifies(home);
    assert.equal(v.size, N + 3);
    assert.deepEqual(Buffer.from(v.root), Buffer.from(root), 'the root after appending onto the frontier is the full rebuild root');
  });

  it('reads only the leaf hashes stored after the latest checkpoint (a writer that died before signing)', async () => {
    const h = await copy();
    const dead = await openCounted(h, noTimers);
    await dead.log.appendMany(Array.from({ length: 37 }, (_, k) => ev(k)));
    await dead.log.flush();
    await dead.store.close(); // no close(): no checkpoint, no frontier for these 37
    const { log, store } = await openCounted(h);
    assert.equal(store.leafHashesScanned, 37);
    assert.equal(log.size, N + 3 + 37);
    await log.close();
    assert.equal((await verifies(h)).size, N + 3 + 37);
  });

  it('still gives inclusion and consistency proofs (reading the leaf hashes on demand)', async () => {
    const { log, store } = await openCounted(home);
    assert.equal(store.leafHashesScanned, 0);
    const size = log.size;
    const p = await log.inclusionProof(12_345, size);
    verifyInclusion(12_345, size, p.leafHash, p.proof, p.root);
    const c = await log.consistencyProof(1000, size);
    verifyConsistency(1000, size, c.proof, c.root1, c.root2);
    await log.close();
  });

  describe('when the frontier file was modified (checksums fixed up)', () => {
    it('refuses to open the log for append with audit.store_corrupt, and verify still passes on the intact entries', async () => {
      const h = await copy();
      await forgeFrontier(frontierFile(h));
      await assert.rejects(
        openAuditLog({ home: h, env: ENV, inlineEncoding: true }),
        (err: unknown) => err instanceof AuditError && err.code === 'audit.store_corrupt',
      );
      assert.equal((await verifies(h)).size, N + 3);
    });
  });

  describe('when the frontier file was deleted', () => {
    it('rebuilds the tree from every leaf hash, appends, and saves a new frontier', async () => {
      const h = await copy();
      await rm(frontierFile(h));
      const { log, store } = await openCounted(h);
      assert.equal(store.leafHashesScanned, N + 3);
      await log.append(ev(-1));
      await log.close();
      await stat(frontierFile(h));
      const again = await openCounted(h);
      assert.equal(again.store.leafHashesScanned, 0);
      await again.log.close();
      assert.equal((await verifies(h)).size, N + 4);
    });
  });

  describe('when the frontier is for a size no stored checkpoint signs', () => {
    it('ignores it (even with a valid checksum) and rebuilds from every leaf hash', async () => {
      const h = await copy();
      const s = await FileStore.open(auditPaths(h).dir);
      const { size, hashes } = await s.readLeafHashes(0);
      const t = new MerkleTree();
      t.appendMany(hashes, size - 1); // size - 1: between checkpoints
      await s.writeFrontier(size - 1, encodeFrontier(t.frontier()));
      await s.close();
      const { log, store } = await openCounted(h);
      assert.equal(store.leafHashesScanned, size);
      assert.equal(log.size, size);
      await log.close();
    });
  });

  describe('when the frontier write was torn (crash mid-write)', () => {
    it('detects it and rebuilds from every leaf hash instead of failing', async () => {
      const h = await copy();
      const size = (await stat(frontierFile(h))).size;
      await truncate(frontierFile(h), Math.floor(size / 2));
      const { log, store } = await openCounted(h);
      assert.equal(store.leafHashesScanned, N + 3);
      assert.equal(log.size, N + 3);
      await log.close();
    });
  });
});
