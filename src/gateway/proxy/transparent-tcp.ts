/**
 * Generic transparent TCP capture: one listener per destination port the policy names (other
 * than 53/80/443, which have listeners of their own). nftables on the host end of the veth
 * DNATs the sandbox's connections to that port here and rewrites their source to the address
 * the agent dialled (src/gateway/netns/plan.ts, ARCHITECTURE NOTE), so `remoteAddress` is the
 * original destination and the listener's own port the original port.
 *
 * Decision: the destination is the name the gateway's own DNS answered with that address in
 * this sandbox (the most recent first; any name the policy allows on that port), else the
 * address itself (IP/CIDR rules). Allowed connections are spliced to that address (the
 * gateway's own answer, never an address it did not hand out, unless a CIDR rule names it),
 * through the same checks as every tunnel (`openTunnel`); the TLS SNI check of `runTunnel`
 * applies when the first bytes are a ClientHello. Denied connections are reset at once (the
 * agent sees ECONNRESET right after connecting, never a hang) and audited as `net.connect`
 * with mode `transparent-tcp`.
 *
 * A rule that allows any port (`host:*`) adds one more listener that takes every other TCP
 * port. Its port says nothing, so it reads the original port from the kernel's connection
 * table (`/proc/net/nf_conntrack`: the entry whose reply direction is this connection).
 * LIMITATION: that read is O(connections on the host), and a kernel without
 * CONFIG_NF_CONNTRACK_PROCFS has no such file: the connection is then reset (fail secure,
 * audited `gateway.malformed`), and such hosts stay reachable through CONNECT/SOCKS5.
 *
 * LIMITATION: the listener cannot tell a connection that came through the sandbox's veth from
 * a host process connecting to it directly (the host table admits only the sandbox's address
 * on the veth; host processes are trusted). Such a connection is decided like any other, on
 * its own source address.
 */
import { readFile } from 'node:fs/promises';
import { createServer, isIPv4, type Server, type Socket } from 'node:net';
import type { Decision } from '../../policy/types.js';
import { gatewayDeny, type Verdict } from '../audit/events.js';
import { GatewayError } from '../errors.js';
import type { Session } from '../session.js';
import { auditDenied, openTunnel, runTunnel } from './tunnel.js';

/** Where the kernel lists tracked connections (text, one per line). */
export const CONNTRACK_PROC = '/proc/net/nf_conntrack';

/**
 * The original destination port of a captured connection, from `/proc/net/nf_conntrack` text
 * (pure): the IPv4 TCP entry whose reply direction is `gateway:listenerPort -> address:sourcePort`
 * (after the DNAT to the listener and the SNAT to the original address) and whose original
 * source is the sandbox. Null when there is none.
 */
export function originalPortFromConntrack(
  text: string,
  c: { gateway: string; listenerPort: number; address: string; sourcePort: number; sandbox: string },
): number | null {
  const reply = ` src=${c.gateway} dst=${c.address} sport=${c.listenerPort} dport=${c.sourcePort} `;
  for (const line of text.split('\n')) {
    if (!line.startsWith('ipv4 ') || !line.includes(' tcp ') || !line.includes(reply)) continue;
    const m = / src=([0-9.]+) dst=([0-9.]+) sport=([0-9]+) dport=([0-9]+) /.exec(line);
    if (!m || m[1] !== c.sandbox || m[2] !== c.address || Number(m[3]) !== c.sourcePort) continue;
    const port = Number(m[4]);
    return Number.isInteger(port) && port >= 1 && port <= 65535 ? port : null;
  }
  return null;
}

/**
 * `dport`: the port this listener captures, or 'any' for the listener that takes every port no
 * other listener has (then `sandbox` is the sandbox's address, for the conntrack lookup).
 */
export function startTransparentTcpListener(session: Session, host: string, dport: number | 'any', sandbox = ''): Promise<Server> {
  const server = createServer((sock) => {
    session.track(sock);
    sock.on('error', () => sock.destroy());
    const port = dport === 'any' ? originalPort(sock, host, sandbox) : Promise.resolve(dport);
    port
      .then((p) => serve(session, sock, p))
      .catch((err: unknown) => {
        process.stderr.write(`aegis gateway: transparent tcp: ${String(err)}\n`);
        sock.resetAndDestroy();
      });
  });
  session.guard(server, 'transparent-tcp');
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new GatewayError('gateway.listen_failed', `transparent TCP listener for port ${dport} on ${host}: ${err.message}`, { cause: err }),
      ),
    );
    server.listen(0, host, () => resolve(server));
  });
}

/** The name (or the address itself) a connection to `address:port` is decided on, and the decision. */
export function decideCaptured(session: Session, address: string, port: number): { host: string; decision: Decision } {
  let first: { host: string; decision: Decision } | null = null;
  for (const name of session.namesFor(address)) {
    const decision = session.matcher.decide(name, port);
    if (decision.allow) return { host: name, decision };
    first ??= { host: name, decision };
  }
  const byAddress = session.matcher.decide(address, port);
  // A denial by name says more than "no rule lists this address".
  return byAddress.allow || first === null ? { host: address, decision: byAddress } : first;
}

function remoteV4(sock: Socket): string {
  const raw = sock.remoteAddress ?? '';
  return raw.startsWith('::ffff:') ? raw.slice(7) : raw;
}

/** The original port of a connection on the any-port listener, or null (then it is reset). */
async function originalPort(sock: Socket, gateway: string, sandbox: string): Promise<number | null> {
  let text: string;
  try {
    text = await readFile(CONNTRACK_PROC, 'latin1');
  } catch {
    return null;
  }
  return originalPortFromConntrack(text, {
    gateway,
    listenerPort: sock.localPort ?? 0,
    address: remoteV4(sock),
    sourcePort: sock.remotePort ?? 0,
    sandbox,
  });
}

async function serve(session: Session, sock: Socket, port: number | null): Promise<void> {
  const startedAt = session.now();
  const raw = sock.remoteAddress ?? '';
  const address = remoteV4(sock);
  let host: string = address;
  const refuse = (v: Verdict): void => {
    auditDenied(session, 'transparent-tcp', host, port, v, startedAt);
    sock.resetAndDestroy();
  };
  if (!isIPv4(address)) return refuse(gatewayDeny('gateway.malformed', `original destination "${raw}" is not an IPv4 address`));
  if (port === null)
    return refuse(gatewayDeny('gateway.malformed', `original port of a connection to ${address} not found in ${CONNTRACK_PROC}`));
  const opened = await openTunnel(session, {
    host: address,
    port,
    address,
    decide: () => {
      const d = decideCaptured(session, address, port);
      host = d.host;
      return d.decision;
    },
    nameForIntercept: () => host,
  });
  if (!opened.ok) return refuse(opened.verdict);
  if (opened.intercept) return refuse(gatewayDeny('gateway.inspection_required', 'unreachable: generic TCP is never intercepted'));
  if (sock.destroyed) {
    opened.upstream.socket.destroy();
    return;
  }
  runTunnel(
    session,
    sock,
    opened.upstream,
    { mode: 'transparent-tcp', host, port, startedAt, allowReason: opened.allowReason },
    Buffer.alloc(0),
  );
}
