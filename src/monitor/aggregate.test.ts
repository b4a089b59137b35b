import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import { Aggregator } from './aggregate.js';
import type { MonitorRecord } from './parse.js';

const agg = (over: Partial<ConstructorParameters<typeof Aggregator>[0]> = {}): Aggregator =>
  new Aggregator({ agent: 'a', execution: 'aegis-0000000000000001', deniedSyscalls: new Set([165, 101]), ...over });

function feed(a: Aggregator, recs: readonly MonitorRecord[], nowMs = 1000): AuditEventInput[] {
  return recs.flatMap((r) => a.push(r, nowMs));
}

describe('monitor aggregation', () => {
  it('one process.exec per successful exec, with argv and the uid inside the sandbox', () => {
    const a = agg({ uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }] });
    const evs = feed(a, [
      { kind: 'exec', pid: 10, ppid: 9, uid: 101000, path: '/bin/sh' },
      { kind: 'arg', pid: 10, index: 1, value: '-c' },
      { kind: 'arg', pid: 10, index: 2, value: 'id; ls' },
      { kind: 'exec_result', pid: 10, ret: 0 },
      { kind: 'exit', pid: 10, status: 3 << 8 },
      { kind: 'exit', pid: 11, status: 9 },
    ]);
    assert.deepEqual(
      evs.map((e) => [e.action, e.decision, e.payload]),
      [
        [
          'process.exec',
          'info',
          { pid: 10, ppid: 9, uid: 1000, hostUid: 101000, path: '/bin/sh', argv: ['/bin/sh', '-c', 'id; ls'], result: 'ok' },
        ],
        ['process.exit', 'info', { pid: 10, exitCode: 3 }],
        ['process.exit', 'info', { pid: 11, signal: 9 }],
      ],
    );
    assert.deepEqual(evs[0]!.actor, { agent: 'a', execution: 'aegis-0000000000000001' });
  });

  it('a refused exec is a deny; ENOENT (a PATH search) is folded, and the summary says so', () => {
    const a = agg();
    const evs = feed(a, [
      { kind: 'exec', pid: 10, ppid: 9, uid: 0, path: '/usr/local/bin/x' },
      { kind: 'exec_result', pid: 10, ret: -2 },
      { kind: 'exec', pid: 10, ppid: 9, uid: 0, path: '/data/outputs/x' },
      { kind: 'exec_result', pid: 10, ret: -13 },
    ]);
    assert.deepEqual(
      evs.map((e) => [e.action, e.decision, e.reason, e.payload['result']]),
      [['process.exec', 'deny', 'EACCES', 'EACCES']],
    );
    assert.deepEqual(a.finish(2000).summary.folded, { 'process.exec': 1 });
  });

  it('argv entries out of order or beyond the bound are not attached to the exec', () => {
    const a = agg();
    const evs = feed(a, [
      { kind: 'exec', pid: 1, ppid: 0, uid: 0, path: '/p' },
      { kind: 'arg', pid: 1, index: 2, value: 'skipped' },
      { kind: 'arg', pid: 1, index: 1, value: 'one' },
      { kind: 'arg', pid: 1, index: 9, value: 'beyond' },
      { kind: 'arg', pid: 2, index: 1, value: 'other pid' },
      { kind: 'exec_result', pid: 1, ret: 0 },
    ]);
    assert.deepEqual(evs[0]!.payload['argv'], ['/p', 'one']);
  });

  it('aggregates opens per path, access and result over the execution: a million opens are one event', () => {
    const a = agg();
    // Cumulative snapshots: the last one counts (the kernel map is never cleared while the agent runs).
    feed(a, [
      { kind: 'opens', entries: [{ write: false, errno: 0, path: '/agent/in.txt', count: 400_000 }] },
      { kind: 'open_total', count: 400_000 },
    ]);
    feed(a, [
      {
        kind: 'opens',
        entries: [
          { write: false, errno: 0, path: '/agent/in.txt', count: 1_000_000 },
          { write: false, errno: 13, path: '/etc/shadow', count: 1 },
          { write: true, errno: 30, path: '/agent/main.py', count: 1 },
          { write: false, errno: 2, path: '/usr/lib/x', count: 4 },
        ],
      },
      { kind: 'open_total', count: 1_000_006 },
      { kind: 'end' },
      // Regression: bpftrace prints its cleared count (0) again as it exits, after END.
      { kind: 'open_total', count: 0 },
      { kind: 'opens', entries: [] },
    ]);
    const { events, summary } = a.finish(5000);
    assert.equal(summary.complete, true);
    const opens = events.filter((e) => e.action === 'fs.open').map((e) => [e.decision, e.payload]);
    assert.deepEqual(opens, [
      ['info', { path: '/agent/in.txt', access: 'read', result: 'ok', count: 1_000_000 }],
      ['deny', { path: '/etc/shadow', access: 'read', result: 'EACCES', count: 1 }],
      ['deny', { path: '/agent/main.py', access: 'write', result: 'EROFS', count: 1 }],
      ['info', { path: '/usr/lib/x', access: 'read', result: 'ENOENT', count: 4 }],
    ]);
    assert.equal(summary.lost, 0);
    assert.equal(events.at(-1)!.action, 'monitor.summary');
    assert.equal(events.at(-1)!.payload['opens'], 1_000_006);
  });

  it('beyond maxPaths distinct keys, opens are folded into counts, never dropped silently', () => {
    const a = agg({ maxPaths: 2 });
    feed(a, [
      {
        kind: 'opens',
        entries: [1, 2, 3, 4].map((i) => ({ write: false, errno: 0, path: `/f${i}`, count: 10 })),
      },
      { kind: 'open_total', count: 45 },
    ]);
    const { events, summary } = a.finish(2000);
    assert.equal(events.filter((e) => e.action === 'fs.open').length, 2);
    assert.deepEqual(summary.folded, { 'fs.open': 20 });
    assert.equal(summary.lost, 5, 'opens the kernel counted but could not key are reported as lost');
  });

  it("without the kernel program's END record the summary says the counts are incomplete", () => {
    assert.equal(agg().finish(1).summary.complete, false);
    assert.equal(agg().finish(1, false).summary.complete, true, 'nothing was traced (gVisor): nothing is missing');
  });

  it('reports refused calls as the increase of the cumulative kernel counts', () => {
    const a = agg();
    const d = (count: number): MonitorRecord => ({ kind: 'denied', entries: [{ nr: 165, errno: 1, count }] });
    assert.deepEqual(
      [d(2), d(2), d(5)].flatMap((r) => feed(a, [r])).map((e) => e.payload['count']),
      [2, 3],
    );
  });

  it('streams refused calls of the profile only, per second, with their names', () => {
    const a = agg();
    const evs = feed(a, [
      {
        kind: 'denied',
        entries: [
          { nr: 165, errno: 1, count: 2 },
          { nr: 101, errno: 1, count: 1 },
          { nr: 62, errno: 1, count: 7 }, // kill: EPERM from the kernel, not seccomp
        ],
      },
    ]);
    assert.deepEqual(
      evs.map((e) => [e.action, e.decision, e.payload]),
      [
        ['syscall.denied', 'deny', { syscall: 'mount', nr: 165, errno: 'EPERM', count: 2 }],
        ['syscall.denied', 'deny', { syscall: 'ptrace', nr: 101, errno: 'EPERM', count: 1 }],
      ],
    );
  });

  it('folds streamed events beyond the per-second budget and starts afresh the next second', () => {
    const a = agg({ eventsPerSecond: 3 });
    const exits = (n: number): MonitorRecord[] => Array.from({ length: n }, (_, i) => ({ kind: 'exit', pid: i + 1, status: 0 }) as const);
    assert.equal(feed(a, exits(10), 1000).length, 3);
    assert.equal(feed(a, exits(10), 1999).length, 0);
    assert.equal(feed(a, exits(2), 2000).length, 2);
    const { summary } = a.finish(3000);
    assert.deepEqual(summary.folded, { 'process.exit': 17 });
  });

  it('counts lost events and malformed lines in the summary', () => {
    const a = agg();
    feed(a, [{ kind: 'lost', count: 40 }, { kind: 'malformed' }, { kind: 'malformed' }]);
    const { summary } = a.finish(1);
    assert.equal(summary.lost, 40);
    assert.equal(summary.malformed, 2);
  });

  it('resource samples carry CPU %, memory, pids and I/O, and the summary keeps the peaks', () => {
    const a = agg();
    feed(a, [{ kind: 'io', readBytes: 100, writeBytes: 10 }]);
    const s1 = a.sample({ cpuMs: 0, memoryBytes: 1000, pids: 3 }, 10_000);
    const s2 = a.sample({ cpuMs: 500, memoryBytes: 4000, pids: 2 }, 11_000);
    const s3 = a.sample({ cpuMs: 600, memoryBytes: 2000, pids: 1 }, 12_000);
    assert.deepEqual(s1.payload, { cpuMs: 0, cpuPercent: 0, memoryBytes: 1000, pids: 3, readBytes: 100, writeBytes: 10 });
    assert.equal(s2.payload['cpuPercent'], 50);
    assert.equal(s3.payload['cpuPercent'], 10);
    assert.equal(s1.action, 'resource.sample');
    assert.deepEqual(a.finish(13_000).summary.peaks, { memoryBytes: 4000, pids: 3, cpuPercent: 50 });
  });
});
