/**
 * Image references as the CLI takes them: `name:tag`, `name:tag@sha256:<hex>`, or a bare
 * `sha256:<hex>` digest. Pure: no I/O. The grammar matches the manifest's `runtime:` field
 * (OCI distribution name components; tags of up to 128 characters).
 */
import type { ImageRef } from '../policy/types.js';
import { ImageError } from './errors.js';

const NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** A digest as stored: `sha256:<64 lower-case hex>`. */
export type Digest = `sha256:${string}`;

export function isDigest(s: string): s is Digest {
  return s.startsWith('sha256:') && HEX64.test(s.slice(7));
}

/** Normalizes `<hex>` or `sha256:<hex>` to `sha256:<hex>`; null if it is neither. */
export function normalizeDigest(s: string): Digest | null {
  const d = s.startsWith('sha256:') ? s : `sha256:${s}`;
  return isDigest(d) ? d : null;
}

/** `name:tag` for a tag index key. */
export function tagKey(ref: Pick<ImageRef, 'name' | 'tag'>): string {
  return `${ref.name}:${ref.tag}`;
}

/** Parses `name:tag[@sha256:<hex>]`; a missing tag is an error (no implicit `latest`). */
export function parseImageRef(text: string): ImageRef {
  let rest = text.trim();
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = normalizeDigest(rest.slice(at + 1));
    if (!d || !rest.slice(at + 1).startsWith('sha256:')) {
      throw new ImageError('image.bad_ref', `"${rest.slice(at + 1)}" is not a sha256 digest (sha256:<64 lower-case hex>)`);
    }
    digest = d.slice(7);
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon < 0 || rest.includes('/', colon)) {
    throw new ImageError('image.bad_ref', `"${text}" has no tag: write name:tag, e.g. python:3.11`);
  }
  const name = rest.slice(0, colon);
  const tag = rest.slice(colon + 1);
  if (name.length > 255 || !NAME.test(name)) throw new ImageError('image.bad_ref', `"${name}" is not an image name (lower case letters, digits, . _ - /)`);
  if (!TAG.test(tag)) throw new ImageError('image.bad_ref', `"${tag}" is not an image tag`);
  return { name, tag, digest, ref: digest ? `${name}:${tag}@sha256:${digest}` : `${name}:${tag}` };
}

/** What `aegis image rm/verify/inspect` accept: a reference, or a digest alone. */
export type RefOrDigest = { kind: 'ref'; ref: ImageRef } | { kind: 'digest'; digest: Digest };

export function parseRefOrDigest(text: string): RefOrDigest {
  const t = text.trim();
  if (t.startsWith('sha256:')) {
    const d = normalizeDigest(t);
    if (!d) throw new ImageError('image.bad_ref', `"${t}" is not a sha256 digest (sha256:<64 lower-case hex>)`);
    return { kind: 'digest', digest: d };
  }
  return { kind: 'ref', ref: parseImageRef(t) };
}
