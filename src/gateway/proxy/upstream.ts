/**
 * Opening the gateway's own connection to an allowed destination. The agent never chooses
 * the address: names are resolved here, through the configured upstream resolver, and every
 * address is checked against the DNS-rebinding guard before the gateway connects.
 */
import { connect, isIP, type Socket } from 'node:net';
import { gatewayDeny, verdictOf, type Verdict } from '../audit/events.js';
import type { Session } from '../session.js';

const CONNECT_TIMEOUT_MS = 10_000;

export type Target = { readonly ok: true; readonly address: string } | { readonly ok: false; readonly verdict: Verdict };

/** The address to connect to for an already-allowed `host`, or the reason there is none. */
export async function resolveTarget(session: Session, host: string): Promise<Target> {
  if (isIP(host)) {
    // Only reachable when a CIDR rule allowed this literal; the guard still applies.
    const d = session.matcher.decideResolvedAddress(host);
    return d.allow ? { ok: true, address: host } : { ok: false, verdict: verdictOf(d) };
  }
  let addresses: readonly string[];
  try {
    const res = await session.resolver.resolve(host, 'A');
    addresses = res.addresses;
  } catch (err) {
    return { ok: false, verdict: gatewayDeny('gateway.upstream_failed', err instanceof Error ? err.message : String(err)) };
  }
  if (addresses.length === 0) return { ok: false, verdict: gatewayDeny('gateway.upstream_failed', `${host} has no IPv4 address`) };
  for (const a of addresses) {
    const d = session.matcher.decideResolvedAddress(a);
    if (!d.allow) return { ok: false, verdict: verdictOf(d) };
  }
  return { ok: true, address: addresses[0]! };
}

/** Connect to `address:port`; rejects on error or timeout. */
export function connectTo(address: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: address, port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${address}:${port} timed out`));
    }, CONNECT_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(timer);
      s.off('error', onError);
      resolve(s);
    });
    const onError = (err: Error): void => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    };
    s.once('error', onError);
  });
}
