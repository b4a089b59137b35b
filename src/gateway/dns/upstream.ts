/**
 * Upstream resolution: the gateway asks the configured resolver itself (AEGIS_UPSTREAM_DNS,
 * default: the host's first `nameserver`), follows CNAME chains and caches answers for their TTL.
 *
 * The upstream is trusted more than the agent but its packets are still parsed defensively:
 * the reply must carry our id and our question, and every failure is GatewayError('gateway.dns_upstream').
 *
 * LIMITATION: UDP only (no TCP fallback on truncation); A/AAAA answers for API hosts fit.
 */
import { createSocket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import * as packet from 'dns-packet';
import { GatewayError } from '../errors.js';

export type AddressType = 'A' | 'AAAA';

export interface Resolution {
  /** Upstream rcode (NOERROR, NXDOMAIN, SERVFAIL, ...). */
  readonly rcode: string;
  /** Final addresses at the end of the CNAME chain. */
  readonly addresses: readonly string[];
  /** Names traversed, starting with the question name (CNAME targets follow). */
  readonly chain: readonly string[];
  /** Smallest TTL along the chain, seconds. */
  readonly ttl: number;
}

export interface Resolver {
  resolve(name: string, type: AddressType): Promise<Resolution>;
}

export interface UpstreamOptions {
  readonly host: string;
  readonly port: number;
  readonly timeoutMs?: number;
  readonly attempts?: number;
  /** Cap on cached TTLs, seconds (also the negative-cache time for NXDOMAIN). */
  readonly maxTtl?: number;
  readonly clock?: () => number;
}

const MAX_CHAIN = 8;

/** Follow the CNAME chain from `name` through `answers` (pure; exported for tests). */
export function followChain(
  name: string,
  type: AddressType,
  answers: readonly packet.Answer[],
): { chain: string[]; addresses: string[]; ttl: number } {
  const chain = [name.toLowerCase()];
  let ttl = Number.MAX_SAFE_INTEGER;
  let current = chain[0]!;
  for (let hop = 0; hop <= MAX_CHAIN; hop++) {
    const cname = answers.find((a) => a.type === 'CNAME' && a.name.toLowerCase() === current);
    if (!cname) break;
    if (hop === MAX_CHAIN) throw new GatewayError('gateway.dns_upstream', `CNAME chain from ${name} is longer than ${MAX_CHAIN}`);
    const rec = cname as { data?: unknown; ttl?: number };
    current = String(rec.data).toLowerCase();
    if (chain.includes(current)) throw new GatewayError('gateway.dns_upstream', `CNAME loop at ${current}`);
    chain.push(current);
    ttl = Math.min(ttl, rec.ttl ?? 0);
  }
  const addresses: string[] = [];
  for (const a of answers) {
    if (a.type === type && a.name.toLowerCase() === current) {
      const rec = a as { data?: unknown; ttl?: number };
      addresses.push(String(rec.data));
      ttl = Math.min(ttl, rec.ttl ?? 0);
    }
  }
  return { chain, addresses, ttl: ttl === Number.MAX_SAFE_INTEGER ? 0 : ttl };
}

export class UpstreamResolver implements Resolver {
  private readonly cache = new Map<string, { until: number; value: Promise<Resolution> }>();
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly maxTtl: number;
  private readonly clock: () => number;

  constructor(private readonly o: UpstreamOptions) {
    this.timeoutMs = o.timeoutMs ?? 2000;
    this.attempts = o.attempts ?? 2;
    this.maxTtl = o.maxTtl ?? 300;
    this.clock = o.clock ?? (() => performance.now());
  }

  resolve(name: string, type: AddressType): Promise<Resolution> {
    const key = `${type} ${name.toLowerCase()}`;
    const hit = this.cache.get(key);
    if (hit && hit.until > this.clock()) return hit.value;
    const value = this.query(name, type);
    // Cache the in-flight promise (coalesces concurrent lookups); fix the expiry once it settles.
    this.cache.set(key, { until: Number.MAX_SAFE_INTEGER, value });
    value.then(
      (r) => this.cache.set(key, { until: this.clock() + Math.min(r.ttl, this.maxTtl) * 1000, value }),
      () => this.cache.delete(key),
    );
    return value;
  }

  private async query(name: string, type: AddressType): Promise<Resolution> {
    let lastErr: unknown;
    for (let i = 0; i < this.attempts; i++) {
      try {
        return await this.once(name, type);
      } catch (err) {
        lastErr = err;
      }
    }
    throw lastErr instanceof GatewayError
      ? lastErr
      : new GatewayError('gateway.dns_upstream', `upstream resolver failed for ${name}`, { cause: lastErr });
  }

  private once(name: string, type: AddressType): Promise<Resolution> {
    const id = randomInt(0, 65536);
    const query = packet.encode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
    const family = this.o.host.includes(':') ? 'udp6' : 'udp4';
    return new Promise<Resolution>((resolve, reject) => {
      const sock = createSocket(family);
      const timer = setTimeout(
        () => done(new GatewayError('gateway.dns_upstream', `no answer from ${this.o.host}:${this.o.port} in ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      const done = (err: Error | null, r?: Resolution): void => {
        clearTimeout(timer);
        sock.close();
        if (err) reject(err);
        else resolve(r!);
      };
      sock.on('error', (err) => done(new GatewayError('gateway.dns_upstream', `upstream socket error: ${err.message}`, { cause: err })));
      sock.on('message', (msg, rinfo) => {
        if (rinfo.address !== this.o.host || rinfo.port !== this.o.port) return; // not our resolver: ignore
        let res: packet.Packet;
        try {
          res = packet.decode(msg);
        } catch (err) {
          done(new GatewayError('gateway.dns_upstream', 'unparseable upstream answer', { cause: err }));
          return;
        }
        const q = res.questions?.[0];
        if (res.id !== id || !q || q.name.toLowerCase() !== name.toLowerCase() || q.type !== type) return; // spoof or stale: keep waiting
        const rcode = (res as { rcode?: string }).rcode ?? 'NOERROR';
        if (rcode !== 'NOERROR') {
          done(null, { rcode, addresses: [], chain: [name.toLowerCase()], ttl: 30 });
          return;
        }
        try {
          const f = followChain(name, type, res.answers ?? []);
          done(null, { rcode, ...f });
        } catch (err) {
          done(err as Error);
        }
      });
      sock.send(query, this.o.port, this.o.host);
    });
  }
}
