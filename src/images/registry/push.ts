/**
 * `aegis image push <local ref> <host>/<repo>:<tag>`: publishes an image of the store over the
 * OCI distribution API as one gzip layer made from its file manifest (deterministic: entries in
 * manifest order, owner and mode from the manifest, mtime 0), an OCI config and an OCI manifest
 * annotated with the AEGIS digest. Pulling it back into a store yields the same AEGIS digest, so
 * signatures made here still verify there.
 *
 * Signatures travel as cosign does it: a manifest tagged `sha256-<manifest hex>.sig` whose layers
 * are the simple-signing payloads (media type application/vnd.dev.cosign.simplesigning.v1+json)
 * with the signature in the `dev.cosignproject.cosign/signature` annotation (and the AEGIS key id
 * in `dev.aegis.image.key-id`).
 *
 * Only an intact image is pushed: every file is re-hashed against the digest first.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, lstatSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack } from 'tar-stream';
import { ImageError } from '../errors.js';
import { NODE_ARCH } from '../import.js';
import type { FileEntry } from '../manifest.js';
import type { Digest, RefOrDigest } from '../ref.js';
import { removeStaging } from '../staging.js';
import { checkImage, makeStaging, readImageFiles, readSignatures, type ImageRecord } from '../store.js';
import { type Credentials, readBounded, RegistrySession } from './http.js';
import { AEGIS_KEY_ID_ANNOTATION, COSIGN_PAYLOAD_TYPE, COSIGN_SIGNATURE_ANNOTATION } from './pull.js';
import type { RemoteRef } from './reference.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const AEGIS_DIGEST_ANNOTATION = 'dev.aegis.image.digest';

const sha256 = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface PushOptions {
  readonly imagesDir: string;
  readonly image: RefOrDigest;
  readonly ref: RemoteRef;
  readonly ca?: string;
  readonly credentials?: Credentials;
  readonly log: (line: string) => void;
}

export interface PushResult {
  readonly digest: Digest;
  readonly manifestDigest: Digest;
  readonly layer: { readonly digest: Digest; readonly size: number; readonly uploaded: boolean };
  readonly signatures: number;
}

/** A hashing pass-through. */
function hasher(): { t: Transform; digest: () => Digest; size: () => number } {
  const h = createHash('sha256');
  let n = 0;
  const t = new Transform({
    transform(c: Buffer, _e, cb) {
      h.update(c);
      n += c.length;
      cb(null, c);
    },
  });
  return { t, digest: () => `sha256:${h.digest('hex')}`, size: () => n };
}

/** Writes the rootfs as a gzip tar in manifest order; returns the compressed and uncompressed digests. */
async function writeLayer(
  rootfs: string,
  entries: readonly FileEntry[],
  file: string,
): Promise<{ digest: Digest; size: number; diffId: Digest }> {
  const p = pack();
  const raw = hasher();
  const gz = hasher();
  const done = pipeline(p, raw.t, createGzip({ level: 6 }), gz.t, createWriteStream(file, { flags: 'wx', mode: 0o600 }));
  const add = (header: Parameters<typeof p.entry>[0], body?: NodeJS.ReadableStream): Promise<void> =>
    new Promise((resolve, reject) => {
      if (body === undefined) p.entry(header, (err) => (err ? reject(err) : resolve()));
      else {
        const e = p.entry(header, (err) => (err ? reject(err) : resolve()));
        body.on('error', reject);
        body.pipe(e);
      }
    });
  for (const e of entries) {
    if (e.path === '.') continue; // the root itself: the importer makes it
    const base = { name: e.path, mode: e.mode, uid: e.uid, gid: e.gid, uname: '', gname: '', mtime: new Date(0) };
    const abs = join(rootfs, e.path);
    if (e.type === 'd') await add({ ...base, name: `${e.path}/`, type: 'directory' });
    else if (e.type === 'l') await add({ ...base, type: 'symlink', linkname: readlinkSync(abs) });
    else {
      const st = lstatSync(abs);
      if (!st.isFile() || st.size !== e.size)
        throw new ImageError('image.digest_mismatch', `${e.path} changed while the image was being pushed`);
      await add({ ...base, type: 'file', size: e.size }, createReadStream(abs));
    }
  }
  p.finalize();
  await done;
  return { digest: gz.digest(), size: gz.size(), diffId: raw.digest() };
}

async function uploadBlob(s: RegistrySession, d: Digest, size: number, body: () => Readable | Buffer): Promise<boolean> {
  const head = await s.request('HEAD', `blobs/${d}`);
  head.body.resume();
  if (head.status === 200) return false;
  const start = await s.request('POST', 'blobs/uploads/', { 'content-length': '0' }, Buffer.alloc(0));
  start.body.resume();
  const loc = start.headers.location;
  if (start.status !== 202 || typeof loc !== 'string')
    throw new ImageError('image.registry_error', `starting the upload of ${d}: the registry answered ${start.status}`);
  const url = new URL(loc, 'https://placeholder.invalid');
  url.searchParams.set('digest', d);
  const target = loc.startsWith('https://') ? url.toString() : `${url.pathname}${url.search}`;
  const b = body();
  const put = await s.request('PUT', target, { 'content-type': 'application/octet-stream', 'content-length': String(size) }, b);
  const text = await readBounded(put.body, 64 * 1024, 'upload answer');
  if (put.status !== 201)
    throw new ImageError(
      'image.registry_error',
      `uploading ${d}: the registry answered ${put.status} ${text.toString('utf8').slice(0, 200)}`,
    );
  return true;
}

async function putManifest(s: RegistrySession, ref: string, bytes: Buffer): Promise<void> {
  const r = await s.request('PUT', `manifests/${ref}`, { 'content-type': OCI_MANIFEST }, bytes);
  const text = await readBounded(r.body, 64 * 1024, 'manifest answer');
  if (r.status !== 201)
    throw new ImageError(
      'image.registry_error',
      `PUT manifest ${ref}: the registry answered ${r.status} ${text.toString('utf8').slice(0, 200)}`,
    );
  const said = r.headers['docker-content-digest'];
  if (typeof said === 'string' && said !== sha256(bytes))
    throw new ImageError('image.registry_error', `PUT manifest ${ref}: the registry stored ${said}, expected ${sha256(bytes)}`);
}

function configOf(record: ImageRecord | null, diffId: Digest): Buffer {
  const c = record?.config;
  return Buffer.from(
    JSON.stringify({
      architecture: NODE_ARCH[process.arch] ?? process.arch,
      os: 'linux',
      config: {
        ...(c && c.env.length > 0 ? { Env: c.env } : {}),
        ...(c && c.entrypoint.length > 0 ? { Entrypoint: c.entrypoint } : {}),
        ...(c && c.cmd.length > 0 ? { Cmd: c.cmd } : {}),
        ...(c && c.workingDir !== '' ? { WorkingDir: c.workingDir } : {}),
        ...(c && c.user !== '' ? { User: c.user } : {}),
      },
      rootfs: { type: 'layers', diff_ids: [diffId] },
    }),
  );
}

export async function pushImage(o: PushOptions): Promise<PushResult> {
  const check = await checkImage(o.imagesDir, o.image, 'full');
  if (check.differences.length > 0)
    throw new ImageError(
      'image.digest_mismatch',
      `${check.ref} differs from ${check.digest} in ${check.differences.length} entries: not pushed`,
    );
  const img = readImageFiles(o.imagesDir, { kind: 'digest', digest: check.digest });
  const s = new RegistrySession({
    registry: o.ref.registry,
    repository: o.ref.repository,
    actions: 'pull,push',
    ...(o.ca !== undefined ? { ca: o.ca } : {}),
    ...(o.credentials !== undefined ? { credentials: o.credentials } : {}),
  });
  await s.login();
  if (o.ref.tag === null) throw new ImageError('image.bad_ref', `${o.ref.text}: push needs a tag`);
  const staging = makeStaging(o.imagesDir, 'push');
  try {
    const layerFile = join(staging, 'layer.tar.gz');
    o.log(`packing ${img.entries.length} entries\n`);
    const layer = await writeLayer(img.rootfs, img.entries, layerFile);
    const config = configOf(img.record, layer.diffId);
    o.log(`uploading layer ${layer.digest.slice(0, 19)} (${layer.size} bytes)\n`);
    const uploaded = await uploadBlob(s, layer.digest, layer.size, () => createReadStream(layerFile));
    await uploadBlob(s, sha256(config), config.length, () => config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length },
        layers: [{ mediaType: OCI_LAYER_GZIP, digest: layer.digest, size: layer.size }],
        annotations: { [AEGIS_DIGEST_ANNOTATION]: check.digest },
      }),
    );
    await putManifest(s, o.ref.tag, manifest);
    const manifestDigest = sha256(manifest);
    const signatures = await pushSignatures(s, o, check.digest, manifestDigest);
    return { digest: check.digest, manifestDigest, layer: { digest: layer.digest, size: layer.size, uploaded }, signatures };
  } finally {
    if (existsSync(staging)) removeStaging(staging);
  }
}

async function pushSignatures(s: RegistrySession, o: PushOptions, digest: Digest, manifestDigest: Digest): Promise<number> {
  const records = readSignatures(o.imagesDir, digest);
  if (records.length === 0) return 0;
  const layers = [];
  for (const r of records) {
    const payload = Buffer.from(r.payload, 'base64');
    await uploadBlob(s, sha256(payload), payload.length, () => payload);
    layers.push({
      mediaType: COSIGN_PAYLOAD_TYPE,
      digest: sha256(payload),
      size: payload.length,
      annotations: { [COSIGN_SIGNATURE_ANNOTATION]: r.signature, [AEGIS_KEY_ID_ANNOTATION]: r.keyId },
    });
  }
  const config = Buffer.from(
    JSON.stringify({ architecture: '', os: '', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }),
  );
  await uploadBlob(s, sha256(config), config.length, () => config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length },
      layers,
    }),
  );
  await putManifest(s, `sha256-${manifestDigest.slice(7)}.sig`, manifest);
  o.log(`pushed ${records.length} signature(s) as sha256-${manifestDigest.slice(7, 19)}….sig\n`);
  return records.length;
}
