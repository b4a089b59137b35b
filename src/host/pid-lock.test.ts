import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  lockIsStale,
  ownerAlive,
  parseLockOwner,
  processStartTime,
  readLockOwner,
  selfOwner,
  tryCreateLock,
  withPidLock,
} from './pid-lock.js';

const dir = mkdtempSync(join(tmpdir(), 'aegis-pid-lock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The pid of a process that has exited (and was reaped). */
function deadPid(): number {
  const r = spawnSync('/bin/sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

const err = (m: string) => new Error(m);

describe('pid-file locks', () => {
  it('records this process with its start time', async () => {
    const p = join(dir, 'a.lock');
    assert.equal(await tryCreateLock(p, { id: 'x' }), true);
    assert.equal(await tryCreateLock(p), false, 'O_EXCL: a second create fails');
    const o = await readLockOwner<{ id: string }>(p);
    assert.deepEqual(o, { id: 'x', pid: process.pid, start: processStartTime(process.pid) });
    assert.equal(ownerAlive(selfOwner()), true);
    assert.equal(await lockIsStale(p), false);
  });
  it('a lock whose owner is dead is stale', async () => {
    const p = join(dir, 'dead.lock');
    writeFileSync(p, JSON.stringify({ pid: deadPid(), start: '1' }));
    assert.equal(await lockIsStale(p), true);
  });
  it('regression: a lock whose pid was reused by another process is stale (the start time differs)', async () => {
    const p = join(dir, 'reused.lock');
    // This process's own pid, but a start time it never had: the recorded owner is gone.
    writeFileSync(p, JSON.stringify({ pid: process.pid, start: '1' }));
    assert.equal(await lockIsStale(p), true);
  });
  it('reads the old bare-pid form, and refuses what is not a lock', () => {
    assert.deepEqual(parseLockOwner(`${process.pid}\n`), { pid: process.pid, start: null });
    for (const bad of ['', 'x', '0', '-1', '{"pid":"1"}', '{"pid":1.5}', 'null', '[1]', '{"pid":99999999999999999999}'])
      assert.equal(parseLockOwner(bad), null, bad);
    assert.equal(parseLockOwner('{"pid":1,"start":"1; rm"}')?.start, null, 'a start time that is not digits is ignored');
  });
  it('an unwritten lock is stale only once it is old', async () => {
    const p = join(dir, 'empty.lock');
    writeFileSync(p, '');
    assert.equal(await lockIsStale(p, 60_000), false);
    const old = (Date.now() - 120_000) / 1000;
    utimesSync(p, old, old);
    assert.equal(await lockIsStale(p, 60_000), true);
  });
  it('withPidLock serializes holders, takes over a stale lock and removes it afterwards', async () => {
    const p = join(dir, 'w.lock');
    writeFileSync(p, JSON.stringify({ pid: deadPid(), start: '1' }));
    const order: string[] = [];
    const hold = (name: string, ms: number) =>
      withPidLock(
        p,
        async () => {
          order.push(`${name}+`);
          await new Promise((r) => setTimeout(r, ms));
          order.push(`${name}-`);
        },
        { error: err },
      );
    await Promise.all([hold('a', 50), hold('b', 10)]);
    assert.deepEqual(order.length, 4);
    assert.ok(order.join(' ') === 'a+ a- b+ b-' || order.join(' ') === 'b+ b- a+ a-', order.join(' '));
    assert.equal(existsSync(p), false);
  });
  it('withPidLock gives up with the caller error when a live owner keeps it', async () => {
    const p = join(dir, 'held.lock');
    writeFileSync(p, JSON.stringify(selfOwner()));
    await assert.rejects(
      withPidLock(p, () => 1, { timeoutMs: 100, error: (m) => new Error(`locked: ${m}`) }),
      /locked: lock .* is held by pid/,
    );
    assert.equal(readFileSync(p, 'utf8'), JSON.stringify(selfOwner()), 'a live lock is never removed');
  });
});
