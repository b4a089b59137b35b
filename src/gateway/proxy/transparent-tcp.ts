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
 * LIMITATION: the listener cannot tell a connection that came through the sandbox's veth from
 * a host process connecting to it directly (the host table admits only the sandbox's address
 * on the veth; host processes are trusted). Such a connection is decided like any other, on
 * its own source address.
 */
import { createServer, isIPv4, type Server, type Socket } from 'node:net';
import type { Decision } from '../../policy/types.js';
import { gatewayDeny, type Verdict } from '../audit/events.js';
import { GatewayError } from '../errors.js';
import type { Session } from '../session.js';
import { auditDenied, openTunnel, runTunnel } from './tunnel.js';

export function startTransparentTcpListener(session: Session, host: string, dport: number): Promise<Server> {
  const server = createServer((sock) => {
    session.track(sock);
    sock.on('error', () => sock.destroy());
    serve(session, sock, dport).catch((err: unknown) => {
      process.stderr.write(`aegis gateway: transparent tcp: ${String(err)}\n`);
      sock.resetAndDestroy();
    });
  });
  session.guard(server, 'transparent-tcp');
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new GatewayError('listen_failed', `transparent TCP listener for port ${dport} on ${host}: ${err.message}`, { cause: err })));
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

async function serve(session: Session, sock: Socket, port: number): Promise<void> {
  const startedAt = session.now();
  const raw = sock.remoteAddress ?? '';
  const address = raw.startsWith('::ffff:') ? raw.slice(7) : raw;
  let host: string = address;
  const refuse = (v: Verdict): void => {
    auditDenied(session, 'transparent-tcp', host, port, v, startedAt);
    sock.resetAndDestroy();
  };
  if (!isIPv4(address)) return refuse(gatewayDeny('gateway.malformed', `original destination "${raw}" is not an IPv4 address`));
  const opened = await openTunnel(session, {
    host: address,
    port,
    address,
    decide: () => {
      const d = decideCaptured(session, address, port);
      host = d.host;
      return d.decision;
    },
  });
  if (!opened.ok) return refuse(opened.verdict);
  if (sock.destroyed) {
    opened.upstream.socket.destroy();
    return;
  }
  runTunnel(session, sock, opened.upstream, { mode: 'transparent-tcp', host, port, startedAt, allowReason: opened.allowReason }, Buffer.alloc(0));
}
