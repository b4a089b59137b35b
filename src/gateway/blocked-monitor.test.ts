import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import { BlockedMonitor, blockedEvents, DESTINATIONS_LISTED, type BlockedReading } from './blocked-monitor.js';
import { zeroCounts, type BlockedCounts, type BlockedDestination, type BlockedTableReading } from './netns/blocked.js';

const actor = { agent: 'a', execution: 'e1' };
const counts = (
  over: Partial<Record<keyof BlockedCounts, [number, number]>>,
  destinations: BlockedDestination[] = [],
): BlockedTableReading => {
  const c: Record<string, { packets: number; bytes: number }> = { ...zeroCounts() };
  for (const [k, v] of Object.entries(over)) c[k] = { packets: v[0], bytes: v[1] };
  return { counts: c as BlockedCounts, destinations: new Map(destinations.map((d) => [`${d.address} ${d.protocol} ${d.port ?? ''}`, d])) };
};
const tcpTo = (address: string, port: number, packets: number): BlockedDestination => ({
  class: 'tcp',
  address,
  protocol: 'tcp',
  port,
  packets,
  bytes: packets * 60,
});
const host = (c: BlockedTableReading): BlockedReading => new Map([['host', c]]);

describe('blockedEvents', () => {
  it('one net.blocked denial per class that dropped packets since the last reading', () => {
    const icmp: BlockedDestination = { class: 'icmp', address: '198.51.100.66', protocol: 'icmp', port: null, packets: 1, bytes: 84 };
    const ev = blockedEvents(
      actor,
      host(counts({ tcp: [2, 120] }, [tcpTo('198.51.100.66', 22, 2)])),
      host(counts({ tcp: [3, 180], icmp: [1, 84] }, [tcpTo('198.51.100.66', 22, 2), tcpTo('198.51.100.66', 25, 1), icmp])),
    );
    assert.deepEqual(
      ev.map((e) => [e.action, e.decision, e.reason, e.payload.protocol, e.payload.packets, e.payload.bytes]),
      [
        ['net.blocked', 'deny', 'gateway.no_route', 'tcp', 1, 60],
        ['net.blocked', 'deny', 'gateway.no_route', 'icmp', 1, 84],
      ],
    );
    // only the destination that grew is named
    assert.deepEqual(ev[0]!.payload.destinations, [{ address: '198.51.100.66', protocol: 'tcp', port: 25, packets: 1 }]);
    assert.deepEqual(ev[1]!.payload.destinations, [{ address: '198.51.100.66', protocol: 'icmp', port: null, packets: 1 }]);
    assert.equal(
      ev[0]!.payload.detail,
      "1 tcp packet dropped by nftables (to 198.51.100.66:25): the sandbox's only way out is the gateway",
    );
  });
  it('names at most DESTINATIONS_LISTED destinations, most packets first, and says how many more', () => {
    const many = Array.from({ length: DESTINATIONS_LISTED + 4 }, (_, i) => tcpTo(`198.51.100.${i + 1}`, 22, i + 1));
    const [ev] = blockedEvents(actor, new Map(), host(counts({ tcp: [1000, 60_000] }, many)));
    const listed = ev!.payload.destinations as Array<{ address: string; packets: number }>;
    assert.equal(listed.length, DESTINATIONS_LISTED);
    assert.equal(listed[0]!.address, `198.51.100.${DESTINATIONS_LISTED + 4}`);
    assert.equal(ev!.payload.destinationsOmitted, 4);
  });
  it('nothing new, nothing emitted', () => {
    assert.deepEqual(blockedEvents(actor, host(counts({ udp: [5, 500] })), host(counts({ udp: [5, 500] }))), []);
  });
  it('sums the sources; a source missing from a reading (its table deleted) is neither re-counted nor lost', () => {
    const both = new Map([
      ['sandbox', counts({ tcp: [1, 60] }, [tcpTo('198.51.100.66', 22, 1)])],
      ['host', counts({ tcp: [2, 120] }, [tcpTo('198.51.100.66', 22, 2)])],
    ]);
    const [first] = blockedEvents(actor, new Map(), both);
    assert.equal(first!.payload.packets, 3);
    assert.deepEqual(
      first!.payload.destinations,
      [{ address: '198.51.100.66', protocol: 'tcp', port: 22, packets: 3 }],
      'the same destination from both tables is one entry',
    );
    // the sandbox's table is gone: only the host's increase counts
    assert.deepEqual(
      blockedEvents(actor, both, host(counts({ tcp: [5, 300] }, [tcpTo('198.51.100.66', 22, 5)]))).map((e) => e.payload.packets),
      [3],
    );
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
      assert.deepEqual(
        emitted.map((e) => [e.payload.protocol, e.payload.packets]),
        [['tcp', 4]],
      );
    } finally {
      process.stderr.write = write;
    }
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /no such table/);
  });
});
