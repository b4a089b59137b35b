import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AuditLog } from '../audit/log.js';
import type { SweptNet } from '../gateway/netns/adapter.js';
import { processStartTime } from '../host/pid-lock.js';
import type { SweptRun } from '../sandbox/state.js';
import { lostRunEvents, RunAudit, sweepLostRuns } from './services.js';

describe('RunAudit (the sink of one aegis run)', () => {
  it('reports the first event that could not be logged once, and fails the close', async () => {
    // A log whose store has gone away: every append rejects.
    const broken = { append: () => Promise.reject(new Error('disk full')), close: () => Promise.resolve() } as unknown as AuditLog;
    const audit = new RunAudit(broken);
    const failures: string[] = [];
    audit.onFailure = (e) => failures.push(e.message);
    await audit.append({ actor: {}, action: 'run.start', decision: 'info', payload: {} });
    await audit.append({ actor: {}, action: 'run.exit', decision: 'info', payload: {} });
    assert.deepEqual(failures, ['disk full']);
    await assert.rejects(audit.close(), /disk full/);
  });
});

describe('lostRunEvents (what the sweep found, as audit events)', () => {
  const run: SweptRun = {
    id: 'aegis-0123456789abcdef',
    agent: 'bot',
    isolation: 'crun',
    createdAt: '2026-11-30T00:00:00.000Z',
    ownerPid: 41,
    removed: {
      runtimeProcess: 50,
      processes: [50, 51],
      container: true,
      cgroups: ['/sys/fs/cgroup/pids/aegis/aegis-0123456789abcdef'],
      runDir: '/run/aegis/runs/aegis-0123456789abcdef',
    },
  };
  const net: SweptNet = {
    id: '0a0b0c0d',
    execution: 'aegis-0123456789abcdef',
    ownerPid: 41,
    netns: 'aegis-0a0b0c0d',
    hostInterface: 'ag0a0b0c0d',
    hostTable: 'aegis_h_0a0b0c0d',
  };

  it("attributes run.lost to the lost run's agent and execution, with the network joined by execution id", () => {
    const [ev, ...rest] = lostRunEvents([run], [net], 99);
    assert.deepEqual(rest, []);
    assert.deepEqual(ev, {
      actor: { agent: 'bot', execution: 'aegis-0123456789abcdef' },
      action: 'run.lost',
      decision: 'deny',
      reason: 'run.lost',
      payload: {
        isolation: 'crun',
        ownerPid: 41,
        createdAt: '2026-11-30T00:00:00.000Z',
        sweptBy: 99,
        removed: {
          ...run.removed,
          network: { netns: 'aegis-0a0b0c0d', hostInterface: 'ag0a0b0c0d', hostTable: 'aegis_h_0a0b0c0d', ownerPid: 41 },
        },
      },
    });
  });
  it('reports a network whose run left no run directory on its own, and a run without a network with network null', () => {
    const other = { ...run, id: 'aegis-ffffffffffffffff', agent: null };
    const events = lostRunEvents([other], [net], 7);
    assert.deepEqual(
      events.map((e) => [e.actor, (e.payload['removed'] as { network: unknown }).network !== null]),
      [
        [{ execution: 'aegis-ffffffffffffffff' }, false],
        [{ execution: 'aegis-0123456789abcdef' }, true],
      ],
    );
  });
  it('says nothing when nothing was swept', () => assert.deepEqual(lostRunEvents([], [], 1), []));
});

describe('sweepLostRuns: the gateway slots of a killed AEGIS', () => {
  /** A gateway state dir with one slot lock owned by `owner`; returns the slot's path. */
  function withSlot(owner: { pid: number; start: string | null }, fn: (dir: string, slot: string) => Promise<void>): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-sweep-'));
    mkdirSync(join(dir, 'net-slots'));
    const slot = join(dir, 'net-slots', '7');
    writeFileSync(slot, JSON.stringify(owner));
    return fn(dir, slot).finally(() => rmSync(dir, { recursive: true, force: true }));
  }

  it('leaves the slot of a gateway whose owner still runs', () =>
    withSlot({ pid: process.pid, start: processStartTime(process.pid) }, async (dir, slot) => {
      assert.deepEqual(await sweepLostRuns(join(dir, 'state'), { AEGIS_STATE_DIR: dir }), []);
      assert.ok(existsSync(slot));
    }));

  it('removes the slot lock of an owner that is gone (same pid, another start time: pid reuse)', () =>
    withSlot({ pid: process.pid, start: '1' }, async (dir, slot) => {
      assert.deepEqual(await sweepLostRuns(join(dir, 'state'), { AEGIS_STATE_DIR: dir }), []);
      assert.equal(existsSync(slot), false);
    }));
});
