/**
 * Transparent capture of port 443 for programs that ignore proxy variables. nftables on the
 * host end of the sandbox's veth redirects every TCP connection to port 443 here; the
 * destination is decided by the ClientHello's SNI (allowlist, and the name must be one the
 * agent resolved through the gateway's DNS). The gateway then connects to its own resolution
 * of that name: the address the agent dialled is never used, so a forged SNI can only reach
 * the host it names.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { gatewayDeny, type Verdict } from '../audit/events.js';
import { GatewayError } from '../errors.js';
import type { Session } from '../session.js';
import { auditDenied, helloVerdict, openTunnel, readClientHello, runTunnel } from './tunnel.js';

const TLS_PORT = 443;

export function startTransparentTlsListener(session: Session, host: string, port = 0): Promise<Server> {
  const server = createServer((sock) => {
    session.track(sock);
    sock.on('error', () => sock.destroy());
    serve(session, sock).catch((err: unknown) => {
      process.stderr.write(`aegis gateway: transparent tls: ${String(err)}\n`);
      sock.destroy();
    });
  });
  session.guard(server, 'transparent-tls');
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(new GatewayError('gateway.listen_failed', `transparent TLS listener on ${host}:${port}: ${err.message}`, { cause: err })),
    );
    server.listen(port, host, () => resolve(server));
  });
}

async function serve(session: Session, sock: Socket): Promise<void> {
  const startedAt = session.now();
  let sni: string | null = null;
  const refuse = (v: Verdict): void => {
    auditDenied(session, 'transparent-tls', sni, TLS_PORT, v, startedAt, sni);
    sock.destroy();
  };
  if (!session.connections.take()) return refuse(gatewayDeny('gateway.rate_limited', 'new-connection rate limit exceeded'));
  let hello;
  try {
    hello = await readClientHello(sock, Buffer.alloc(0));
  } catch (err) {
    return refuse(gatewayDeny('gateway.malformed', (err as Error).message));
  }
  sni = hello.hello.sni;
  if (sni === null) return refuse(gatewayDeny('gateway.sni_missing', 'TLS ClientHello without SNI: no name to decide on'));
  const hv = helloVerdict(hello.hello, sni);
  if (hv) return refuse(hv);
  const name = sni;
  const opened = await openTunnel(session, {
    host: name,
    port: TLS_PORT,
    rateCharged: true,
    decide: () => session.matcher.decide(name, TLS_PORT),
    check: () =>
      session.wasResolved(name) ? null : gatewayDeny('gateway.not_resolved', `SNI ${name} was not resolved through the gateway's DNS`),
    interceptable: true,
  });
  if (!opened.ok) return refuse(opened.verdict);
  if (opened.intercept)
    return session.interceptor!.serve(sock, hello.bytes, {
      mode: 'transparent-tls',
      host: name,
      port: TLS_PORT,
      address: opened.intercept.address,
      startedAt,
      allowReason: opened.allowReason,
    });
  runTunnel(
    session,
    sock,
    opened.upstream,
    { mode: 'transparent-tls', host: name, port: TLS_PORT, startedAt, allowReason: opened.allowReason },
    hello.bytes,
    name,
  );
}
