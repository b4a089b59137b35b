/**
 * The placeholder swap of the gateway half (issue 12), pure: given one HTTP request that the
 * gateway terminated (or a plain-HTTP one), find every placeholder of this execution and either
 * replace it with the secret's value (the host is bound, and the placeholder is where the
 * secret may go) or refuse the whole request.
 *
 * Where a value may go:
 * - a secret with a header (`--header authorization`): only in that header; in `Authorization`
 *   (and `Proxy-Authorization`-free requests) also inside Basic credentials, decoded and
 *   re-encoded;
 * - a secret without a header: in any request header (Basic credentials too) and in the query
 *   string.
 *
 * FAIL CLOSED: a placeholder (`aegis-ph-` + 32 hex digits, any case, raw or percent-encoded)
 * that is not one of this execution's, that goes to a host its secret is not bound to, that sits
 * where its secret may not go (another header, the path, the body for a bound host is only
 * left alone), or that travels over plain HTTP, refuses the request. The value is never part of
 * a refusal, a use record or a message.
 */
import { classifyHost } from '../policy/host.js';
import { PLACEHOLDER_PREFIX } from './core.js';

/** One secret of the execution, with its value (gateway memory only). */
export interface InjectableSecret {
  readonly secret: string;
  readonly version: number;
  /** The bound hosts (normalized `name` or `*.suffix`). */
  readonly hosts: readonly string[];
  /** Lower-case header name, or null: any header and the query string. */
  readonly header: string | null;
  readonly placeholder: string;
  readonly value: string;
}

/** Reasons a request carrying a placeholder is refused (audit `reason`, `X-Aegis-Reason`). */
export type CredentialReason =
  /** The placeholder's secret is not bound to this host. */
  | 'secrets.credential_host_mismatch'
  /** Bound host, but the placeholder is where the secret may not go (another header, the path, the query of a header-bound secret). */
  | 'secrets.credential_misplaced'
  /** Something shaped like a placeholder that is not one of this execution's. */
  | 'secrets.credential_unknown'
  /** A placeholder in a plain-HTTP request: a value is never sent in clear text. */
  | 'secrets.credential_cleartext'
  /** The run's version of the secret is no longer valid (expired, removed, or rotated out longer ago than the overlap). */
  | 'secrets.credential_retired';

export interface SecretUse {
  readonly secret: string;
  readonly version: number;
  /** Where it was put: a header name, `authorization:basic`, or `query`. */
  readonly where: string;
}

export type Injection =
  | {
      readonly ok: true;
      /** Raw header pairs (name as sent, value), with values swapped in. */
      readonly headers: ReadonlyArray<readonly [string, string]>;
      readonly path: string;
      readonly uses: readonly SecretUse[];
    }
  | {
      readonly ok: false;
      readonly reason: CredentialReason;
      /** The secret concerned (null for an unknown placeholder). */
      readonly secret: string | null;
      readonly version: number | null;
      readonly where: string;
      readonly detail: string;
    };

/** Placeholder shape, any case (a fixed pattern, never built from input). */
const SHAPE = /aegis-ph-[0-9a-f]{32}/gi;
/** Percent-encoded text that may hide a placeholder. */
const ANY_PERCENT = /%[0-9a-f]{2}/i;

/** Whether `host` (normalized) is one of `patterns` (`name` or `*.suffix`, one or more labels below). */
export function hostBound(patterns: readonly string[], host: string): boolean {
  const cls = classifyHost(host);
  if (cls.kind !== 'name') return false;
  const name = cls.name;
  return patterns.some((p) => (p.startsWith('*.') ? name.endsWith(p.slice(1)) && name.length > p.length - 1 : p === name));
}

function decodeLoosely(s: string): string {
  if (!ANY_PERCENT.test(s)) return s;
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    // Invalid escapes: decode what can be decoded, byte by byte.
    return s.replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  }
}

/** Placeholders (lower case) found in `text`, raw or percent-decoded. */
export function placeholdersIn(text: string): string[] {
  if (!text.toLowerCase().includes(PLACEHOLDER_PREFIX) && !ANY_PERCENT.test(text)) return [];
  const found = new Set<string>();
  for (const t of [text, decodeLoosely(text)]) for (const m of t.matchAll(SHAPE)) found.add(m[0].toLowerCase());
  return [...found];
}

type Refusal = Extract<Injection, { ok: false }>;

/**
 * Swap this execution's placeholders in one request to `host`, or refuse it. `cleartext`: the
 * request goes over plain HTTP (nothing is ever swapped then).
 */
export function injectRequest(
  secrets: readonly InjectableSecret[],
  host: string,
  rawHeaders: ReadonlyArray<readonly [string, string]>,
  path: string,
  cleartext: boolean,
): Injection {
  const byPlaceholder = new Map(secrets.map((s) => [s.placeholder, s]));
  const uses: SecretUse[] = [];
  const refuse = (reason: CredentialReason, s: InjectableSecret | null, where: string, detail: string): Refusal => ({
    ok: false,
    reason,
    secret: s?.secret ?? null,
    version: s?.version ?? null,
    where,
    detail,
  });
  /** The check every placeholder found passes before it may be swapped at `where`; null: swap. */
  const check = (ph: string, where: string, allowed: (s: InjectableSecret) => boolean): Refusal | InjectableSecret => {
    const s = byPlaceholder.get(ph);
    if (s === undefined)
      return refuse('secrets.credential_unknown', null, where, `a placeholder that is not one of this execution's, in ${where}`);
    if (!hostBound(s.hosts, host))
      return refuse(
        'secrets.credential_host_mismatch',
        s,
        where,
        `secret ${s.secret} is not bound to ${host} (bound: ${s.hosts.join(', ')})`,
      );
    if (cleartext)
      return refuse('secrets.credential_cleartext', s, where, `secret ${s.secret} would go to ${host} over plain HTTP; use https`);
    if (!allowed(s)) return refuse('secrets.credential_misplaced', s, where, `secret ${s.secret} may not be sent in ${where}`);
    return s;
  };

  const headers: Array<readonly [string, string]> = [];
  for (const [name, value] of rawHeaders) {
    const lower = name.toLowerCase();
    const found = placeholdersIn(value);
    // Basic credentials: the placeholder may be inside base64 (user:password).
    const basic = lower === 'authorization' || lower === 'proxy-authorization' ? /^basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(value) : null;
    const decoded = basic ? Buffer.from(basic[1]!, 'base64').toString('latin1') : null;
    const inBasic = decoded !== null ? placeholdersIn(decoded) : [];
    if (found.length === 0 && inBasic.length === 0) {
      headers.push([name, value]);
      continue;
    }
    if (lower === 'proxy-authorization') {
      const ph = found[0] ?? inBasic[0]!;
      const r = check(ph, lower, () => false);
      return 'ok' in r ? r : refuse('secrets.credential_misplaced', r, lower, `secret ${r.secret} may not be sent in ${lower}`);
    }
    const mayGo = (s: InjectableSecret): boolean => s.header === null || s.header === lower;
    let out = value;
    for (const ph of found) {
      const r = check(ph, `header ${lower}`, mayGo);
      if ('ok' in r) return r;
      if (!value.includes(ph))
        return refuse('secrets.credential_misplaced', r, `header ${lower}`, 'a placeholder must be sent as is (not encoded)');
      out = out.split(ph).join(r.value);
      uses.push({ secret: r.secret, version: r.version, where: lower });
    }
    if (decoded !== null && inBasic.length > 0) {
      let creds = decoded;
      for (const ph of inBasic) {
        const r = check(ph, 'authorization:basic', mayGo);
        if ('ok' in r) return r;
        if (!creds.includes(ph))
          return refuse('secrets.credential_misplaced', r, 'authorization:basic', 'a placeholder must be sent as is');
        creds = creds.split(ph).join(r.value);
        uses.push({ secret: r.secret, version: r.version, where: 'authorization:basic' });
      }
      out = `Basic ${Buffer.from(creds, 'latin1').toString('base64')}`;
    }
    headers.push([name, out]);
  }

  const q = path.indexOf('?');
  const pathPart = q < 0 ? path : path.slice(0, q);
  let query = q < 0 ? '' : path.slice(q + 1);
  const inPath = placeholdersIn(pathPart);
  if (inPath.length > 0) {
    const r = check(inPath[0]!, 'the path', () => false);
    return 'ok' in r ? r : refuse('secrets.credential_misplaced', r, 'the path', `secret ${r.secret} may not be sent in the URL path`);
  }
  const inQuery = placeholdersIn(query);
  for (const ph of inQuery) {
    const r = check(ph, 'the query', (s) => s.header === null);
    if ('ok' in r) return r;
    if (!query.includes(ph))
      return refuse('secrets.credential_misplaced', r, 'the query', 'a placeholder must be sent as is (not encoded)');
    query = query.split(ph).join(encodeURIComponent(r.value));
    uses.push({ secret: r.secret, version: r.version, where: 'query' });
  }
  return { ok: true, headers, path: q < 0 ? pathPart : `${pathPart}?${query}`, uses };
}

/**
 * A check of body bytes (the first ones the gateway reads): a placeholder there is never
 * swapped; one going to a host its secret is not bound to, or an unknown one, refuses the
 * request. Returns null when the body may go as it is.
 */
export function checkBody(secrets: readonly InjectableSecret[], host: string, body: string, cleartext: boolean): Refusal | null {
  for (const ph of placeholdersIn(body)) {
    const s = secrets.find((x) => x.placeholder === ph);
    const base = { ok: false as const, where: 'the body', secret: s?.secret ?? null, version: s?.version ?? null };
    if (s === undefined)
      return { ...base, reason: 'secrets.credential_unknown', detail: "a placeholder that is not one of this execution's, in the body" };
    if (!hostBound(s.hosts, host))
      return {
        ...base,
        reason: 'secrets.credential_host_mismatch',
        detail: `secret ${s.secret} is not bound to ${host} (bound: ${s.hosts.join(', ')})`,
      };
    if (cleartext)
      return { ...base, reason: 'secrets.credential_cleartext', detail: `secret ${s.secret} would go to ${host} over plain HTTP` };
  }
  return null;
}
