/**
 * Registry credentials for `aegis image pull|push`: a file in Docker's config.json format
 *
 *   {"auths": {"registry.example.com:5000": {"auth": "<base64 of user:password>"}}}
 *
 * (or {"username", "password"} in place of "auth"), which must not be readable by group or others
 * (the same rule as AEGIS's key files). A missing file means no credentials.
 */
import { readKeyFile } from '../../host/key-file.js';
import { ImageError } from '../errors.js';
import type { Credentials } from './http.js';

/** Parses the credentials for `registry` out of the file's text (untrusted: any shape may come). */
export function credentialsFor(text: string, registry: string, where: string): Credentials | undefined {
  if (text.length > 1024 * 1024) throw new ImageError('image.registry_auth', `${where} is too large`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ImageError(
      'image.registry_auth',
      `${where} is not JSON (Docker's config.json format: {"auths": {"host:port": {"auth": "..."}}})`,
    );
  }
  const auths = (v as { auths?: unknown } | null)?.auths;
  if (typeof auths !== 'object' || auths === null) throw new ImageError('image.registry_auth', `${where} has no "auths" object`);
  const entry = (auths as Record<string, unknown>)[registry] ?? (auths as Record<string, unknown>)[`https://${registry}`];
  if (entry === undefined) return undefined;
  const e = entry as { auth?: unknown; username?: unknown; password?: unknown };
  if (typeof e.auth === 'string') {
    const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw new ImageError('image.registry_auth', `${where}: the "auth" of ${registry} is not base64 of user:password`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof e.username === 'string' && typeof e.password === 'string' && e.username !== '')
    return { username: e.username, password: e.password };
  throw new ImageError('image.registry_auth', `${where}: the entry of ${registry} has neither "auth" nor "username" and "password"`);
}

export async function readRegistryCredentials(file: string, registry: string): Promise<Credentials | undefined> {
  const r = await readKeyFile(file).catch((cause: unknown) => {
    throw new ImageError('image.registry_auth', `cannot read ${file}: ${(cause as Error).message}`, { cause });
  });
  if (r.kind === 'missing') return undefined;
  if (r.kind === 'too_open') throw new ImageError('image.registry_auth', `${file} must not be readable by group or others (chmod 600)`);
  return credentialsFor(r.text, registry, file);
}
