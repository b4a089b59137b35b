import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import { hasCode } from '../test-support/errors.js';
import { cgroupId, createMonitor, MonitorError } from './index.js';

describe('monitor adapter', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-monitor-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a cgroup id is the directory inode; a missing directory is monitor.target_invalid', () => {
    assert.ok(cgroupId(dir) > 0);
    assert.throws(() => cgroupId(join(dir, 'missing')), hasCode(MonitorError, 'monitor.target_invalid'));
  });

  it('a bpftrace that exits before attaching is monitor.attach_failed, and nothing is reported', async () => {
    const events: AuditEventInput[] = [];
    await assert.rejects(
      createMonitor({ bpftrace: '/bin/false', attachTimeoutMs: 5000 }).attach(
        { agent: 'a', execution: 'e', cgroupDirs: [dir], deniedSyscalls: ['mount'], volumes: [{ dir, sandbox: '/data/outputs' }] },
        { append: (e) => void events.push(e) },
      ),
      hasCode(MonitorError, 'monitor.attach_failed'),
    );
    assert.deepEqual(events, []);
  });

  it('without cgroup dirs (gVisor) no kernel program runs: samples and fs.changes only', async () => {
    const events: AuditEventInput[] = [];
    const s = await createMonitor({ bpftrace: '/bin/false' }).attach(
      {
        agent: 'a',
        execution: 'e',
        cgroupDirs: [],
        deniedSyscalls: [],
        sample: () => ({ cpuMs: 1, memoryBytes: 2, pids: 3 }),
        volumes: [{ dir, sandbox: '/data/outputs' }],
      },
      { append: (e) => void events.push(e) },
    );
    const summary = await s.detach();
    assert.equal(summary.complete, true);
    assert.deepEqual(
      events.map((e) => e.action),
      ['resource.sample', 'fs.changes', 'monitor.summary'],
    );
    assert.deepEqual(await s.detach(), summary, 'detach is idempotent');
  });
});
