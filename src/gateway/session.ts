/**
 * Per-sandbox gateway state shared by the DNS server and the proxies: the injected policy
 * matcher, the audit sink, rate limit, byte quota, and the names the agent resolved.
 */
import type { AuditActor, AuditEventInput, AuditSink } from '../audit/event.js';
import type { EgressMatcher } from '../policy/types.js';
import { ByteQuota, TokenBucket, type Clock } from './ratelimit/token-bucket.js';
import type { Resolver } from './dns/upstream.js';
import type { Server } from 'node:net';
import { connectEvent, gatewayDeny, type ConnectMode } from './audit/events.js';
import type { Interceptor } from './intercept/terminate.js';
import type { InjectableSecret } from '../secrets/inject.js';

export interface SessionOptions {
  readonly matcher: EgressMatcher;
  readonly audit: AuditSink;
  readonly actor: AuditActor;
  readonly resolver: Resolver;
  readonly rateLimit: { readonly perSecond: number; readonly burst: number };
  readonly byteQuota: number | null;
  readonly clock?: Clock;
}

/**
 * Concurrent connections per listener and sandbox. Beyond it the kernel-accepted connection is
 * closed at once (Node's `maxConnections`) and audited: an agent holding connections open
 * cannot exhaust the gateway's file descriptors, which other sandboxes share.
 */
export const MAX_CONNECTIONS_PER_LISTENER = 128;

/** How long a name the agent resolved stays "resolved" for transparent capture (ms). */
const RESOLVED_TTL_MS = 10 * 60_000;
/** Addresses remembered from the gateway's own DNS answers (oldest forgotten first). */
export const ANSWERED_ADDRESSES_MAX = 4096;
/** DNS questions get their own, wider bucket: clients ask A and AAAA for every name. */
const DNS_RATE_FACTOR = 5;

export class Session {
  readonly matcher: EgressMatcher;
  readonly actor: AuditActor;
  readonly resolver: Resolver;
  readonly connections: TokenBucket;
  readonly dnsQueries: TokenBucket;
  readonly quota: ByteQuota;
  private readonly audit: AuditSink;
  private readonly clock: Clock;
  private readonly resolved = new Map<string, number>();
  /** address -> (name -> expiry): what the gateway's DNS answered this sandbox, for generic TCP capture. */
  private readonly answered = new Map<string, Map<string, number>>();
  /** TLS termination for bound secrets' hosts and hosts with HTTP rules; null when the execution has neither. */
  interceptor: Interceptor | null = null;
  /** This execution's secrets (values in memory only), for the plain-HTTP placeholder check. */
  secrets: readonly InjectableSecret[] = [];
  /** Open sockets, destroyed when the quota runs out or the gateway closes. */
  readonly sockets = new Set<{ destroy(): void }>();

  constructor(o: SessionOptions) {
    this.matcher = o.matcher;
    this.audit = o.audit;
    this.actor = o.actor;
    this.resolver = o.resolver;
    this.clock = o.clock ?? (() => performance.now());
    this.connections = new TokenBucket(o.rateLimit.perSecond, o.rateLimit.burst, this.clock);
    this.dnsQueries = new TokenBucket(o.rateLimit.perSecond * DNS_RATE_FACTOR, o.rateLimit.burst * DNS_RATE_FACTOR, this.clock);
    this.quota = new ByteQuota(o.byteQuota);
  }

  now(): number {
    return this.clock();
  }

  /** Write one audit event; a failing sink is reported on stderr and never kills a connection handler. */
  emit(event: AuditEventInput): void {
    try {
      const r = this.audit.append(event);
      if (r instanceof Promise) r.catch((err: unknown) => process.stderr.write(`aegis gateway: audit sink failed: ${String(err)}\n`));
    } catch (err) {
      process.stderr.write(`aegis gateway: audit sink failed: ${String(err)}\n`);
    }
  }

  /** Remember that the agent resolved `name` (normalized: lower case, no trailing dot). */
  noteResolved(name: string): void {
    this.resolved.set(normalizeName(name), this.clock() + RESOLVED_TTL_MS);
  }

  /** Remember that the gateway answered `name` with `addresses` (normalized name). */
  noteAnswer(name: string, addresses: readonly string[]): void {
    const n = normalizeName(name);
    const until = this.clock() + RESOLVED_TTL_MS;
    for (const a of addresses) {
      let names = this.answered.get(a);
      if (!names) {
        if (this.answered.size >= ANSWERED_ADDRESSES_MAX) this.answered.delete(this.answered.keys().next().value!);
        names = new Map();
        this.answered.set(a, names);
      }
      names.set(n, until);
    }
  }

  /** Names the gateway's DNS answered with `address` in this sandbox (not expired), most recent first. */
  namesFor(address: string): string[] {
    const names = this.answered.get(address);
    if (!names) return [];
    const now = this.clock();
    return [...names]
      .filter(([, until]) => until >= now)
      .sort((a, b) => b[1] - a[1])
      .map(([n]) => n);
  }

  wasResolved(name: string): boolean {
    const until = this.resolved.get(normalizeName(name));
    return until !== undefined && until >= this.clock();
  }

  /** Count bytes against the quota; on exhaustion every open connection of the sandbox is cut. */
  charge(n: number): boolean {
    if (this.quota.charge(n)) return true;
    for (const s of this.sockets) s.destroy();
    return false;
  }

  /** Cap `server`'s concurrent connections and audit every connection refused by the cap. */
  guard(server: Server, mode: ConnectMode): Server {
    server.maxConnections = MAX_CONNECTIONS_PER_LISTENER;
    server.on('drop', () => {
      this.emit(
        connectEvent(
          this.actor,
          gatewayDeny('gateway.too_many_connections', `more than ${MAX_CONNECTIONS_PER_LISTENER} concurrent connections`),
          {
            mode,
            host: null,
            port: null,
            bytesSent: 0,
            bytesReceived: 0,
            durationMs: 0,
          },
        ),
      );
    });
    return server;
  }

  track<T extends { destroy(): void; once(ev: 'close', fn: () => void): unknown }>(s: T): T {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
    return s;
  }
}

export function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}
