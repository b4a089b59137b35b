/**
 * `aegis image pull <host>/<repo>:<tag>|@sha256:...`: fetches an image over the OCI distribution
 * API into an OCI image layout in the store's staging area, then imports it with the same code
 * as `aegis image import` (every layer re-checked and applied with the same refusals). Signatures
 * pushed with the image (cosign-style, at the tag `sha256-<manifest hex>.sig`) are stored beside
 * it; they are checked later, against the keys a verifier trusts, never here.
 *
 * ARCHITECTURE NOTE (what is verified):
 * - the manifest's SHA-256 equals the pinned digest (and the registry's Docker-Content-Digest
 *   when it sends one); a multi-architecture index is followed to linux/<this host's arch>, and
 *   that manifest must hash to the index's digest;
 * - every blob is hashed while it is written and refused when the digest differs (the partial
 *   file is removed: a registry that serves wrong bytes leaves nothing behind);
 * - layer blobs are cached under $AEGIS_IMAGES/cache/blobs by digest; an interrupted download
 *   resumes with a Range request from `<hex>.partial`, and the whole file is hashed again before
 *   it is used, so resuming can never produce a corrupt store.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, linkSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ImageRef } from '../../policy/types.js';
import { ImageError } from '../errors.js';
import { descriptor, IMPORT_LIMITS, importImage, type ImportResult, NODE_ARCH, parseJson, type Descriptor } from '../import.js';
import { type Digest, isDigest, parseImageRef } from '../ref.js';
import { removeStaging } from '../staging.js';
import { hashFile } from '../walk.js';
import { makeStaging, paths, writeSignature } from '../store.js';
import { MAX_RECORD_BYTES, parsePayload, parseSignatureRecord, type SignatureRecord } from '../signature.js';
import { type Credentials, readBounded, RegistrySession } from './http.js';
import { manifestRef, type RemoteRef } from './reference.js';

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');
const MAX_MANIFEST = 4 * 1024 * 1024;
const MAX_CONFIG = 4 * 1024 * 1024;
export const COSIGN_PAYLOAD_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const AEGIS_KEY_ID_ANNOTATION = 'dev.aegis.image.key-id';

/** SHA-256 of a file of the blob cache (walk.ts: read without following a link). */
const digestOf = (p: string): Digest => hashFile(p).sha256 as Digest;
const sha256 = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface PullOptions {
  readonly imagesDir: string;
  readonly ref: RemoteRef;
  /** Local name:tag; default `<repository>:<tag>` (none for a digest-only reference). */
  readonly tag?: ImageRef | null;
  readonly ca?: string;
  readonly credentials?: Credentials;
  readonly log: (line: string) => void;
}

export interface PullResult extends ImportResult {
  /** Digest of the registry manifest that was imported. */
  readonly manifestDigest: Digest;
  /** Signatures stored with the image. */
  readonly signatures: number;
}

/** Fetches a manifest by tag or digest, checked against `expect` (a pin) and the registry's own digest header. */
async function fetchManifest(
  s: RegistrySession,
  ref: string,
  expect: Digest | null,
): Promise<{ bytes: Buffer; digest: Digest; json: Record<string, unknown> } | null> {
  const r = await s.request('GET', `manifests/${ref}`, { accept: MANIFEST_ACCEPT });
  if (r.status === 404) {
    r.body.resume();
    return null;
  }
  if (r.status !== 200) {
    r.body.resume();
    throw new ImageError('image.registry_error', `GET manifest ${ref}: the registry answered ${r.status}`);
  }
  const bytes = await readBounded(r.body, MAX_MANIFEST, `manifest ${ref}`);
  const digest = sha256(bytes);
  if (expect !== null && digest !== expect)
    throw new ImageError('image.registry_error', `manifest ${ref} hashes to ${digest}, not ${expect}`);
  const said = r.headers['docker-content-digest'];
  if (typeof said === 'string' && said !== digest)
    throw new ImageError('image.registry_error', `manifest ${ref} hashes to ${digest}, the registry says ${said}`);
  let json: Record<string, unknown>;
  try {
    json = parseJson(bytes, `manifest ${ref}`);
  } catch (err) {
    throw new ImageError('image.registry_error', (err as Error).message);
  }
  return { bytes, digest, json };
}

/** Downloads a blob into `dest`, resuming `dest.partial`, refusing content that does not hash to `d`. */
async function fetchBlob(s: RegistrySession, d: Descriptor, dest: string, log: (l: string) => void): Promise<void> {
  if (existsSync(dest)) {
    if (digestOf(dest) === d.digest) return;
    rmSync(dest, { force: true }); // a cache entry that no longer matches is fetched again
  }
  const partial = `${dest}.partial`;
  const have = existsSync(partial) ? statSync(partial).size : 0;
  const r = await s.request('GET', `blobs/${d.digest}`, have > 0 ? { range: `bytes=${have}-` } : {});
  if (r.status !== 200 && r.status !== 206) {
    r.body.resume();
    throw new ImageError('image.registry_error', `GET blob ${d.digest}: the registry answered ${r.status}`);
  }
  const append = r.status === 206 && have > 0;
  if (append) log(`resuming ${d.digest.slice(0, 19)} at ${have} bytes\n`);
  let got = append ? have : 0;
  const limit = d.size;
  r.body.on('data', (c: Buffer) => {
    got += c.length;
    if (got > limit)
      r.body.destroy(new ImageError('image.registry_error', `blob ${d.digest} is larger than its descriptor says (${d.size})`));
  });
  await pipeline(r.body, createWriteStream(partial, { flags: append ? 'a' : 'w', mode: 0o600 }));
  const digest = digestOf(partial);
  if (digest !== d.digest) {
    rmSync(partial, { force: true });
    throw new ImageError('image.registry_error', `blob ${d.digest}: the registry's content hashes to ${digest} (refused, nothing stored)`);
  }
  renameSync(partial, dest);
}

async function fetchSmallBlob(s: RegistrySession, d: Digest, max: number, what: string): Promise<Buffer> {
  const r = await s.request('GET', `blobs/${d}`);
  if (r.status !== 200) {
    r.body.resume();
    throw new ImageError('image.registry_error', `GET ${what} ${d}: the registry answered ${r.status}`);
  }
  const b = await readBounded(r.body, max, `${what} ${d}`);
  if (sha256(b) !== d)
    throw new ImageError('image.registry_error', `${what} ${d}: the registry's content hashes to ${sha256(b)} (refused)`);
  return b;
}

function defaultTag(ref: RemoteRef): ImageRef | null {
  if (ref.tag === null) return null;
  try {
    return parseImageRef(`${ref.repository}:${ref.tag}`);
  } catch {
    return null;
  }
}

export async function pullImage(o: PullOptions): Promise<PullResult> {
  const s = new RegistrySession({
    registry: o.ref.registry,
    repository: o.ref.repository,
    actions: 'pull',
    ...(o.ca !== undefined ? { ca: o.ca } : {}),
    ...(o.credentials !== undefined ? { credentials: o.credentials } : {}),
  });
  await s.login();
  let m = await fetchManifest(s, manifestRef(o.ref), o.ref.digest);
  if (m === null) throw new ImageError('image.not_found', `${o.ref.text}: no such manifest in the registry`);
  const arch = NODE_ARCH[process.arch] ?? process.arch;
  for (let depth = 0; Array.isArray(m.json['manifests']); depth++) {
    if (depth >= 2) throw new ImageError('image.registry_error', `${o.ref.text}: image indexes nested too deeply`);
    const list = (m.json['manifests'] as unknown[]).map((x, i) => descriptor(x, `index manifests[${i}]`));
    const pick = list.find((d) => d.platform !== null && d.platform.architecture === arch && (d.platform.os || 'linux') === 'linux');
    if (pick === undefined) throw new ImageError('image.unsupported', `${o.ref.text}: no linux/${arch} image in the index`);
    o.log(`index: picked linux/${arch} ${pick.digest.slice(0, 19)}\n`);
    m = await fetchManifest(s, pick.digest, pick.digest);
    if (m === null)
      throw new ImageError('image.registry_error', `${o.ref.text}: the index names ${pick.digest}, which the registry does not have`);
  }
  const manifest = m;
  if (!Array.isArray(manifest.json['layers'])) throw new ImageError('image.registry_error', `${o.ref.text}: the manifest has no layers`);
  const cfg = descriptor(manifest.json['config'], 'manifest config');
  const layers = (manifest.json['layers'] as unknown[]).map((x, i) => descriptor(x, `manifest layers[${i}]`));
  // Every layer's size is declared and bounded before a byte is fetched (a registry that streams
  // forever must not fill the disk): the download stops at the declared size.
  let declared = 0;
  for (const [i, l] of layers.entries()) {
    if (!Number.isSafeInteger(l.size) || l.size < 0)
      throw new ImageError('image.registry_error', `${o.ref.text}: layer ${i} declares no size (the OCI descriptor requires one)`);
    declared += l.size;
  }
  if (declared > IMPORT_LIMITS.bytes)
    throw new ImageError('image.too_large', `${o.ref.text}: its layers declare ${declared} bytes; the limit is ${IMPORT_LIMITS.bytes}`);

  const staging = makeStaging(o.imagesDir, 'pull');
  try {
    const layout = join(staging, 'layout');
    const blobs = join(layout, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true, mode: 0o700 });
    const cache = join(paths.cache(o.imagesDir), 'blobs', 'sha256');
    mkdirSync(cache, { recursive: true, mode: 0o700 });
    writeFileSync(join(blobs, manifest.digest.slice(7)), manifest.bytes);
    writeFileSync(join(blobs, cfg.digest.slice(7)), await fetchSmallBlob(s, cfg.digest, MAX_CONFIG, 'config'));
    for (const [i, l] of layers.entries()) {
      o.log(`layer ${i + 1}/${layers.length} ${l.digest.slice(0, 19)} (${l.size} bytes)\n`);
      const cached = join(cache, l.digest.slice(7));
      await fetchBlob(s, l, cached, o.log);
      const into = join(blobs, l.digest.slice(7));
      if (!existsSync(into)) linkSync(cached, into);
    }
    const tag = o.tag !== undefined ? o.tag : defaultTag(o.ref);
    const mediaType =
      typeof manifest.json['mediaType'] === 'string' ? manifest.json['mediaType'] : 'application/vnd.oci.image.manifest.v1+json';
    writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    writeFileSync(
      join(layout, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType, digest: manifest.digest, size: manifest.bytes.length }] }),
    );
    const imported = await importImage(layout, { imagesDir: o.imagesDir, tag, log: o.log });
    const signatures = await pullSignatures(s, o, manifest.digest, imported.digest);
    return { ...imported, manifestDigest: manifest.digest, signatures };
  } finally {
    if (existsSync(staging)) removeStaging(staging);
  }
}

/**
 * Signatures pushed with the image (see push.ts): each payload blob is fetched and checked
 * against its digest, and stored only when it names the digest the image was imported as.
 * Their validity against trusted keys is checked where it matters (verify --key, run).
 */
async function pullSignatures(s: RegistrySession, o: PullOptions, manifestDigest: Digest, imageDigest: Digest): Promise<number> {
  const m = await fetchManifest(s, `sha256-${manifestDigest.slice(7)}.sig`, null);
  if (m === null || !Array.isArray(m.json['layers'])) return 0;
  let stored = 0;
  for (const [i, x] of (m.json['layers'] as unknown[]).slice(0, 64).entries()) {
    const d = descriptor(x, `signature layers[${i}]`);
    const signature = d.annotations[COSIGN_SIGNATURE_ANNOTATION];
    const keyId = d.annotations[AEGIS_KEY_ID_ANNOTATION];
    if (d.mediaType !== COSIGN_PAYLOAD_TYPE || signature === undefined || keyId === undefined || !isDigest(keyId)) continue;
    const payload = await fetchSmallBlob(s, d.digest, MAX_RECORD_BYTES, 'signature payload');
    if (parsePayload(payload)?.digest !== imageDigest) {
      o.log(`signature by ${keyId.slice(0, 19)} names another image digest: not stored\n`);
      continue;
    }
    const record: SignatureRecord | null = parseSignatureRecord(
      JSON.stringify({ v: 1, keyId, payload: payload.toString('base64'), signature }),
    );
    if (record === null) continue;
    await writeSignature(o.imagesDir, { kind: 'digest', digest: imageDigest }, record);
    stored++;
  }
  return stored;
}
