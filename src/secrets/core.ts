/**
 * The pure rules of the secret store: names, host bindings, header names, values, durations,
 * versions, expiry and the rotation overlap. No I/O, no clock: `now` is always an argument
 * (milliseconds since the epoch), and so is any randomness.
 *
 * ARCHITECTURE NOTE: a secret is bound to host patterns written in the manifest's allowlist
 * grammar and normalized by the same parser (src/policy/host.ts `parseAllowEntry`: IDNA, case,
 * public-suffix checks), so `API.OpenAI.com.` and `api.openai.com` are one host. Only names and
 * `*.suffix` patterns are accepted: a credential goes to a named service, and an address or a
 * port would not say which one. A run may use a secret only when at least one of its hosts is
 * permitted by the run's own network.allow (`boundHosts`); the gateway half (not built yet, see
 * docs/secrets.md) is where the value would be sent, and only to those hosts.
 */
import { parseAllowEntry } from '../policy/host.js';
import { SECRET_REF } from '../policy/env.js';
import { compileEgress } from '../policy/net.js';
import type { NetworkPolicy } from '../policy/types.js';
import { SecretsError } from './errors.js';

/** Inside the sandbox a secret reference becomes this prefix and 32 hex digits (128 random bits). */
export const PLACEHOLDER_PREFIX = 'aegis-ph-';
export const PLACEHOLDER_RANDOM_BYTES = 16;
/** Longest value accepted (bytes), as for any environment value (src/policy/env.ts). */
export const MAX_VALUE_BYTES = 65_536;
const MAX_HOSTS = 32;
/** Longest duration accepted: about ten years. */
const MAX_DURATION_MS = 3650 * 86_400_000;

/** Checks a secret name (untrusted: a CLI argument) against the manifest's `secret:<name>` grammar. */
export function checkName(name: string): string {
  if (!SECRET_REF.test(`secret:${name}`))
    throw new SecretsError('secrets.name_invalid', `"${name.slice(0, 64)}" is not a secret name ([a-z0-9][a-z0-9._-]{0,127})`);
  return name;
}

/**
 * Parses `--hosts h1,h2` (untrusted) into normalized patterns: `api.openai.com` or
 * `*.googleapis.com`. Sorted, without duplicates.
 */
export function parseHosts(text: string): string[] {
  const entries = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (entries.length === 0) throw new SecretsError('secrets.hosts_invalid', 'a secret needs at least one host (--hosts h1,h2)');
  if (entries.length > MAX_HOSTS) throw new SecretsError('secrets.hosts_invalid', `at most ${MAX_HOSTS} hosts per secret`);
  const out = new Set<string>();
  for (const entry of entries) {
    const r = parseAllowEntry(entry);
    if (!r.ok) throw new SecretsError('secrets.hosts_invalid', `--hosts ${JSON.stringify(entry.slice(0, 64))}: ${r.message}`);
    const rule = r.rule;
    if (rule.kind === 'cidr')
      throw new SecretsError('secrets.hosts_invalid', `--hosts ${entry}: a secret is bound to host names, not addresses`);
    if (rule.ports.kind !== 'default')
      throw new SecretsError('secrets.hosts_invalid', `--hosts ${entry}: a secret is bound to a host, not a port (write the name only)`);
    out.add(rule.kind === 'exact' ? rule.host : `*.${rule.suffix}`);
  }
  return [...out].sort();
}

/** Fields AEGIS would never set from a secret: framing and routing are the gateway's. */
const FORBIDDEN_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer']);
/** RFC 9110 section 5.6.2 token. */
const TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/;

/** Checks `--header` (untrusted): an RFC 9110 field name, lower-cased, not a framing field. */
export function checkHeader(name: string): string {
  if (!TOKEN.test(name) || FORBIDDEN_HEADERS.has(name.toLowerCase()))
    throw new SecretsError('secrets.header_invalid', `"${name.slice(0, 64)}" is not a header a secret may go in`);
  return name.toLowerCase();
}

/**
 * Checks a value (untrusted bytes from stdin or a file). One trailing newline (`echo v |`) is
 * removed; then it must be non-empty, at most MAX_VALUE_BYTES, and free of NUL, CR and LF (a
 * value that goes into an HTTP header must not be able to start another one). Messages never
 * quote the value.
 */
export function checkValue(bytes: Uint8Array): Uint8Array {
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0a) end--;
  if (end > 0 && bytes[end - 1] === 0x0d) end--;
  const v = bytes.subarray(0, end);
  if (v.length === 0) throw new SecretsError('secrets.value_invalid', 'the value is empty');
  if (v.length > MAX_VALUE_BYTES) throw new SecretsError('secrets.value_invalid', `the value is longer than ${MAX_VALUE_BYTES} bytes`);
  if (v.includes(0x00) || v.includes(0x0a) || v.includes(0x0d))
    throw new SecretsError('secrets.value_invalid', 'the value has a NUL, CR or LF byte (one trailing newline is allowed)');
  return v;
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a duration such as `30d`, `12h`, `15m`, `90s` (or `0` when `allowZero`) into milliseconds. */
export function parseDuration(text: string, what: string, allowZero = false): number {
  if (allowZero && text === '0') return 0;
  const m = /^([0-9]{1,7})([smhd])$/.exec(text);
  const ms = m === null ? Number.NaN : Number(m[1]) * UNIT_MS[m[2]!]!;
  if (!Number.isFinite(ms) || ms <= 0 || ms > MAX_DURATION_MS)
    throw new SecretsError('secrets.duration_invalid', `${what} "${text.slice(0, 32)}" is not a duration such as 30d, 12h, 15m or 90s`);
  return ms;
}

/** What the store keeps about one version (everything but the encrypted value). */
export interface VersionMeta {
  readonly version: number;
  readonly createdAt: number;
  /** When this version stops being usable; null: never. */
  readonly expiresAt: number | null;
  /** When `rotate` replaced it; null: the current version. */
  readonly retiredAt: number | null;
}

export interface SecretMeta {
  readonly name: string;
  /** Normalized host patterns (parseHosts). */
  readonly hosts: readonly string[];
  /** Lower-case header name the value belongs in; null: not said. */
  readonly header: string | null;
  readonly createdAt: number;
  /** Oldest first; exactly one has `retiredAt === null` (the current one). */
  readonly versions: readonly VersionMeta[];
}

export function currentVersion(s: SecretMeta): VersionMeta {
  const v = s.versions.find((x) => x.retiredAt === null);
  if (v === undefined) throw new SecretsError('secrets.store_corrupt', `secret ${s.name} has no current version`, { secret: s.name });
  return v;
}

export function isExpired(v: VersionMeta, now: number): boolean {
  return v.expiresAt !== null && now >= v.expiresAt;
}

/**
 * Whether `version` of `s` may still be used by an execution that started at `runStartedAt`:
 * the current version while it has not expired; a rotated-out version only for executions that
 * were already running when it was rotated out, and only until `retiredAt + overlapMs`.
 */
export function validForRun(s: SecretMeta, version: number, runStartedAt: number, now: number, overlapMs: number): boolean {
  const v = s.versions.find((x) => x.version === version);
  if (v === undefined || isExpired(v, now)) return false;
  if (v.retiredAt === null) return true;
  return runStartedAt < v.retiredAt && now < v.retiredAt + overlapMs;
}

/** Versions a write may drop: rotated out longer ago than the overlap, or expired and not current. */
export function prunable(v: VersionMeta, now: number, overlapMs: number): boolean {
  return v.retiredAt !== null && (now >= v.retiredAt + overlapMs || isExpired(v, now));
}

/**
 * The secret's host patterns that overlap the manifest's network.allow: an exact host the
 * allowlist permits (the policy's own matcher decides), or a `*.suffix` pattern that shares
 * names with an allow entry (an entry inside the suffix, or a wildcard containing it).
 * Address (CIDR) entries never bind a secret. `[]`: the secret cannot be used by this run.
 */
export function boundHosts(hosts: readonly string[], network: NetworkPolicy): string[] {
  const matcher = compileEgress(network);
  const within = (name: string, suffix: string): boolean => name === suffix || name.endsWith(`.${suffix}`);
  return hosts.filter((h) => {
    if (!h.startsWith('*.')) return matcher.decideName(h).allow;
    const s = h.slice(2);
    return network.rules.some((r) =>
      r.kind === 'exact' ? r.host.endsWith(`.${s}`) : r.kind === 'wildcard' ? within(r.suffix, s) || within(s, r.suffix) : false,
    );
  });
}

/** The placeholder for 16 random bytes. */
export function placeholderFrom(random: Uint8Array): string {
  if (random.length !== PLACEHOLDER_RANDOM_BYTES) throw new RangeError('a placeholder needs 16 random bytes');
  return PLACEHOLDER_PREFIX + Buffer.from(random).toString('hex');
}
