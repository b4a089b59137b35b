/**
 * Image references as the CLI takes them: `name:tag`, `name:tag@sha256:<hex>`, or a bare
 * `sha256:<hex>` digest. Pure: no I/O. The grammar matches the manifest's `runtime:` field
 * (OCI distribution name components; tags of up to 128 characters).
 */
import { parseImageRef as parseRef } from '../policy/image-ref.js';
import type { ImageRef } from '../policy/types.js';
import { ImageError } from './errors.js';

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

/** Parses `name:tag[@sha256:<hex>]` (the grammar of src/policy/image-ref.ts); throws `image.bad_ref`. */
export function parseImageRef(text: string): ImageRef {
  const r = parseRef(text.trim());
  if (typeof r === 'string') throw new ImageError('image.bad_ref', r);
  return r;
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
