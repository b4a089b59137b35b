import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { appendFile, mkdtemp, readFile, readdir, readlink, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hashLeaf } from '../merkle/hash.js';
import { storeConformance } from './conformance.js';
import { FileStore, entriesFileSize } from './file-store.js';
import { entryBatch } from './types.js';
import type { StoredRecord } from './types.js';

storeConformance('embedded files', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-store-'));
  return { open: () => FileStore.open(dir), destroy: () => rm(dir, { recursive: true, force: true }) };
});

const e = (t: string) => {
  const entry = Buffer.from(t);
  return { entry, leafHash: hashLeaf(entry) };
};

async function all(it: AsyncIterable<StoredRecord>): Promise<StoredRecord[]> {
  const out: StoredRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

/** The open(2) flags of every descriptor of this process open on `path` (from /proc/self/fdinfo). */
async function openFlags(path: string): Promise<number[]> {
  const flags: number[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target !== path) continue;
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
    const m = /^flags:\s*([0-7]+)$/mu.exec(info);
    if (m !== null) flags.push(parseInt(m[1] as string, 8));
  }
  return flags;
}

describe('FileStore', () => {
  it('a writer holds entries.dat with O_DSYNC (each batch durable when its one write returns); a reader without', async () => {
    // Regression (issue 18): batches were written, then fdatasync'd in a second call; the store
    // now relies on O_DSYNC, so losing the flag would acknowledge events that are not on disk.
    const dir = await mkdtemp(join(tmpdir(), 'aegis-store-'));
    const path = join(dir, 'entries.dat');
    const w = await FileStore.open(dir);
    try {
      await w.append(0, entryBatch([e('one')]));
      const flags = await openFlags(path);
      assert.equal(flags.length, 1);
      assert.equal((flags[0] as number) & constants.O_DSYNC, constants.O_DSYNC);
      const r = await FileStore.open(dir, { readOnly: true });
      try {
        const both = await openFlags(path);
        assert.equal(both.length, 2);
        assert.equal(both.filter((f) => (f & constants.O_DSYNC) === constants.O_DSYNC).length, 1, 'only the writer');
      } finally {
        await r.close();
      }
    } finally {
      await w.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe('when the tail holds an interrupted write (kill -9 during append)', () => {
    it('readers stop before it and report it; the next writer truncates it', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'aegis-store-'));
      const s = await FileStore.open(dir);
      await s.append(0, entryBatch([e('one'), e('two')]));
      const good = await entriesFileSize(dir);
      // Half a record: header claims 100 bytes, only 10 follow.
      const torn = Buffer.alloc(4 + 32 + 10);
      torn.writeUInt32BE(100);
      await appendFile(join(dir, 'entries.dat'), torn);
      const r = await FileStore.open(dir);
      assert.equal((await r.readLeafHashes(0)).size, 2);
      const recs = await all(r.readEntries(0));
      assert.equal(recs.length, 3);
      assert.match(recs[2]!.error ?? '', /incomplete record/u);
      await r.append(2, entryBatch([e('three')]));
      assert.equal(await entriesFileSize(dir), good + 4 + 32 + 5);
      assert.deepEqual(
        (await all(r.readEntries(0))).map((x) => (x.error !== undefined ? x.error : Buffer.from(x.entry).toString())),
        ['one', 'two', 'three'],
      );
      await s.close();
      await r.close();
      await rm(dir, { recursive: true });
    });

    it('a complete record whose bytes do not match its hash at the tail is truncated too', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'aegis-store-'));
      const s = await FileStore.open(dir);
      await s.append(0, entryBatch([e('one')]));
      const good = await entriesFileSize(dir);
      const bad = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.alloc(32), Buffer.from('xyz')]);
      await appendFile(join(dir, 'entries.dat'), bad);
      await s.append(1, entryBatch([e('two')])).catch(() => undefined);
      const r = await FileStore.open(dir);
      assert.equal((await r.readLeafHashes(0)).size, 2);
      assert.equal(await entriesFileSize(dir), good + 4 + 32 + 3);
      await s.close();
      await r.close();
      await rm(dir, { recursive: true });
    });
  });

  describe('when the file is not an audit log', () => {
    it('refuses to open it (audit.store_corrupt)', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'aegis-store-'));
      await writeFile(join(dir, 'entries.dat'), 'hello world, not a log');
      await assert.rejects(FileStore.open(dir), { code: 'audit.store_corrupt' });
      await rm(dir, { recursive: true });
    });
  });

  describe('when a record length is garbage in the middle', () => {
    it('readers report the position instead of crashing', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'aegis-store-'));
      const s = await FileStore.open(dir);
      await s.append(0, entryBatch([e('one'), e('two'), e('three')]));
      const buf = await readFile(join(dir, 'entries.dat'));
      const second = 8 + 4 + 32 + 3;
      buf.writeUInt32BE(0xffffffff, second);
      await writeFile(join(dir, 'entries.dat'), buf);
      const r = await FileStore.open(dir);
      const recs = await all(r.readEntries(0));
      assert.equal(recs.length, 2);
      assert.equal(recs[1]!.index, 1);
      assert.match(recs[1]!.error ?? '', /record length/u);
      await assert.rejects(r.readLeafHashes(0), { code: 'audit.store_corrupt' });
      await truncate(join(dir, 'entries.dat'), second);
      await s.close();
      await r.close();
      await rm(dir, { recursive: true });
    });
  });
});
