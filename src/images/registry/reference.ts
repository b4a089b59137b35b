/**
 * Registry references for `aegis image pull|push` (pure): `host[:port]/repo[/path]:tag` or
 * `host[:port]/repo@sha256:<hex>` (OCI distribution spec names). The registry host is always
 * explicit: there is no default registry (nothing is fetched from a place the operator did not
 * name).
 */
import { ImageError } from '../errors.js';
import { type Digest, normalizeDigest } from '../ref.js';

export interface RemoteRef {
  /** `host` or `host:port`, as given. */
  readonly registry: string;
  /** Repository path, e.g. `team/agent`. */
  readonly repository: string;
  readonly tag: string | null;
  readonly digest: Digest | null;
  /** The reference as written. */
  readonly text: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const HOST = /^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9a-fA-F:]+\]|\d{1,3}(?:\.\d{1,3}){3})(?::\d{1,5})?$/;

export function parseRemoteRef(text: string): RemoteRef {
  const bad = (why: string) =>
    new ImageError('image.bad_ref', `${text}: ${why} (write host[:port]/repository:tag or host[:port]/repository@sha256:...)`);
  if (text.length > 512) throw bad('too long');
  const slash = text.indexOf('/');
  if (slash <= 0) throw bad('no registry host');
  const registry = text.slice(0, slash);
  if (!HOST.test(registry) || !/[.:]|^localhost/.test(registry)) throw bad(`"${registry}" is not a registry host`);
  let rest = text.slice(slash + 1);
  let digest: Digest | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = normalizeDigest(rest.slice(at + 1));
    if (digest === null) throw bad('bad digest');
    rest = rest.slice(0, at);
  }
  let tag: string | null = null;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`"${tag}" is not a tag`);
  }
  if (rest === '' || rest.length > 255 || !rest.split('/').every((c) => COMPONENT.test(c))) throw bad(`"${rest}" is not a repository name`);
  if (tag === null && digest === null) throw bad('no tag or digest');
  return { registry, repository: rest, tag, digest, text };
}

/** The manifest reference used in URLs: the digest when pinned, else the tag. */
export function manifestRef(r: RemoteRef): string {
  return r.digest ?? r.tag!;
}
