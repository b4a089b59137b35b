/**
 * What nftables drops, counted (pure): the `blocked` chain both per-sandbox tables share, and
 * the parser of its counters and destination sets as `nft -j list table` prints them.
 *
 * Each drop is counted twice over: in a named counter per traffic class (`blocked_<class>`),
 * and per destination in a dynamic set with a counter per element (address, protocol, and the
 * port for TCP/UDP). The monitor (src/gateway/blocked-monitor.ts) turns increases into
 * `net.blocked` audit events. A destination set holds at most DESTINATIONS_MAX entries per
 * family; when it is full, new destinations are still dropped and counted per class, only not
 * named.
 */
import { GatewayError } from '../errors.js';

export const BLOCKED_CLASSES = ['tcp', 'udp', 'icmp', 'ipv6', 'other'] as const;
export type BlockedClass = (typeof BLOCKED_CLASSES)[number];

export const DESTINATIONS_MAX = 1024;

/**
 * The counting drop, shared by both tables (a regular chain, entered by `jump`).
 *
 * Not counted, to keep the events about what the agent tried: packets conntrack finds invalid
 * (a late RST or ACK of a connection already gone), ICMP error messages (the sandbox's kernel
 * answering a late DNS reply with port-unreachable), and the IPv6 neighbour discovery and
 * multicast-listener messages the kernel sends by itself. They are dropped all the same.
 * The `update` rules have no verdict: when a set is full the rule stops there, and the packet
 * goes on to be counted and dropped by the rules after it.
 *
 * Fast refusals: what is counted is rejected, not silently dropped: TCP with a reset (the agent
 * sees "connection refused" at once, not a hang until its timeout), everything else with an
 * ICMP administratively-prohibited error. Works in prerouting (before the route lookup), so
 * with forwarding off and on alike.
 */
export function blockedChain(): string {
  const counters = BLOCKED_CLASSES.map((c) => `  counter blocked_${c} { }`).join('\n');
  const set = (name: string, type: string): string => `  set ${name} { type ${type}; size ${DESTINATIONS_MAX}; flags dynamic; counter; }`;
  return `${counters}
${set('blocked_dst4', 'ipv4_addr . inet_proto . inet_service')}
${set('blocked_ip4', 'ipv4_addr . inet_proto')}
${set('blocked_dst6', 'ipv6_addr . inet_proto . inet_service')}
${set('blocked_ip6', 'ipv6_addr . inet_proto')}
  chain blocked {
    ct state invalid drop
    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report } drop
    icmp type { destination-unreachable, time-exceeded, parameter-problem } drop
    meta nfproto ipv4 meta l4proto { tcp, udp } update @blocked_dst4 { ip daddr . meta l4proto . th dport }
    meta nfproto ipv4 meta l4proto != { tcp, udp } update @blocked_ip4 { ip daddr . meta l4proto }
    meta nfproto ipv6 meta l4proto { tcp, udp } update @blocked_dst6 { ip6 daddr . meta l4proto . th dport }
    meta nfproto ipv6 meta l4proto != { tcp, udp } update @blocked_ip6 { ip6 daddr . meta l4proto }
    meta nfproto ipv6 meta l4proto tcp counter name "blocked_ipv6" reject with tcp reset
    meta nfproto ipv6 counter name "blocked_ipv6" reject with icmpx admin-prohibited
    meta l4proto tcp counter name "blocked_tcp" reject with tcp reset
    meta l4proto udp counter name "blocked_udp" reject with icmpx admin-prohibited
    meta l4proto icmp counter name "blocked_icmp" reject with icmpx admin-prohibited
    counter name "blocked_other" reject with icmpx admin-prohibited
  }`;
}

export interface BlockedCount {
  readonly packets: number;
  readonly bytes: number;
}
export type BlockedCounts = Readonly<Record<BlockedClass, BlockedCount>>;

/** One destination of dropped packets, with its counter. */
export interface BlockedDestination extends BlockedCount {
  readonly class: BlockedClass;
  readonly address: string;
  /** Protocol name as nft prints it (tcp, udp, icmp, gre, ...) or its number. */
  readonly protocol: string;
  /** TCP/UDP destination port; null for other protocols. */
  readonly port: number | null;
}

/** One table's reading: counters per class, and destinations by key (`address protocol port`). */
export interface BlockedTableReading {
  readonly counts: BlockedCounts;
  readonly destinations: ReadonlyMap<string, BlockedDestination>;
}

export function zeroCounts(): BlockedCounts {
  return Object.fromEntries(BLOCKED_CLASSES.map((c) => [c, { packets: 0, bytes: 0 }])) as BlockedCounts;
}

const SETS: Readonly<Record<string, { family: 4 | 6; ports: boolean }>> = {
  blocked_dst4: { family: 4, ports: true },
  blocked_ip4: { family: 4, ports: false },
  blocked_dst6: { family: 6, ports: true },
  blocked_ip6: { family: 6, ports: false },
};

function classOf(family: 4 | 6, protocol: string): BlockedClass {
  if (family === 6) return 'ipv6';
  return protocol === 'tcp' || protocol === 'udp' || protocol === 'icmp' ? protocol : 'other';
}

function fail(table: string, what: string, cause?: unknown): never {
  throw new GatewayError('gateway.netns_failed', `nft table ${table}: ${what}`, cause === undefined ? undefined : { cause });
}

function countOf(table: string, c: unknown, what: string): BlockedCount {
  const { packets, bytes } = (c ?? {}) as { packets?: unknown; bytes?: unknown };
  if (typeof packets !== 'number' || typeof bytes !== 'number') fail(table, `${what} has no packet/byte numbers`);
  return { packets, bytes };
}

/** A set element `{ elem: { val: { concat: [address, protocol, port?] }, counter } }`. */
function destinationOf(table: string, setName: string, item: unknown): BlockedDestination {
  const { family, ports } = SETS[setName]!;
  const elem = (item as { elem?: { val?: { concat?: unknown }; counter?: unknown } } | null)?.elem;
  const parts = elem?.val?.concat;
  if (!Array.isArray(parts) || parts.length !== (ports ? 3 : 2))
    fail(table, `an element of ${setName} is not a ${ports ? 3 : 2}-part concatenation`);
  const [address, proto, port] = parts as unknown[];
  if (typeof address !== 'string' || (typeof proto !== 'string' && typeof proto !== 'number') || (ports && typeof port !== 'number')) {
    fail(table, `an element of ${setName} has unexpected parts`);
  }
  const protocol = String(proto);
  return {
    class: classOf(family, protocol),
    address,
    protocol,
    port: ports ? (port as number) : null,
    ...countOf(table, elem?.counter, `an element of ${setName}`),
  };
}

/**
 * The `blocked_*` counters and destination sets of `table` in the output of
 * `nft -j list table inet <table>`. Throws `gateway.netns_failed` on output that is not that shape;
 * a counter or set that is missing counts as zero / empty.
 */
export function parseBlockedTable(json: string, table: string): BlockedTableReading {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    fail(table, 'not JSON', err);
  }
  const items = (doc as { nftables?: unknown } | null)?.nftables;
  if (!Array.isArray(items)) fail(table, 'no "nftables" array');
  const counts: Record<string, BlockedCount> = { ...zeroCounts() };
  const destinations = new Map<string, BlockedDestination>();
  for (const item of items as unknown[]) {
    const c = (item as { counter?: { table?: unknown; name?: unknown } } | null)?.counter;
    if (c && c.table === table && typeof c.name === 'string' && c.name.startsWith('blocked_')) {
      const cls = c.name.slice('blocked_'.length);
      if ((BLOCKED_CLASSES as readonly string[]).includes(cls)) counts[cls] = countOf(table, c, `counter ${c.name}`);
    }
    const set = (item as { set?: { table?: unknown; name?: unknown; elem?: unknown } } | null)?.set;
    if (set && set.table === table && typeof set.name === 'string' && Object.hasOwn(SETS, set.name) && set.elem !== undefined) {
      if (!Array.isArray(set.elem)) fail(table, `set ${set.name} has no element array`);
      for (const e of set.elem as unknown[]) {
        const d = destinationOf(table, set.name, e);
        destinations.set(`${d.address} ${d.protocol} ${d.port ?? ''}`, d);
      }
    }
  }
  return { counts: counts as BlockedCounts, destinations };
}

/** Increase of a counter since the previous reading; one that went down was reset, so all it holds is new. */
export function since(prev: BlockedCount | undefined, cur: BlockedCount): BlockedCount {
  if (!prev || cur.packets < prev.packets) return cur;
  return { packets: cur.packets - prev.packets, bytes: Math.max(0, cur.bytes - prev.bytes) };
}
