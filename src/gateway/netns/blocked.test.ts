import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GatewayError } from '../errors.js';
import { parseBlockedTable, since, zeroCounts } from './blocked.js';

/**
 * `nft -j list table inet aegis` (nftables 1.0.6, Debian 12) inside a sandbox namespace after a
 * TCP connect to 198.51.100.66:22, a UDP datagram to 198.51.100.53:5353, an ICMP echo request,
 * an ICMPv6 echo request and a TCP connect to [2001:db8::66]:443; chains and rules left out.
 */
const NFT_TABLE =
  '{"nftables":[{"metainfo":{"version":"1.0.6","release_name":"Lester Gooch #5","json_schema_version":1}},{"counter":{"family":"inet","name":"blocked_tcp","table":"aegis","handle":5,"packets":1,"bytes":60}},{"counter":{"family":"inet","name":"blocked_udp","table":"aegis","handle":6,"packets":1,"bytes":48}},{"counter":{"family":"inet","name":"blocked_icmp","table":"aegis","handle":7,"packets":1,"bytes":28}},{"counter":{"family":"inet","name":"blocked_ipv6","table":"aegis","handle":8,"packets":2,"bytes":128}},{"counter":{"family":"inet","name":"blocked_other","table":"aegis","handle":9,"packets":0,"bytes":0}},{"set":{"family":"inet","name":"blocked_dst4","table":"aegis","type":["ipv4_addr","inet_proto","inet_service"],"handle":10,"size":1024,"elem":[{"elem":{"val":{"concat":["198.51.100.66","tcp",22]},"counter":{"packets":1,"bytes":60}}},{"elem":{"val":{"concat":["198.51.100.53","udp",5353]},"counter":{"packets":1,"bytes":48}}}],"stmt":[{"counter":null}]}},{"set":{"family":"inet","name":"blocked_ip4","table":"aegis","type":["ipv4_addr","inet_proto"],"handle":11,"size":1024,"elem":[{"elem":{"val":{"concat":["198.51.100.66","icmp"]},"counter":{"packets":1,"bytes":28}}}],"stmt":[{"counter":null}]}},{"set":{"family":"inet","name":"blocked_dst6","table":"aegis","type":["ipv6_addr","inet_proto","inet_service"],"handle":12,"size":1024,"elem":[{"elem":{"val":{"concat":["2001:db8::66","tcp",443]},"counter":{"packets":1,"bytes":80}}}],"stmt":[{"counter":null}]}},{"set":{"family":"inet","name":"blocked_ip6","table":"aegis","type":["ipv6_addr","inet_proto"],"handle":13,"size":1024,"elem":[{"elem":{"val":{"concat":["2001:db8::66","ipv6-icmp"]},"counter":{"packets":1,"bytes":48}}}],"stmt":[{"counter":null}]}}]}';

describe('parseBlockedTable', () => {
  it('reads the per-class counters and every destination with its own counter', () => {
    const r = parseBlockedTable(NFT_TABLE, 'aegis');
    assert.deepEqual(r.counts, {
      tcp: { packets: 1, bytes: 60 },
      udp: { packets: 1, bytes: 48 },
      icmp: { packets: 1, bytes: 28 },
      ipv6: { packets: 2, bytes: 128 },
      other: { packets: 0, bytes: 0 },
    });
    assert.deepEqual(
      [...r.destinations.values()].map((d) => [d.class, d.address, d.protocol, d.port, d.packets]),
      [
        ['tcp', '198.51.100.66', 'tcp', 22, 1],
        ['udp', '198.51.100.53', 'udp', 5353, 1],
        ['icmp', '198.51.100.66', 'icmp', null, 1],
        ['ipv6', '2001:db8::66', 'tcp', 443, 1],
        ['ipv6', '2001:db8::66', 'ipv6-icmp', null, 1],
      ],
    );
  });
  it('counters and sets of another table are not ours', () => {
    const r = parseBlockedTable(NFT_TABLE, 'aegis_00000000');
    assert.deepEqual(r.counts, zeroCounts());
    assert.equal(r.destinations.size, 0);
  });
  describe('when nft prints something else', () => {
    it('is netns_failed, never an uncaught TypeError', () => {
      for (const bad of [
        '',
        'null',
        '{}',
        '{"nftables": 3}',
        '{"nftables": [null, {"counter": {"table": "aegis", "name": "blocked_tcp", "packets": "1"}}]}',
        '{"nftables": [{"set": {"table": "aegis", "name": "blocked_dst4", "elem": {}}}]}',
        '{"nftables": [{"set": {"table": "aegis", "name": "blocked_dst4", "elem": [{"elem": {"val": {"concat": ["1.2.3.4", "tcp"]}, "counter": {"packets": 1, "bytes": 1}}}]}}]}',
        '{"nftables": [{"set": {"table": "aegis", "name": "blocked_ip4", "elem": [{"elem": {"val": {"concat": [7, "icmp"]}, "counter": {"packets": 1, "bytes": 1}}}]}}]}',
        '{"nftables": [{"set": {"table": "aegis", "name": "blocked_ip4", "elem": [{"elem": {"val": {"concat": ["1.2.3.4", "icmp"]}}}]}}]}',
      ]) {
        assert.throws(
          () => parseBlockedTable(bad, 'aegis'),
          (e: unknown) => e instanceof GatewayError && e.code === 'gateway.netns_failed',
          bad,
        );
      }
    });
  });
});

describe('since', () => {
  it('is the increase; a counter that went down was reset and counts from zero', () => {
    assert.deepEqual(since({ packets: 2, bytes: 120 }, { packets: 3, bytes: 180 }), { packets: 1, bytes: 60 });
    assert.deepEqual(since({ packets: 5, bytes: 300 }, { packets: 1, bytes: 60 }), { packets: 1, bytes: 60 });
    assert.deepEqual(since(undefined, { packets: 1, bytes: 60 }), { packets: 1, bytes: 60 });
  });
});
