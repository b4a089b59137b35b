import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { diffSnapshots, fsChangesEvent, MAX_CHANGES_LISTED, snapshotVolume } from './fs-changes.js';

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

describe('fs.changes', () => {
  const dirs: string[] = [];
  const fresh = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'aegis-fschanges-'));
    dirs.push(d);
    return d;
  };
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('lists created, modified and deleted files with their size and SHA-256, and leaves unchanged ones out', () => {
    const d = fresh();
    mkdirSync(join(d, 'sub'));
    writeFileSync(join(d, 'keep.txt'), 'same');
    writeFileSync(join(d, 'edit.txt'), 'before');
    writeFileSync(join(d, 'sub', 'gone.txt'), 'x');
    const before = snapshotVolume(d);
    writeFileSync(join(d, 'edit.txt'), 'after!');
    unlinkSync(join(d, 'sub', 'gone.txt'));
    writeFileSync(join(d, 'sub', 'new.txt'), 'hello');
    symlinkSync('/etc/shadow', join(d, 'link'));
    const changes = diffSnapshots(before, snapshotVolume(d));
    assert.deepEqual(changes, [
      { path: '/edit.txt', change: 'modified', size: 6, sha256: sha('after!') },
      { path: '/link', change: 'created', size: '/etc/shadow'.length, sha256: sha('symlink:/etc/shadow') },
      { path: '/sub/gone.txt', change: 'deleted', size: 1, sha256: null },
      { path: '/sub/new.txt', change: 'created', size: 5, sha256: sha('hello') },
    ]);
  });

  it('sees a rewrite with the same size and the old mtime (the hash differs)', () => {
    const d = fresh();
    const f = join(d, 'f');
    writeFileSync(f, 'aaaa');
    utimesSync(f, 1_000_000, 1_000_000);
    const before = snapshotVolume(d);
    writeFileSync(f, 'bbbb');
    utimesSync(f, 1_000_000, 1_000_000);
    assert.deepEqual(diffSnapshots(before, snapshotVolume(d)), [{ path: '/f', change: 'modified', size: 4, sha256: sha('bbbb') }]);
  });

  it('the event names sandbox paths and bounds the list (the rest is counted)', () => {
    const d = fresh();
    const before = snapshotVolume(d);
    for (let i = 0; i < MAX_CHANGES_LISTED + 5; i++) writeFileSync(join(d, `f${String(i).padStart(5, '0')}`), '');
    const ev = fsChangesEvent({ agent: 'a', execution: 'e' }, [{ sandbox: '/data/outputs/', before, after: snapshotVolume(d) }]);
    assert.equal(ev.action, 'fs.changes');
    const vols = ev.payload['volumes'] as { path: string; changes: { path: string }[]; omitted?: number }[];
    assert.equal(vols[0]!.path, '/data/outputs/');
    assert.equal(vols[0]!.changes.length, MAX_CHANGES_LISTED);
    assert.equal(vols[0]!.changes[0]!.path, '/data/outputs/f00000');
    assert.equal(vols[0]!.omitted, 5);
  });
});
