/**
 * API keys: `ak_<16 hex>.<secret>`. The id (before the dot) is public and names the key's
 * record; the secret (32 random bytes, base64url) is shown once and stored only as a scrypt
 * hash (RFC 7914; N=2^14, r=8, p=1: the RFC's interactive-login cost, ~50 ms here), compared in
 * constant time.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import type { ApiKeyRecord, Role } from './store/types.js';

const N = 1 << 14;
const R = 8;
const P = 1;
const KEY_LEN = 32;

/** `ak_` + 16 hex digits, then `.`, then 43 base64url characters. */
const KEY_RE = /^(ak_[0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

function scryptAsync(secret: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, KEY_LEN, { N: n, r, p, maxmem: 256 * n * r + (1 << 20) }, (err, out) => (err ? reject(err) : resolve(out)));
  });
}

/** `scrypt$N$r$p$<salt b64>$<hash b64>` of a secret. */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const h = await scryptAsync(secret, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${h.toString('base64')}`;
}

/** Whether `secret` matches the stored hash (false on any malformed stored value: fail secure). */
export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [n, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  // Bounds on the stored parameters: a tampered row must not make verification hang or allocate gigabytes.
  if (!Number.isInteger(n) || n < 2 || n > 1 << 20 || (n & (n - 1)) !== 0 || !Number.isInteger(r) || r < 1 || r > 32) return false;
  if (!Number.isInteger(p) || p < 1 || p > 16) return false;
  const salt = Buffer.from(parts[4]!, 'base64');
  const expected = Buffer.from(parts[5]!, 'base64');
  if (salt.length < 8 || expected.length !== KEY_LEN) return false;
  const got = await scryptAsync(secret, salt, n, r, p);
  return timingSafeEqual(got, expected);
}

/** Splits a presented key into id and secret, or undefined when it is not shaped like one. */
export function parseKey(text: string): { id: string; secret: string } | undefined {
  const m = KEY_RE.exec(text);
  return m === null ? undefined : { id: m[1]!, secret: m[2]! };
}

/** A new key: the record to store and the key to show once. */
export async function newKey(
  role: Role,
  opts: { now: number; expiresAt: number | null; createdBy: string },
): Promise<{ record: ApiKeyRecord; key: string }> {
  const id = `ak_${randomBytes(8).toString('hex')}`;
  const secret = randomBytes(32).toString('base64url');
  const record: ApiKeyRecord = {
    id,
    role,
    hash: await hashSecret(secret),
    createdAt: opts.now,
    expiresAt: opts.expiresAt,
    revokedAt: null,
    createdBy: opts.createdBy,
  };
  return { record, key: `${id}.${secret}` };
}

/** `30d` / `12h` / `15m` in milliseconds (the Lifetime schema has checked the shape). */
export function lifetimeMs(text: string): number {
  const n = Number(text.slice(0, -1));
  const unit = text.slice(-1);
  return n * (unit === 'd' ? 86_400_000 : unit === 'h' ? 3_600_000 : 60_000);
}
