/**
 * Image references: `name:tag`, optionally pinned with `@sha256:<64 hex>`, in the OCI
 * distribution grammar (lower-case path components separated by `/`, with `.`, `_`, `__` or
 * `-` separators inside a component; tags of up to 128 characters). A tag is required: there
 * is no implicit `latest`. One grammar for the manifest's `runtime:` and the image commands.
 * Pure.
 */
import type { ImageRef } from './types.js';

const IMAGE_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const IMAGE_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Parses a reference, or returns why it is not one. */
export function parseImageRef(text: string): ImageRef | string {
  let rest = text;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!/^sha256:[0-9a-f]{64}$/.test(d)) return `"${d}" is not a sha256 digest (sha256:<64 lower-case hex>)`;
    digest = d.slice('sha256:'.length);
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon < 0 || rest.indexOf('/', colon) >= 0) return `"${text}" has no tag: write name:tag, e.g. python:3.11`;
  const name = rest.slice(0, colon);
  const tag = rest.slice(colon + 1);
  if (!IMAGE_NAME.test(name) || name.length > 255) return `"${name}" is not an image name (lower case letters, digits, . _ - /)`;
  if (!IMAGE_TAG.test(tag)) return `"${tag}" is not an image tag`;
  return { name, tag, digest, ref: digest ? `${name}:${tag}@sha256:${digest}` : `${name}:${tag}` };
}
