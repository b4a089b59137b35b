import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertPrivateDir, checkRecord } from './client.js';
import { hasCode } from '../test-support/errors.js';
import { MonitorError } from './errors.js';

describe('monitor daemon client: records from the daemon are checked', () => {
  it('keeps the records the aggregator reads, field by field (and nothing else of them)', () => {
    assert.deepEqual(checkRecord({ kind: 'exec', pid: 7, ppid: 6, uid: 101000, path: '/bin/sh', extra: 'x' }), {
      kind: 'exec',
      pid: 7,
      ppid: 6,
      uid: 101000,
      path: '/bin/sh',
    });
    assert.deepEqual(checkRecord({ kind: 'arg', pid: 7, index: 1, value: '-c' }), { kind: 'arg', pid: 7, index: 1, value: '-c' });
    assert.deepEqual(checkRecord({ kind: 'exec_result', pid: 7, ret: -13 }), { kind: 'exec_result', pid: 7, ret: -13 });
    assert.deepEqual(checkRecord({ kind: 'exit', pid: 7, status: 256 }), { kind: 'exit', pid: 7, status: 256 });
    assert.deepEqual(checkRecord({ kind: 'opens', entries: [{ write: true, errno: 13, path: '/etc/shadow', count: 2, cg: 5 }] }), {
      kind: 'opens',
      entries: [{ write: true, errno: 13, path: '/etc/shadow', count: 2 }],
    });
    assert.deepEqual(checkRecord({ kind: 'open_total', count: 3 }), { kind: 'open_total', count: 3 });
    assert.deepEqual(checkRecord({ kind: 'denied', entries: [{ nr: 165, errno: 1, count: 1 }] }), {
      kind: 'denied',
      entries: [{ nr: 165, errno: 1, count: 1 }],
    });
    assert.deepEqual(checkRecord({ kind: 'lost', count: 4 }), { kind: 'lost', count: 4 });
    assert.deepEqual(checkRecord({ kind: 'end' }), { kind: 'end' });
  });

  it('refuses what is not such a record (the caller counts it as malformed)', () => {
    for (const bad of [
      null,
      'exec',
      { kind: 'ready' },
      { kind: 'control', op: 1, cg: 5 },
      { kind: 'exec', pid: '7', ppid: 6, uid: 0, path: '/bin/sh' },
      { kind: 'exec', pid: 7, ppid: 6, uid: 0 },
      { kind: 'exit', pid: 7, status: 1.5 },
      { kind: 'opens', entries: [{ write: 1, errno: 0, path: '/a', count: 1 }] },
      { kind: 'opens', entries: [null] },
      { kind: 'opens', entries: 'all' },
      { kind: 'denied', entries: [{ nr: 165, errno: 1 }] },
      { kind: 'open_total', count: 2 ** 60 },
    ])
      assert.equal(checkRecord(bad), null, JSON.stringify(bad));
  });

  it('never throws, whatever JSON the daemon sent', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const r = checkRecord(v);
        assert.ok(r === null || typeof r.kind === 'string');
      }),
    );
  });
});

describe("monitor daemon client: the daemon's directory", () => {
  it('must be a 0700 directory of this user, not a link or a folder others can write', () => {
    const base = mkdtempSync(join(tmpdir(), 'aegis-mondir-'));
    try {
      const dir = join(base, 'monitor');
      mkdirSync(dir, { mode: 0o700 });
      assertPrivateDir(dir);
      chmodSync(dir, 0o733);
      assert.throws(() => assertPrivateDir(dir), hasCode(MonitorError, 'monitor.dir_unsafe'));
      chmodSync(dir, 0o700);
      const link = join(base, 'link');
      symlinkSync(dir, link);
      assert.throws(() => assertPrivateDir(link), hasCode(MonitorError, 'monitor.dir_unsafe'));
      assert.throws(() => assertPrivateDir(join(base, 'missing')), hasCode(MonitorError, 'monitor.dir_unsafe'));
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
