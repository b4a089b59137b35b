/**
 * Authentication: who is asking. A request carries `Authorization: Bearer ak_<id>.<secret>`, or
 * comes through the unix socket from a local user whose uid the kernel vouches for (peer
 * credentials, peercred.ts). Every failure is an audit event `api.auth_failed` (source, key id
 * if any, reason) and counts against its source; a source with too many recent failures gets
 * 429 `throttled` (audited `api.throttled`, once per block) until its block ends, whatever it sends.
 *
 * ARCHITECTURE NOTE: the key's secret is never stored or logged; only its scrypt hash is kept.
 * A successful verification is remembered in memory (the SHA-256 of the presented key, per key
 * id) so that a client does not pay scrypt on every request; revocation and expiry are read from
 * the store on every request, so they take effect at once.
 *
 * LIMITATION: the throttle is in memory, per server process and per source address: several
 * workers each count their own failures, a restart forgets them, and behind a reverse proxy every
 * client shares the proxy's address (the proxy should throttle). Sources are bounded (10,000, the
 * oldest forgotten first), so a spray from many addresses cannot exhaust memory.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AuditSink } from '../audit/event.js';
import { ServerError } from './errors.js';
import { parseKey, verifySecret } from './keys.js';
import type { Role, Store } from './store/types.js';

export interface Principal {
  /** A key id, or `local:<uid>` for a socket peer without a key. */
  readonly id: string;
  readonly roles: readonly Role[];
  /**
   * When set, the principal sees and acts only on agents and executions it created (local
   * non-root users: issue 11, "operator+deployer for their own agents").
   */
  readonly owner?: string;
}

/** A unix-socket peer as the kernel reported it (SO_PEERCRED) plus its supplementary groups. */
export interface Peer {
  readonly pid: number;
  readonly uid: number;
  readonly gids: readonly number[];
}

export interface ThrottleOptions {
  /** Failures counted within this window... */
  readonly windowMs: number;
  /** ...up to this many; the next one blocks the source. */
  readonly maxFailures: number;
  readonly blockMs: number;
}

export const DEFAULT_THROTTLE: ThrottleOptions = { windowMs: 60_000, maxFailures: 10, blockMs: 60_000 };

/** Sources remembered at most (oldest forgotten first): memory stays bounded under a spray. */
const MAX_SOURCES = 10_000;

export type AuthFailure =
  'missing_key' | 'malformed_key' | 'unknown_key' | 'wrong_secret' | 'expired_key' | 'revoked_key' | 'local_user_refused';

export interface AuthRequest {
  /** `tcp:<address>` or `unix:uid:<n>` (or `unix:unknown`). */
  readonly source: string;
  readonly authorization: string | undefined;
  /** Set for socket connections whose peer was identified. */
  readonly peer: Peer | undefined;
  readonly route: string;
}

export interface AuthenticatorOptions {
  readonly store: Store;
  readonly audit: AuditSink;
  readonly clock: () => number;
  readonly throttle?: ThrottleOptions;
  /** The gid that owns the socket (group `aegis`, else 0): its members are local operators+deployers. */
  readonly socketGid: number;
  /** Counts failures for /metrics. */
  readonly onFailure?: (reason: AuthFailure | 'throttled') => void;
  /** Where audit write failures are reported (they never let a request through). */
  readonly log?: (msg: string) => void;
}

interface SourceState {
  failures: number[];
  blockedUntil: number;
  auditedBlock: boolean;
}

export class Authenticator {
  private readonly sources = new Map<string, SourceState>();
  private readonly verified = new Map<string, Buffer>();
  private readonly throttle: ThrottleOptions;

  constructor(private readonly o: AuthenticatorOptions) {
    this.throttle = o.throttle ?? DEFAULT_THROTTLE;
  }

  /** The principal, or a ServerError `server.unauthorized` / `server.throttled`. */
  async authenticate(req: AuthRequest): Promise<Principal> {
    const now = this.o.clock();
    const st = this.sources.get(req.source);
    if (st !== undefined && st.blockedUntil > now) {
      this.o.onFailure?.('throttled');
      if (!st.auditedBlock) {
        st.auditedBlock = true;
        await this.audit('api.throttled', 'throttled', req, undefined, { blockedUntil: new Date(st.blockedUntil).toISOString() });
      }
      throw new ServerError('server.throttled', 'too many authentication failures from this source: try again later');
    }
    const header = req.authorization;
    if (header === undefined || header === '') {
      if (req.peer !== undefined) return this.local(req, req.peer);
      return this.fail(req, 'missing_key', undefined);
    }
    const m = /^Bearer ([^\s]+)$/.exec(header);
    const parsed = m === null ? undefined : parseKey(m[1]!);
    if (parsed === undefined) return this.fail(req, 'malformed_key', undefined);
    const rec = await this.o.store.getKey(parsed.id);
    if (rec === null) return this.fail(req, 'unknown_key', parsed.id);
    const presented = createHash('sha256').update(m![1]!).digest();
    const known = this.verified.get(`${rec.id}\0${rec.hash}`);
    const ok = known !== undefined ? timingSafeEqual(known, presented) : await verifySecret(parsed.secret, rec.hash);
    if (!ok) return this.fail(req, 'wrong_secret', rec.id);
    if (known === undefined) {
      if (this.verified.size >= MAX_SOURCES) this.verified.clear();
      this.verified.set(`${rec.id}\0${rec.hash}`, presented);
    }
    if (rec.revokedAt !== null) return this.fail(req, 'revoked_key', rec.id);
    if (rec.expiresAt !== null && rec.expiresAt <= now) return this.fail(req, 'expired_key', rec.id);
    return { id: rec.id, roles: [rec.role] };
  }

  private async local(req: AuthRequest, peer: Peer): Promise<Principal> {
    if (peer.uid === 0) return { id: 'local:0', roles: ['admin'] };
    if (peer.gids.includes(this.o.socketGid))
      return { id: `local:${peer.uid}`, roles: ['operator', 'deployer'], owner: `local:${peer.uid}` };
    return this.fail(req, 'local_user_refused', undefined);
  }

  private async fail(req: AuthRequest, reason: AuthFailure, keyId: string | undefined): Promise<never> {
    const now = this.o.clock();
    let st = this.sources.get(req.source);
    if (st === undefined) {
      if (this.sources.size >= MAX_SOURCES) this.sources.delete(this.sources.keys().next().value!);
      st = { failures: [], blockedUntil: 0, auditedBlock: false };
      this.sources.set(req.source, st);
    }
    st.failures = st.failures.filter((t) => t > now - this.throttle.windowMs);
    st.failures.push(now);
    if (st.failures.length >= this.throttle.maxFailures) {
      st.blockedUntil = now + this.throttle.blockMs;
      st.auditedBlock = false;
      st.failures = [];
    }
    this.o.onFailure?.(reason);
    await this.audit('api.auth_failed', reason, req, keyId, {});
    throw new ServerError(
      'server.unauthorized',
      reason === 'missing_key'
        ? 'an API key is required (Authorization: Bearer ak_...)'
        : `authentication failed: ${reason.replace(/_/g, ' ')}`,
    );
  }

  private async audit(
    action: string,
    reason: string,
    req: AuthRequest,
    keyId: string | undefined,
    extra: Record<string, unknown>,
  ): Promise<void> {
    try {
      await this.o.audit.append({
        actor: {},
        action,
        decision: 'deny',
        reason,
        payload: { source: req.source, route: req.route, reason, ...(keyId !== undefined ? { keyId } : {}), ...extra },
      });
    } catch (err) {
      this.o.log?.(`audit append failed for ${action}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}
