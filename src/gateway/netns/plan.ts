/**
 * The network plan of one sandbox (pure): names, addresses and the nftables rulesets, derived
 * from a slot number and the gateway's listener ports. The adapter (adapter.ts) executes it.
 *
 * Topology: one network namespace per sandbox, a veth pair (host end `aeh<id>`, sandbox end
 * renamed `eth0`) on a /30 of the configured subnet. The sandbox's default route points at the
 * host end, where only the gateway listens.
 *
 * ARCHITECTURE NOTE: enforcement is in two places.
 * 1. Inside the sandbox's namespace (`inet aegis`): output policy drop; only DNS, the proxy
 *    ports on the gateway, and TCP 80/443 and the ports the policy names (all TCP when a rule
 *    allows any port; captured on the host side) may leave; the rest is counted and rejected
 *    (TCP reset, ICMP error) so the agent fails at once; no IPv6
 *    (eth0 has an IPv6 address and route only so that an IPv6 attempt leaves a packet to drop
 *    and count). Every drop of either table is counted per class (`blocked_*` counters).
 *    This layer does NOT see gVisor's traffic: runsc's netstack writes frames to the veth
 *    through a packet socket, which bypasses netfilter in the namespace.
 * 2. On the host end of the veth (`inet aegis_<id>`), which sees every frame whatever the
 *    runtime: DNS (any destination), TCP 80/443 and the named TCP ports (any destination) are
 *    redirected to the gateway's listeners; then, still in prerouting, every packet from the
 *    interface that is not from the sandbox's address to one of those listeners is counted and
 *    rejected. This table is the security boundary.
 *
 * ARCHITECTURE NOTE: the drop must happen in prerouting, before the routing decision. What
 *    the kernel does with a packet to a non-local address depends on host state AEGIS does not
 *    own: with `net.ipv4.ip_forward=0` (a new Debian machine) the route lookup itself discards
 *    it (`in_no_route`) and neither the input nor the forward hook ever sees it, so a drop
 *    counted there escapes the audit log; with forwarding on (after a Docker engine ran) it
 *    reaches the forward hook. The input and forward chains stay as a second layer.
 *
 * ARCHITECTURE NOTE: generic TCP capture, and how the gateway learns the original destination.
 *    Node cannot read SO_ORIGINAL_DST, so the host table hands it over in the addresses of the
 *    connection itself: every TCP port the policy names (other than 53/80/443, which have their
 *    own listeners) is DNATed to a listener of its own (`tcp dport map`: the listener knows the
 *    port), and in the nat input hook the connection's source is rewritten to the original
 *    destination address (`snat ip to ct original ip daddr`, the sandbox's source port kept), so
 *    the accepted socket's `remoteAddress` is the address the agent dialled. Replies are
 *    un-NATed by conntrack (and re-routed to the veth in the nat output hook). Each
 *    (address, sandbox port) stays unique, so no two connections clash. TCP to any other port
 *    is rejected with a reset (counted first): the agent sees "connection refused" at once.
 */
import { GatewayError } from '../errors.js';
import { blockedChain } from './blocked.js';

/** IPv6 address of the sandbox (ULA, RFC 4193; the same in every sandbox namespace, routed nowhere). */
export const SANDBOX_IPV6 = 'fd61:6567:6973::2';

/**
 * The microVM's link inside the sandbox's namespace (isolation microvm, docs/sandbox.md
 * "microVM", Network): a tap device the microVM launcher creates in this namespace, the
 * namespace's end addressed `namespace`, the guest's virtio-net `guest`, on a link-local /30 that
 * is the same in every sandbox namespace and routed nowhere else. The namespace forwards the
 * guest's packets to eth0 under the same rules as its own output (`guest_out`) and rewrites their
 * source to the sandbox's address (`guest_nat`), so the host table and the gateway see exactly
 * what they see of a crun agent. Without the tap (every other runtime) these rules match nothing,
 * and forwarding stays off (the launcher turns it on in that namespace alone).
 */
export const GUEST_LINK = { tap: 'aegisvm0', namespace: '169.254.77.1', guest: '169.254.77.2', prefix: 30 } as const;

/**
 * Ports the sandbox sees on the gateway address (stable, written into env and resolv.conf).
 * `tools`: the MCP tools broker (src/tools), only when the policy declares tool servers
 * (`AEGIS_TOOLS_URL=http://<gateway>:3129`).
 */
export const SANDBOX_PORTS = { dns: 53, httpProxy: 3128, socks: 1080, tools: 3129 } as const;

export interface ListenerPorts {
  readonly dns: number;
  readonly httpProxy: number;
  readonly socks: number;
  readonly transparentHttp: number;
  readonly transparentTls: number;
  /** Generic TCP capture: destination port the sandbox dials -> the gateway listener for it. */
  readonly tcp: ReadonlyMap<number, number>;
  /**
   * The listener for every other TCP port, present only when a rule allows any port
   * (`host:*`); it learns the original port from conntrack (transparent-tcp.ts).
   */
  readonly tcpAny?: number;
  /** The tools broker's listener, present only when the policy declares tool servers. */
  readonly tools?: number;
}

/** Destination ports with listeners of their own, never captured by the generic TCP path. */
export const RESERVED_CAPTURE_PORTS: ReadonlySet<number> = new Set([SANDBOX_PORTS.dns, 80, 443]);

export interface SandboxNetPlan {
  /** Short id (lower-case hex) used in every name. */
  readonly id: string;
  readonly slot: number;
  readonly netnsName: string;
  readonly netnsPath: string;
  readonly hostIf: string;
  readonly sandboxIfTemp: string;
  readonly sandboxIf: 'eth0';
  readonly hostAddress: string;
  readonly sandboxAddress: string;
  readonly prefix: 30;
  readonly hostTable: string;
}

const ID = /^[0-9a-f]{8}$/;

function v4ToInt(a: string): number {
  const p = a.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new GatewayError('gateway.config_invalid', `"${a}" is not an IPv4 address`);
  }
  return ((p[0]! << 24) >>> 0) + (p[1]! << 16) + (p[2]! << 8) + p[3]!;
}

function intToV4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parse `a.b.c.d/n` (n between 16 and 29) into its base and the number of /30 slots. */
export function parseSubnet(cidr: string): { base: number; slots: number } {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(cidr);
  if (!m) throw new GatewayError('gateway.config_invalid', `sandbox subnet "${cidr}" is not a.b.c.d/n`);
  const prefix = Number(m[2]);
  if (prefix < 16 || prefix > 29)
    throw new GatewayError('gateway.config_invalid', `sandbox subnet prefix /${prefix} must be between /16 and /29`);
  const base = v4ToInt(m[1]!);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((base & mask) >>> 0 !== base) throw new GatewayError('gateway.config_invalid', `sandbox subnet "${cidr}" has host bits set`);
  return { base, slots: 2 ** (30 - prefix) };
}

/** One IPv4 route of the host, as `ip -j route show table all` prints it (`dst` may be "default"). */
export interface HostRoute {
  readonly dst: string;
  readonly dev?: string;
  readonly table?: string;
}

/** Host interfaces that are the gateway's own per-sandbox veths (their /30s are in the subnet). */
export const OWN_IF_PREFIX = 'aeh';

function rangeOf(cidr: string): { lo: number; hi: number } | null {
  const m = /^([0-9.]+)(?:\/([0-9]{1,2}))?$/.exec(cidr);
  if (!m) return null;
  const prefix = m[2] === undefined ? 32 : Number(m[2]);
  if (prefix > 32) return null;
  let base: number;
  try {
    base = v4ToInt(m[1]!);
  } catch {
    return null;
  }
  const size = 2 ** (32 - prefix);
  const lo = base - (base % size);
  return { lo, hi: lo + size - 1 };
}

/**
 * Host routes that overlap `subnet` (pure). The sandbox subnet must be address space the host
 * uses for nothing else: a /30 carved from a range the host routes elsewhere (its LAN, a
 * resolver, a registry mirror) would shadow that destination for the host while the sandbox
 * runs. Default routes (/0) are ignored, and so are routes on the gateway's own veths.
 */
export function subnetConflicts(subnet: string, routes: readonly HostRoute[]): HostRoute[] {
  const { base, slots } = parseSubnet(subnet);
  const lo = base;
  const hi = base + slots * 4 - 1;
  return routes.filter((r) => {
    if (r.dst === 'default' || r.dst === '0.0.0.0/0') return false;
    if (r.dev?.startsWith(OWN_IF_PREFIX)) return false;
    const rr = rangeOf(r.dst);
    return rr !== null && rr.lo <= hi && lo <= rr.hi;
  });
}

/**
 * Slots of `subnet` whose /30 the host already routes on one of the gateway's own veths (pure):
 * networks of another state dir sharing the subnet (or prepared in its pool), which this state
 * dir's slot locks do not show. A claim skips them: two veths with the same addresses would
 * route the sandbox's traffic to the wrong gateway.
 */
export function slotsInUse(subnet: string, routes: readonly HostRoute[]): Set<number> {
  const { base, slots } = parseSubnet(subnet);
  const used = new Set<number>();
  for (const r of routes) {
    if (!r.dev?.startsWith(OWN_IF_PREFIX)) continue;
    const rr = rangeOf(r.dst);
    if (rr === null || rr.lo < base || rr.lo > base + slots * 4 - 1) continue;
    used.add(Math.floor((rr.lo - base) / 4));
  }
  return used;
}

/** Whether IPv4 `address` lies inside `subnet`. */
export function subnetContains(subnet: string, address: string): boolean {
  const { base, slots } = parseSubnet(subnet);
  const r = rangeOf(address);
  return r !== null && r.lo >= base && r.lo <= base + slots * 4 - 1;
}

export function planSandboxNet(id: string, slot: number, subnet: string): SandboxNetPlan {
  if (!ID.test(id)) throw new GatewayError('gateway.netns_failed', `sandbox network id "${id}" is not 8 lower-case hex digits`);
  const { base, slots } = parseSubnet(subnet);
  if (!Number.isInteger(slot) || slot < 0 || slot >= slots)
    throw new GatewayError('gateway.netns_exhausted', `slot ${slot} is outside ${subnet} (${slots} slots)`);
  const net = base + slot * 4;
  return {
    id,
    slot,
    netnsName: `aegis-${id}`,
    netnsPath: `/run/netns/aegis-${id}`,
    hostIf: `${OWN_IF_PREFIX}${id}`,
    sandboxIfTemp: `aes${id}`,
    sandboxIf: 'eth0',
    hostAddress: intToV4(net + 1),
    sandboxAddress: intToV4(net + 2),
    prefix: 30,
    hostTable: `aegis_${id}`,
  };
}

/**
 * Ruleset loaded inside the sandbox's namespace (`nft -f -`). Defense in depth for crun/runc.
 * For a microVM it also filters the guest's forwarded packets (`guest_out`, GUEST_LINK); output to
 * the guest's tap is accepted so that the refusals `blocked` sends it (TCP resets, ICMP errors,
 * emitted through this namespace's output hook) reach it.
 * `create table`: the namespace is new, so the table cannot exist; should it exist all the same,
 * the load fails (and the sandbox does not start). No `delete table` in the same transaction: a
 * deletion makes the commit wait for an RCU grace period (issue 18: ~10 ms of every load).
 */
export function sandboxRuleset(p: SandboxNetPlan, tcpPorts: readonly number[] = [], anyTcpPort = false, tools = false): string {
  const captured = anyTcpPort ? 'meta l4proto tcp accept' : `tcp dport { ${[80, 443, ...tcpPorts].join(', ')} } accept`;
  const gwPorts = [SANDBOX_PORTS.dns, SANDBOX_PORTS.httpProxy, SANDBOX_PORTS.socks, ...(tools ? [SANDBOX_PORTS.tools] : [])];
  return `create table inet aegis
table inet aegis {
${blockedChain()}
  chain output {
    type filter hook output priority filter; policy drop;
    oifname "lo" accept
    oifname "${GUEST_LINK.tap}" ip daddr ${GUEST_LINK.guest} accept
    meta nfproto ipv6 jump blocked
    ip daddr ${p.hostAddress} tcp dport { ${gwPorts.join(', ')} } accept
    udp dport ${SANDBOX_PORTS.dns} accept
    ${captured}
    jump blocked
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    meta nfproto ipv6 drop
    ct state established,related accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    iifname "${GUEST_LINK.tap}" oifname "${p.sandboxIf}" jump guest_out
    iifname "${p.sandboxIf}" oifname "${GUEST_LINK.tap}" ct state established,related accept
  }
${guestChains(p, gwPorts, captured)}
}
`;
}

/**
 * The microVM guest's traffic (see GUEST_LINK): the same accept list as the namespace's own
 * output, the rest counted and refused by the shared `blocked` chain (net.blocked), and the
 * source rewritten to the sandbox's address on the way out (the host table admits nothing else).
 */
function guestChains(p: SandboxNetPlan, gwPorts: readonly number[], captured: string): string {
  return `  chain guest_out {
    meta nfproto ipv6 jump blocked
    ip saddr ${GUEST_LINK.guest} ip daddr ${p.hostAddress} tcp dport { ${gwPorts.join(', ')} } accept
    ip saddr ${GUEST_LINK.guest} udp dport ${SANDBOX_PORTS.dns} accept
    ip saddr ${GUEST_LINK.guest} ${captured}
    jump blocked
  }
  chain guest_nat {
    type nat hook postrouting priority srcnat; policy accept;
    iifname "${GUEST_LINK.tap}" oifname "${p.sandboxIf}" ip saddr ${GUEST_LINK.guest} snat ip to ${p.sandboxAddress}
  }`;
}

/**
 * Per-sandbox table on the host: the security boundary (see the architecture note). Its name
 * carries the network's random id: `create table` fails, and so the start, should a table of
 * that name exist (no `delete table` in the transaction: see `sandboxRuleset`).
 */
export function hostRuleset(p: SandboxNetPlan, ports: ListenerPorts): string {
  const ifc = `iifname "${p.hostIf}"`;
  const gw = p.hostAddress;
  const tcp = [...ports.tcp];
  const generics = [...tcp.map(([, l]) => l), ...(ports.tcpAny === undefined ? [] : [ports.tcpAny])];
  const listeners = [
    ports.dns,
    ports.httpProxy,
    ports.socks,
    ports.transparentHttp,
    ports.transparentTls,
    ...generics,
    ...(ports.tools === undefined ? [] : [ports.tools]),
  ].join(', ');
  const tools =
    ports.tools === undefined
      ? ''
      : `
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} tcp dport ${SANDBOX_PORTS.tools} dnat ip to ${gw}:${ports.tools}`;
  let generic =
    tcp.length === 0
      ? ''
      : `
    ${ifc} ip saddr ${p.sandboxAddress} tcp dport { ${tcp.map(([d]) => d).join(', ')} } dnat ip to ${gw} : tcp dport map { ${tcp.map(([d, l]) => `${d} : ${l}`).join(', ')} }`;
  if (ports.tcpAny !== undefined) {
    generic += `
    ${ifc} ip saddr ${p.sandboxAddress} meta l4proto tcp dnat ip to ${gw}:${ports.tcpAny}`;
  }
  const restoreDst =
    generics.length === 0
      ? ''
      : `
  chain restore_dst {
    type nat hook input priority 100; policy accept;
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} tcp dport { ${generics.join(', ')} } snat ip to ct original ip daddr
  }`;
  return `create table inet ${p.hostTable}
table inet ${p.hostTable} {
${blockedChain()}
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ${ifc} ip saddr ${p.sandboxAddress} meta l4proto { tcp, udp } th dport ${SANDBOX_PORTS.dns} dnat ip to ${gw}:${ports.dns}
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} tcp dport ${SANDBOX_PORTS.httpProxy} dnat ip to ${gw}:${ports.httpProxy}
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} tcp dport ${SANDBOX_PORTS.socks} dnat ip to ${gw}:${ports.socks}${tools}
    ${ifc} ip saddr ${p.sandboxAddress} tcp dport 80 dnat ip to ${gw}:${ports.transparentHttp}
    ${ifc} ip saddr ${p.sandboxAddress} tcp dport 443 dnat ip to ${gw}:${ports.transparentTls}${generic}
  }${restoreDst}
  chain admit {
    type filter hook prerouting priority dstnat + 10; policy accept;
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} udp dport ${ports.dns} accept
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} tcp dport { ${listeners} } accept
    ${ifc} jump blocked
  }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} udp dport ${ports.dns} accept
    ${ifc} ip saddr ${p.sandboxAddress} ip daddr ${gw} tcp dport { ${listeners} } accept
    ${ifc} jump blocked
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    ${ifc} jump blocked
    oifname "${p.hostIf}" drop
  }
}
`;
}

/**
 * Environment for the sandbox: HTTP_PROXY/HTTPS_PROXY (the CONNECT proxy, which every mainstream
 * client speaks without extra packages) in both spellings, and NO_PROXY for loopback.
 *
 * No ALL_PROXY: a `socks5h://` ALL_PROXY made httpx (and so the OpenAI SDK) fail before sending
 * anything ("Using SOCKS proxy, but the 'socksio' package is not installed"), and clients
 * without proxy support need none: every TCP port the policy names is captured transparently.
 * The SOCKS5 listener stays at <gateway>:1080 for clients configured for it explicitly.
 */
export function proxyEnv(p: SandboxNetPlan, tools = false): Record<string, string> {
  const http = `http://${p.hostAddress}:${SANDBOX_PORTS.httpProxy}`;
  // The tools broker is on the gateway's address: clients must reach it directly, not via the proxy.
  const noProxy = tools ? `localhost,127.0.0.1,::1,${p.hostAddress}` : 'localhost,127.0.0.1,::1';
  return {
    HTTP_PROXY: http,
    HTTPS_PROXY: http,
    NO_PROXY: noProxy,
    http_proxy: http,
    https_proxy: http,
    no_proxy: noProxy,
    ...(tools ? { AEGIS_TOOLS_URL: toolsUrl(p) } : {}),
  };
}

/** `http://<gateway>:3129`: the tools broker as the sandbox sees it (`$AEGIS_TOOLS_URL/<name>/mcp`). */
export function toolsUrl(p: SandboxNetPlan): string {
  return `http://${p.hostAddress}:${SANDBOX_PORTS.tools}`;
}

/** The socks5h:// URL of the gateway's SOCKS5 listener, for clients that ask for it explicitly. */
export function socksUrl(p: SandboxNetPlan): string {
  return `socks5h://${p.hostAddress}:${SANDBOX_PORTS.socks}`;
}

/** resolv.conf for the sandbox: the gateway is the only resolver. */
export function resolvConf(p: SandboxNetPlan): string {
  return `# written by the AEGIS gateway: every query goes to the gateway, which answers only allowed names\nnameserver ${p.hostAddress}\noptions timeout:2 attempts:2\n`;
}

/** A word of a generated command line: names and addresses of a plan only, never anything to quote. */
const WORD = /^[A-Za-z0-9_.:/-]+$/;

function word(w: string): string {
  // Fail secure: plan values are validated (planSandboxNet), so this never fires unless a bug lets
  // something else in, and then nothing runs.
  if (!WORD.test(w)) throw new GatewayError('gateway.netns_failed', `refusing to put "${w}" in a generated command`);
  return w;
}

/**
 * The lines of an `ip -batch -` script (one ip command each, without the leading `ip`). Global
 * options such as `-6` are not accepted on a batch line: the family comes from the address.
 */
function batch(lines: ReadonlyArray<readonly string[]>): string {
  return lines.map((l) => `${l.map(word).join(' ')}\n`).join('');
}

/**
 * `ip -batch -` on the host: the namespace, the veth pair (its sandbox end created inside the
 * namespace under a temporary name, down), the host end's address, the host end up.
 */
export function hostLinkBatch(p: SandboxNetPlan): string {
  return batch([
    ['netns', 'add', p.netnsName],
    ['link', 'add', p.hostIf, 'type', 'veth', 'peer', 'name', p.sandboxIfTemp, 'netns', p.netnsName],
    ['addr', 'add', `${p.hostAddress}/${p.prefix}`, 'dev', p.hostIf],
    ['link', 'set', p.hostIf, 'up'],
  ]);
}

/**
 * The `sh -c` script run inside the namespace (`ip netns exec`), with the sandbox's ruleset on
 * its stdin; `tools` are absolute paths. Under `set -e`:
 * a. the IPv6 sysctls, written by shell built-ins (no process): IPv6 off on every interface
 *    (`all` applies to the existing `lo` and veth end too, `default` to any later one), then on
 *    for the veth end alone (under its temporary name; the settings stay with the interface when
 *    renamed) with no link-local address (addr_gen_mode 1), no router advertisements, no DAD:
 *    an IPv6 attempt then leaves a packet for the nft drop to count (net.blocked);
 * b. `nft -f -`: the sandbox's ruleset;
 * c. `ip -batch -` (a here-document): the rename to eth0, addresses, links up, routes.
 * SECURITY: (b) comes before any link in the namespace is up (c): no packet leaves unfiltered.
 */
export function namespaceSetupScript(p: SandboxNetPlan, tools: { readonly nft: string; readonly ip: string }): string {
  const conf = '/proc/sys/net/ipv6/conf';
  const v6 = `${conf}/${word(p.sandboxIfTemp)}`;
  const sysctls: Array<[string, number]> = [
    [`${conf}/all/disable_ipv6`, 1],
    [`${conf}/default/disable_ipv6`, 1],
    [`${v6}/addr_gen_mode`, 1],
    [`${v6}/accept_ra`, 0],
    [`${v6}/autoconf`, 0],
    [`${v6}/accept_dad`, 0],
    [`${v6}/router_solicitations`, 0],
    [`${v6}/disable_ipv6`, 0],
  ];
  const links = batch([
    ['link', 'set', p.sandboxIfTemp, 'name', p.sandboxIf],
    ['addr', 'add', `${p.sandboxAddress}/${p.prefix}`, 'dev', p.sandboxIf],
    ['addr', 'add', `${SANDBOX_IPV6}/128`, 'dev', p.sandboxIf, 'nodad'],
    ['link', 'set', 'lo', 'up'],
    ['link', 'set', p.sandboxIf, 'up'],
    ['route', 'add', 'default', 'via', p.hostAddress, 'dev', p.sandboxIf],
    ['route', 'add', '::/0', 'dev', p.sandboxIf],
  ]);
  return [
    'set -e',
    ...sysctls.map(([path, value]) => `echo ${value} > ${path}`),
    `${word(tools.nft)} -f -`,
    `${word(tools.ip)} -batch - <<'AEGIS_IP_BATCH'`,
    `${links}AEGIS_IP_BATCH`,
    '',
  ].join('\n');
}

/**
 * `ip -force -batch -` of the teardown (every line tolerates "already gone"): the veth's host
 * end down and without address, so it neither receives nor routes anything from then on, then
 * the namespace unmounted; the kernel deletes the pair once no process holds the namespace.
 */
export function teardownBatch(p: SandboxNetPlan): string {
  return batch([
    ['link', 'set', p.hostIf, 'down'],
    ['addr', 'flush', 'dev', p.hostIf],
    ['netns', 'del', p.netnsName],
  ]);
}

/** Paths the background teardown removes (under the gateway's state dir; every word checked). */
export interface TeardownPaths {
  /** The network's run directory (resolv.conf, CA bundle). */
  readonly runDir: string;
  /** The slot lock, removed last, and only once the veth's host end has lost its address. */
  readonly slotLock: string;
}

/**
 * The `sh -c` script of a teardown off the critical path (`startBackgroundTeardown` in the
 * adapter), with absolute `tools`. It is started while the final drop-counter reading is made,
 * and waits for its stdin to close (the caller has then read the tables and made it the slot
 * lock's owner); then it runs `teardownBatch` and deletes the host table (the slow part: a
 * deletion waits for an RCU grace period). The slot lock is removed only when the batch
 * succeeded: should the address still be there, the lock stays, its owner (this script) dies,
 * and the next sweep tears the network down again before the slot is reused.
 */
export function teardownScript(
  p: SandboxNetPlan,
  tools: { readonly ip: string; readonly nft: string; readonly rm: string; readonly grep: string },
  paths: TeardownPaths,
): string {
  const [ip, nft, rm, grep] = [word(tools.ip), word(tools.nft), word(tools.rm), word(tools.grep)];
  return [
    'read -r _ || true',
    `${nft} delete table inet ${word(p.hostTable)} 2>/dev/null &`,
    `if ${ip} -force -batch - <<'AEGIS_IP_BATCH'`,
    `${teardownBatch(p)}AEGIS_IP_BATCH`,
    'then ok=1; else ok=0; fi',
    'wait',
    `${rm} -rf /etc/netns/${word(p.netnsName)} ${word(paths.runDir)}`,
    // Only a lock that still names this network: never one a later claimer took after a sweep.
    `if [ $ok = 1 ] && ${grep} -qF '"id":"${word(p.id)}"' ${word(paths.slotLock)}; then ${rm} -f ${word(paths.slotLock)}; fi`,
    '',
  ].join('\n');
}
