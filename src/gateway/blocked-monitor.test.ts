import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import { BlockedMonitor, blockedEvents, type BlockedReading } from './blocked-monitor.js';
import { zeroCounts, type BlockedCounts } from './netns/plan.js';

const actor = { agent: 'a', execution: 'e1' };
const counts = (over: Partial<Record<keyof BlockedCounts, [number, number]>>): BlockedCounts => {
  const c: Record<string, { packets: number; bytes: number }> = { ...zeroCounts() };
  for (const [k, [packets, bytes]] of Object.entries(over)) c[k] = { packets, bytes };
  return c as BlockedCounts;
};
const host = (c: BlockedCounts): BlockedReading => new Map([['host', c]]);

describe('blockedEvents', () => {
  it('one net.blocked denial per class that dropped packets since the last reading', () => {
    const ev = blockedEvents(actor, host(counts({ tcp: [2, 120] })), host(counts({ tcp: [3, 180], icmp: [1, 84] })));
    assert.deepEqual(
      ev.map((e) => [e.action, e.decision, e.reason, e.payload.protocol, e.payload.packets, e.payload.bytes]),
      [
        ['net.blocked', 'deny', 'gateway.no_route', 'tcp', 1, 60],
        ['net.blocked', 'deny', 'gateway.no_route', 'icmp', 1, 84],
      ],
    );
    assert.match(String(ev[0]!.payload.detail), /^1 tcp packet dropped by nftables/);
  });
  it('nothing new, nothing emitted', () => {
    assert.deepEqual(blockedEvents(actor, host(counts({ udp: [5, 500] })), host(counts({ udp: [5, 500] }))), []);
  });
  it('sums the sources; a source missing from a reading (its table deleted) is neither re-counted nor lost', () => {
    const both = new Map([
      ['sandbox', counts({ tcp: [1, 60] })],
      ['host', counts({ tcp: [2, 120] })],
    ]);
    assert.deepEqual(blockedEvents(actor, new Map(), both).map((e) => e.payload.packets), [3]);
    // the sandbox's table is gone: only the host's increase counts
    assert.deepEqual(blockedEvents(actor, both, host(counts({ tcp: [5, 300] }))).map((e) => e.payload.packets), [3]);
  });
});

describe('BlockedMonitor', () => {
  it('stop() takes a final reading, so drops just before teardown are not lost; readings never overlap', async () => {
    const readings = [host(counts({ udp: [1, 40] })), host(counts({ udp: [1, 40], ipv6: [2, 160] }))];
    let concurrent = 0;
    let maxConcurrent = 0;
    const emitted: AuditEventInput[] = [];
    const m = new BlockedMonitor({
      actor,
      intervalMs: 5,
      emit: (e) => emitted.push(e),
      read: async () => {
        maxConcurrent = Math.max(maxConcurrent, ++concurrent);
        await new Promise((r) => setTimeout(r, 15)); // slower than the interval
        concurrent--;
        return readings.length > 1 ? readings.shift()! : readings[0]!;
      },
    });
    m.start();
    await new Promise((r) => setTimeout(r, 60));
    await m.stop();
    await m.stop();
    assert.equal(maxConcurrent, 1);
    assert.deepEqual(
      emitted.map((e) => [e.payload.protocol, e.payload.packets]),
      [
        ['udp', 1],
        ['ipv6', 2],
      ],
    );
  });
  it('a failed reading is skipped and the next one catches up', async () => {
    let n = 0;
    const emitted: AuditEventInput[] = [];
    const errors: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (errors.push(String(s)), true)) as typeof process.stderr.write;
    try {
      const m = new BlockedMonitor({
        actor,
        intervalMs: 5,
        emit: (e) => emitted.push(e),
        read: async () => {
          if (n++ === 0) throw new Error('nft: no such table');
          return host(counts({ tcp: [4, 240] }));
        },
      });
      m.start();
      await new Promise((r) => setTimeout(r, 40));
      await m.stop();
      assert.ok(n >= 3, `read ${n} times`);
      assert.deepEqual(emitted.map((e) => [e.payload.protocol, e.payload.packets]), [['tcp', 4]]);
    } finally {
      process.stderr.write = write;
    }
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /no such table/);
  });
});
