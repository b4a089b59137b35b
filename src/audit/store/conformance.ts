/**
 * The one conformance suite every AuditStore implementation runs (embedded: file-store.test.ts;
 * PostgreSQL: test/integration/audit-pg.test.ts). A store passes only if it passes all of it.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AuditError } from '../errors.js';
import { hashLeaf } from '../merkle/hash.js';
import { type AuditStore, type NewEntry, type StoredRecord, entryBatch } from './types.js';

export interface StoreFixture {
  /** Opens a new handle on the same underlying store (a second writer, or a reopen). */
  open(): Promise<AuditStore>;
  /** Removes the underlying store. */
  destroy(): Promise<void>;
}

function entry(tag: string): NewEntry {
  const bytes = Buffer.from(JSON.stringify({ tag }));
  return { entry: bytes, leafHash: hashLeaf(bytes) };
}

async function collect(it: AsyncIterable<StoredRecord>): Promise<StoredRecord[]> {
  const out: StoredRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof AuditError && err.code === code);
}

/** Appends like the log service does: on conflict, catch up and retry at the new size. */
async function appendWithRetry(s: AuditStore, e: NewEntry): Promise<number> {
  for (;;) {
    const { size } = await s.readLeafHashes(0);
    try {
      await s.append(size, entryBatch([e]));
      return size;
    } catch (err) {
      if (!(err instanceof AuditError && err.code === 'audit.conflict')) throw err;
    }
  }
}

export function storeConformance(name: string, makeFixture: () => Promise<StoreFixture>): void {
  describe(`AuditStore conformance: ${name}`, () => {
    let fx: StoreFixture;
    const handles: AuditStore[] = [];
    const open = async (): Promise<AuditStore> => {
      const s = await fx.open();
      handles.push(s);
      return s;
    };
    // A fresh underlying store for every test.
    const fresh = async (): Promise<AuditStore> => {
      for (const h of handles.splice(0)) await h.close().catch(() => undefined);
      if (fx !== undefined) await fx.destroy();
      fx = await makeFixture();
      return open();
    };
    before(async () => {
      fx = await makeFixture();
    });
    after(async () => {
      for (const h of handles.splice(0)) await h.close().catch(() => undefined);
      await fx.destroy();
    });

    it('starts empty', async () => {
      const s = await fresh();
      const empty = await s.readLeafHashes(0);
      assert.equal(empty.size, 0);
      assert.equal(empty.hashes.length, 0);
      assert.deepEqual(await collect(s.readEntries(0)), []);
      assert.deepEqual(await s.readCheckpoints(), []);
      assert.deepEqual(await s.listKeyIds(), []);
    });

    it('returns appended entries in order, with their leaf hashes, after reopening', async () => {
      const s = await fresh();
      const batch = ['a', 'b', 'c'].map(entry);
      await s.append(0, entryBatch(batch));
      await s.append(3, entryBatch([entry('d')]));
      await s.close();
      handles.splice(handles.indexOf(s), 1);
      const r = await open();
      const { size, hashes } = await r.readLeafHashes(0);
      assert.equal(size, 4);
      assert.deepEqual(Buffer.from(hashes.subarray(32, 64)), Buffer.from(batch[1]!.leafHash));
      const recs = await collect(r.readEntries(0));
      assert.deepEqual(
        recs.map((x) => x.index),
        [0, 1, 2, 3],
      );
      assert.deepEqual(
        recs.map((x) => (x.error === undefined ? Buffer.from(x.entry).toString() : x.error)),
        ['a', 'b', 'c', 'd'].map((t) => JSON.stringify({ tag: t })),
      );
      assert.deepEqual(Buffer.from((await r.readLeafHashes(2)).hashes), Buffer.from(hashes.subarray(64)));
    });

    it('reads a range of entries', async () => {
      const s = await fresh();
      await s.append(0, entryBatch(Array.from({ length: 10 }, (_, i) => entry(String(i)))));
      const recs = await collect(s.readEntries(3, 6));
      assert.deepEqual(
        recs.map((x) => x.index),
        [3, 4, 5],
      );
    });

    it('holds a large batch', async () => {
      const s = await fresh();
      const batch = Array.from({ length: 5000 }, (_, i) => entry(`big ${i}`.repeat(20)));
      await s.append(0, entryBatch(batch));
      assert.equal((await s.readLeafHashes(0)).size, 5000);
      assert.equal((await collect(s.readEntries(0))).length, 5000);
    });

    describe('when the append position is not the end of the store', () => {
      it('refuses with conflict and writes nothing', async () => {
        const s = await fresh();
        await s.append(0, entryBatch([entry('a')]));
        await expectCode(s.append(0, entryBatch([entry('x')])), 'audit.conflict');
        await expectCode(s.append(2, entryBatch([entry('x')])), 'audit.conflict');
        assert.equal((await s.readLeafHashes(0)).size, 1);
      });
    });

    describe('when two writers share the store', () => {
      it('lets the second catch up and append after the first', async () => {
        const a = await fresh();
        const b = await open();
        await b.readLeafHashes(0);
        await a.append(0, entryBatch([entry('a0'), entry('a1')]));
        await expectCode(b.append(0, entryBatch([entry('b0')])), 'audit.conflict');
        const { size } = await b.readLeafHashes(0);
        assert.equal(size, 2);
        await b.append(2, entryBatch([entry('b0')]));
        assert.deepEqual(
          (await collect(a.readEntries(0))).map((x) => (x.error === undefined ? Buffer.from(x.entry).toString() : x.error)),
          ['{"tag":"a0"}', '{"tag":"a1"}', '{"tag":"b0"}'],
        );
      });

      it('never gives two racing appends the same position', async () => {
        const a = await fresh();
        const b = await open();
        const positions = await Promise.all([
          ...Array.from({ length: 20 }, (_, i) => appendWithRetry(a, entry(`a${i}`))),
          ...Array.from({ length: 20 }, (_, i) => appendWithRetry(b, entry(`b${i}`))),
        ]);
        assert.equal(new Set(positions).size, 40);
        assert.equal((await a.readLeafHashes(0)).size, 40);
      });
    });

    describe('checkpoints', () => {
      it('keeps them in order', async () => {
        const s = await fresh();
        await s.appendCheckpoint(1, 'note one\n');
        await s.appendCheckpoint(1, 'note one again\n');
        await s.appendCheckpoint(5, 'note five\n');
        assert.deepEqual(await s.readCheckpoints(), ['note one\n', 'note one again\n', 'note five\n']);
      });
      it('refuses one smaller than the latest', async () => {
        const s = await fresh();
        await s.appendCheckpoint(5, 'five\n');
        await expectCode(s.appendCheckpoint(4, 'four\n'), 'audit.checkpoint_inconsistent');
        assert.deepEqual(await s.readCheckpoints(), ['five\n']);
      });
    });

    describe('frontier', () => {
      it('is absent at first, then reads back the latest one written, also after reopening', async () => {
        const s = await fresh();
        assert.equal(await s.readFrontier(), undefined);
        await s.append(0, entryBatch(['a', 'b', 'c'].map(entry)));
        await s.readLeafHashes(0);
        await s.writeFrontier(2, Buffer.from('frontier of two'));
        await s.writeFrontier(3, Buffer.from('frontier of three'));
        assert.equal(Buffer.from((await s.readFrontier())!).toString(), 'frontier of three');
        const r = await open();
        assert.equal(Buffer.from((await r.readFrontier())!).toString(), 'frontier of three');
      });

      it('lets a new handle read the leaf hashes after the frontier, and all of them again', async () => {
        const s = await fresh();
        const batch = Array.from({ length: 9 }, (_, i) => entry(`f${i}`));
        await s.append(0, entryBatch(batch.slice(0, 5)));
        await s.writeFrontier(5, Buffer.from('five'));
        await s.append(5, entryBatch(batch.slice(5)));
        const r = await open();
        await r.readFrontier();
        const after = await r.readLeafHashes(5);
        assert.equal(after.size, 9);
        assert.deepEqual(Buffer.from(after.hashes), Buffer.concat(batch.slice(5).map((x) => x.leafHash)));
        const every = await r.readLeafHashes(0);
        assert.equal(every.size, 9);
        assert.deepEqual(Buffer.from(every.hashes), Buffer.concat(batch.map((x) => x.leafHash)));
      });

      it('reports the real size when asked for leaf hashes beyond the end', async () => {
        const s = await fresh();
        await s.append(0, entryBatch([entry('only')]));
        const r = await open();
        const beyond = await r.readLeafHashes(4);
        assert.equal(beyond.size, 1);
        assert.equal(beyond.hashes.length, 0);
      });
    });

    describe('keys', () => {
      it('stores, lists, reads and destroys wrapped keys', async () => {
        const s = await fresh();
        const k1 = new Uint8Array(60).fill(1);
        await s.putKey('d.2026-01-01.00000001', k1);
        await s.putKey('s.0123456789abcdef0123456789abcdef.2026-01-01.00000002', new Uint8Array(60).fill(2));
        assert.deepEqual(await s.listKeyIds(), ['d.2026-01-01.00000001', 's.0123456789abcdef0123456789abcdef.2026-01-01.00000002']);
        assert.deepEqual(Buffer.from((await s.getKey('d.2026-01-01.00000001'))!), Buffer.from(k1));
        await s.deleteKey('d.2026-01-01.00000001');
        await s.deleteKey('d.2026-01-01.00000001');
        assert.equal(await s.getKey('d.2026-01-01.00000001'), undefined);
        const r = await open();
        assert.deepEqual(await r.listKeyIds(), ['s.0123456789abcdef0123456789abcdef.2026-01-01.00000002']);
      });
    });
  });
}
