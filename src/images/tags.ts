/**
 * The tag index (`tags.json`): `name:tag` -> digest. Pure parse/serialize; the file is read
 * back from disk, so it is untrusted: anything malformed is an `image.corrupt` error.
 *
 *     { "version": 1, "tags": { "python:3.11": "sha256:<hex>", ... } }
 */
import { ImageError } from './errors.js';
import { type Digest, isDigest, parseImageRef } from './ref.js';

export type TagIndex = ReadonlyMap<string, Digest>;

/** Larger than any sane index; refuse before JSON.parse allocates on hostile input. */
export const MAX_TAG_INDEX_BYTES = 4 * 1024 * 1024;

export function parseTagIndex(text: string): Map<string, Digest> {
  if (text.length > MAX_TAG_INDEX_BYTES) throw new ImageError('image.corrupt', 'tag index is too large');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new ImageError('image.corrupt', `tag index is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ImageError('image.corrupt', 'tag index is not an object');
  const o = v as Record<string, unknown>;
  if (o['version'] !== 1) throw new ImageError('image.corrupt', 'tag index has an unknown version');
  const tags = o['tags'];
  if (typeof tags !== 'object' || tags === null || Array.isArray(tags))
    throw new ImageError('image.corrupt', 'tag index has no "tags" object');
  const out = new Map<string, Digest>();
  for (const [k, d] of Object.entries(tags as Record<string, unknown>)) {
    let key: string;
    try {
      const r = parseImageRef(k);
      key = `${r.name}:${r.tag}`;
      if (r.digest !== null || key !== k) throw new Error('not canonical');
    } catch {
      throw new ImageError('image.corrupt', `tag index key ${JSON.stringify(k)} is not name:tag`);
    }
    if (typeof d !== 'string' || !isDigest(d)) throw new ImageError('image.corrupt', `tag index entry ${k} is not a sha256 digest`);
    out.set(key, d);
  }
  return out;
}

export function serializeTagIndex(index: TagIndex): string {
  const tags: Record<string, string> = {};
  for (const k of [...index.keys()].sort()) tags[k] = index.get(k) as string;
  return JSON.stringify({ version: 1, tags }, null, 2) + '\n';
}

/** Tags that point at `digest`, sorted. */
export function tagsOf(index: TagIndex, digest: Digest): string[] {
  return [...index]
    .filter(([, d]) => d === digest)
    .map(([k]) => k)
    .sort();
}
