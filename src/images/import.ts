/**
 * `aegis image import`: reads an OCI image layout (directory or tarball) or a `docker save`
 * tarball, checks every blob against its digest, applies the layers in order into a staging
 * rootfs (apply.ts) and seals it into the store. Every byte of the archive is untrusted input:
 * JSON is size-limited and shape-checked, blob names must be `sha256:<hex>`, archive member
 * names are normalized and refused on traversal, and the outer archive is never unpacked by
 * name (members are stored under generated names).
 *
 * Formats: OCI image-spec v1 image-layout.md (oci-layout, index.json, blobs/sha256/<hex>),
 * manifest.md, config.md; docker save (manifest.json with Config/RepoTags/Layers; layers
 * checked against config rootfs.diff_ids).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import type { ImageRef } from '../policy/types.js';
import { applyLayer } from './apply.js';
import { ImageError } from './errors.js';
import { normalizeEntryName } from './layers.js';
import { type Digest, isDigest, parseImageRef, tagKey } from './ref.js';
import { removeStaging, sweepStaging } from './staging.js';
import { commitImage, type CommitResult, makeStaging, type ImageRecord, paths } from './store.js';
import { findExecutable } from '../host/exec.js';
import { pidAlive } from '../host/pid-lock.js';

const MAX_JSON = 4 * 1024 * 1024;

/** Random access to the members of an archive (a directory, or an unpacked tarball). */
interface Source {
  has(name: string): boolean;
  read(name: string): Buffer;
  open(name: string): Readable;
}

function dirSource(root: string): Source {
  const abs = (name: string) => join(root, ...normalizeEntryName(name));
  return {
    has: (n) => existsSync(abs(n)),
    read: (n) => {
      const p = abs(n);
      if (statSync(p).size > MAX_JSON) throw new ImageError('image.bad_archive', `${n} is too large for metadata`);
      return readFileSync(p);
    },
    open: (n) => createReadStream(abs(n)),
  };
}

/**
 * Unpacks the regular files of an outer tarball into `into` under generated names; symlinks
 * between members (older `docker save` links duplicate layer.tar files) are kept as aliases
 * resolved inside the archive. Directories, devices, hard links to outside names are ignored.
 */
async function tarSource(file: string, into: string): Promise<Source> {
  const files = new Map<string, string>();
  const links = new Map<string, string>();
  const ex = extract();
  const src = createReadStream(file);
  src.on('error', (e) => ex.destroy(e));
  src.pipe(ex);
  let n = 0;
  try {
    for await (const entry of ex) {
      const h = entry.header;
      const name = normalizeEntryName(h.name).join('/');
      if (h.type === 'file' || h.type === 'contiguous-file') {
        const dest = join(into, `m${n++}`);
        await pipeline(entry, createWriteStream(dest, { flags: 'wx', mode: 0o600 }));
        files.set(name, dest);
      } else if (h.type === 'symlink' || h.type === 'link') {
        const t = h.linkname ?? '';
        if (t.startsWith('/')) throw new ImageError('image.unsafe_entry', `archive member ${name} links to absolute ${t}`);
        const base = h.type === 'symlink' ? name.split('/').slice(0, -1) : [];
        const parts = [...base];
        for (const c of t.split('/')) {
          if (c === '' || c === '.') continue;
          if (c === '..') {
            if (!parts.length) throw new ImageError('image.unsafe_entry', `archive member ${name} links outside the archive: ${t}`);
            parts.pop();
          } else parts.push(c);
        }
        links.set(name, parts.join('/'));
        entry.resume();
      } else entry.resume();
    }
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError('image.bad_archive', `${file} is not a readable tar archive: ${(err as Error).message}`, { cause: err });
  }
  const lookup = (name: string): string => {
    let cur = normalizeEntryName(name).join('/');
    for (let i = 0; i < 10 && !files.has(cur) && links.has(cur); i++) cur = links.get(cur) as string;
    const p = files.get(cur);
    if (!p) throw new ImageError('image.bad_archive', `archive has no member ${name}`);
    return p;
  };
  return {
    has: (name) => {
      try {
        lookup(name);
        return true;
      } catch {
        return false;
      }
    },
    read: (name) => {
      const p = lookup(name);
      if (statSync(p).size > MAX_JSON) throw new ImageError('image.bad_archive', `${name} is too large for metadata`);
      return readFileSync(p);
    },
    open: (name) => createReadStream(lookup(name)),
  };
}

export function parseJson(buf: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(buf.toString('utf8'));
  } catch {
    throw new ImageError('image.bad_archive', `${what} is not JSON`);
  }
  if (typeof v !== 'object' || v === null) throw new ImageError('image.bad_archive', `${what} is not a JSON object or array`);
  return v as Record<string, unknown>;
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations: Record<string, string>;
  platform: { os?: string; architecture?: string } | null;
}

export function descriptor(v: unknown, what: string): Descriptor {
  const o = v as Record<string, unknown> | null;
  if (!o || typeof o !== 'object') throw new ImageError('image.bad_archive', `${what}: not a descriptor`);
  const digest = o['digest'];
  if (typeof digest !== 'string' || !isDigest(digest))
    throw new ImageError('image.bad_archive', `${what}: digest must be sha256:<64 hex> (got ${JSON.stringify(digest)})`);
  const ann: Record<string, string> = {};
  if (o['annotations'] && typeof o['annotations'] === 'object')
    for (const [k, x] of Object.entries(o['annotations'] as object)) if (typeof x === 'string') ann[k] = x;
  const p = o['platform'] as Record<string, unknown> | undefined;
  return {
    mediaType: typeof o['mediaType'] === 'string' ? o['mediaType'] : '',
    digest,
    size: typeof o['size'] === 'number' ? o['size'] : -1,
    annotations: ann,
    platform: p && typeof p === 'object' ? { os: String(p['os'] ?? ''), architecture: String(p['architecture'] ?? '') } : null,
  };
}

const blobName = (d: Digest) => `blobs/sha256/${d.slice(7)}`;

/** Reads a small blob and checks its digest. */
function readBlob(src: Source, d: Digest, what: string): Buffer {
  if (!src.has(blobName(d))) throw new ImageError('image.bad_archive', `${what}: blob ${d} is missing`);
  const b = src.read(blobName(d));
  const got = `sha256:${createHash('sha256').update(b).digest('hex')}`;
  if (got !== d) throw new ImageError('image.bad_archive', `${what}: blob ${d} has digest ${got}`);
  return b;
}

/** Hashes a whole stream. */
async function hashStream(s: Readable): Promise<Digest> {
  const h = createHash('sha256');
  for await (const c of s) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** Sniffs compression from the first bytes and returns an uncompressed tar stream. */
async function decompressor(open: () => Readable): Promise<() => Readable> {
  const head = await new Promise<Buffer>((resolve, reject) => {
    const s = open();
    const chunks: Buffer[] = [];
    let len = 0;
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      len += c.length;
      if (len >= 4) {
        s.destroy();
        resolve(Buffer.concat(chunks));
      }
    });
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
  if (head[0] === 0x1f && head[1] === 0x8b) {
    return () => {
      const out = new PassThrough();
      const src = open();
      const gz = createGunzip();
      src.on('error', (e) => out.destroy(e));
      gz.on('error', (e) => out.destroy(new ImageError('image.bad_archive', `layer is not valid gzip: ${e.message}`)));
      return src.pipe(gz).pipe(out);
    };
  }
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) {
    // Node.js 20 has no zstd: the Debian `zstd` tool decompresses (scripts/setup.sh installs it).
    const zstd = findExecutable('zstd');
    if (zstd === null)
      throw new ImageError('image.unsupported', 'a layer is zstd-compressed and the zstd tool is not installed (apt-get install zstd)');
    return () => {
      const out = new PassThrough();
      const src = open();
      const child = spawn(zstd, ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-400)));
      src.on('error', (e) => out.destroy(e));
      child.stdin.on('error', () => undefined); // zstd gave up early: its exit status says why
      child.on('error', (e) => out.destroy(new ImageError('image.bad_archive', `zstd: ${e.message}`)));
      child.on('close', (code) => {
        if (code !== 0) out.destroy(new ImageError('image.bad_archive', `layer is not valid zstd: ${err.trim() || `exit ${code}`}`));
      });
      out.on('close', () => child.kill('SIGKILL'));
      src.pipe(child.stdin);
      child.stdout.pipe(out);
      return out;
    };
  }
  return open;
}

export const NODE_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' };

interface Plan {
  layers: { name: string; digest: Digest; what: string; compressedDigest: boolean }[];
  config: Record<string, unknown>;
  tags: string[];
  source: ImageRecord['source'];
}

/**
 * `name:tag` from an image-name annotation (`org.opencontainers.image.ref.name`,
 * `io.containerd.image.name`), or null. Docker Hub prefixes are dropped, and so is a first
 * component that can only be a registry host (`localhost`, or `host:port`): the store is local.
 * A bare tag (`3.11`, which the OCI layout spec also allows) names no image: null.
 */
export function nameFromAnnotation(s: string | undefined): string | null {
  if (!s) return null;
  let t = s;
  for (const p of ['docker.io/library/', 'docker.io/', 'index.docker.io/library/']) if (t.startsWith(p)) t = t.slice(p.length);
  const slash = t.indexOf('/');
  if (slash > 0) {
    const host = t.slice(0, slash);
    if (host === 'localhost' || /^[a-z0-9.-]+:[0-9]{1,5}$/.test(host)) t = t.slice(slash + 1);
  }
  try {
    const r = parseImageRef(t);
    return r.digest === null ? tagKey(r) : null;
  } catch {
    return null;
  }
}

function ociPlan(src: Source): Plan {
  const index = parseJson(src.read('index.json'), 'index.json');
  const arch = NODE_ARCH[process.arch] ?? process.arch;
  let manifests = Array.isArray(index['manifests'])
    ? (index['manifests'] as unknown[]).map((m, i) => descriptor(m, `index.json manifests[${i}]`))
    : [];
  let tagAnn: string | null = null;
  for (let depth = 0; depth < 4; depth++) {
    if (!manifests.length) throw new ImageError('image.bad_archive', 'index.json lists no manifests');
    const pick = manifests.find((m) => !m.platform || (m.platform.architecture === arch && (m.platform.os ?? 'linux') === 'linux')) ?? null;
    if (!pick) throw new ImageError('image.unsupported', `no ${arch} image in the archive`);
    tagAnn =
      tagAnn ??
      nameFromAnnotation(pick.annotations['io.containerd.image.name']) ??
      nameFromAnnotation(pick.annotations['org.opencontainers.image.ref.name']);
    const m = parseJson(readBlob(src, pick.digest, 'manifest'), `manifest ${pick.digest}`);
    if (Array.isArray(m['manifests'])) {
      manifests = (m['manifests'] as unknown[]).map((x, i) => descriptor(x, `image index manifests[${i}]`));
      continue;
    }
    const cfgDesc = descriptor(m['config'], 'manifest config');
    const config = parseJson(readBlob(src, cfgDesc.digest, 'config'), 'image config');
    if (!Array.isArray(m['layers'])) throw new ImageError('image.bad_archive', 'manifest has no layers array');
    const layers = (m['layers'] as unknown[]).map((x, i) => {
      const d = descriptor(x, `manifest layers[${i}]`);
      if (d.mediaType.includes('nondistributable') || d.mediaType.includes('foreign'))
        throw new ImageError('image.unsupported', `layer ${i} is a foreign layer (${d.mediaType})`);
      if (!src.has(blobName(d.digest))) throw new ImageError('image.bad_archive', `layer ${i}: blob ${d.digest} is missing`);
      return { name: blobName(d.digest), digest: d.digest, what: `layer ${i}`, compressedDigest: true };
    });
    return { layers, config, tags: tagAnn ? [tagAnn] : [], source: { kind: 'import', format: 'oci', manifest: pick.digest } };
  }
  throw new ImageError('image.bad_archive', 'image indexes nested too deeply');
}

function dockerPlan(src: Source): Plan {
  const list = parseJson(src.read('manifest.json'), 'manifest.json');
  if (!Array.isArray(list) || list.length === 0) throw new ImageError('image.bad_archive', 'manifest.json is not a non-empty array');
  if (list.length > 1) throw new ImageError('image.unsupported', `the archive holds ${list.length} images; save one image per archive`);
  const m = list[0] as Record<string, unknown> | null;
  if (typeof m !== 'object' || m === null || Array.isArray(m))
    throw new ImageError('image.bad_archive', 'manifest.json entry is not an object');
  const cfgName = m['Config'];
  if (typeof cfgName !== 'string') throw new ImageError('image.bad_archive', 'manifest.json has no Config');
  const cfgBytes = src.read(cfgName);
  const config = parseJson(cfgBytes, 'image config');
  const layerNames = m['Layers'];
  if (!Array.isArray(layerNames) || !layerNames.every((l) => typeof l === 'string'))
    throw new ImageError('image.bad_archive', 'manifest.json Layers is not a list of names');
  const rootfs = config['rootfs'] as Record<string, unknown> | undefined;
  const diffIds = rootfs && Array.isArray(rootfs['diff_ids']) ? (rootfs['diff_ids'] as unknown[]) : null;
  if (!diffIds || diffIds.length !== layerNames.length || !diffIds.every((d) => typeof d === 'string' && isDigest(d))) {
    throw new ImageError('image.bad_archive', 'image config rootfs.diff_ids does not list one sha256 per layer');
  }
  const tags = (Array.isArray(m['RepoTags']) ? (m['RepoTags'] as unknown[]) : [])
    .map((t) => (typeof t === 'string' ? nameFromAnnotation(t) : null))
    .filter((t): t is string => t !== null);
  const cfgDigest = `sha256:${createHash('sha256').update(cfgBytes).digest('hex')}`;
  return {
    layers: (layerNames as string[]).map((name, i) => ({
      name,
      digest: diffIds[i] as Digest,
      what: `layer ${i} (${name})`,
      compressedDigest: false,
    })),
    config,
    tags: tags.slice(0, 1),
    source: { kind: 'import', format: 'docker-save', config: cfgDigest },
  };
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

export interface ImportResult extends CommitResult {
  tags: string[];
  layers: number;
}

/**
 * Imports the image at `path` into the store. `tag` overrides the name recorded in the archive;
 * without either the image is stored untagged (reachable by digest).
 */
/** Default import limits: total bytes of regular files across all layers, and tar entries. */
export const IMPORT_LIMITS = { bytes: 16 * 1024 ** 3, entries: 1_000_000 } as const;

export async function importImage(
  path: string,
  opts: { imagesDir: string; tag: ImageRef | null; log: (s: string) => void; maxBytes?: number; maxEntries?: number },
): Promise<ImportResult> {
  const budget = { bytes: opts.maxBytes ?? IMPORT_LIMITS.bytes, entries: opts.maxEntries ?? IMPORT_LIMITS.entries };
  const st = (() => {
    try {
      return statSync(path);
    } catch {
      throw new ImageError('image.not_found', `${path} does not exist`);
    }
  })();
  if (opts.tag?.digest) throw new ImageError('image.bad_ref', 'give --tag as name:tag (the digest is computed)');
  sweepStaging(paths.tmp(opts.imagesDir), pidAlive);
  const staging = makeStaging(opts.imagesDir, 'import');
  try {
    let src: Source;
    if (st.isDirectory()) src = dirSource(path);
    else {
      const into = join(staging, 'archive');
      mkdirSync(into, { mode: 0o700 });
      opts.log(`reading ${path}\n`);
      src = await tarSource(path, into);
    }
    let plan: Plan;
    if (src.has('index.json') && src.has('oci-layout')) plan = ociPlan(src);
    else if (src.has('manifest.json')) plan = dockerPlan(src);
    else
      throw new ImageError(
        'image.bad_archive',
        `${path} is neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)`,
      );
    const cfg = plan.config;
    const arch = typeof cfg['architecture'] === 'string' ? cfg['architecture'] : '';
    const want = NODE_ARCH[process.arch] ?? process.arch;
    if (arch && arch !== want) throw new ImageError('image.unsupported', `image architecture ${arch} does not match this host (${want})`);
    const rootfs = join(staging, 'rootfs');
    mkdirSync(rootfs, { mode: 0o755 });
    const skipped: string[] = [];
    for (const [i, l] of plan.layers.entries()) {
      // The digest covers the bytes as stored (OCI) or the uncompressed tar (docker diff_id).
      const raw = () => src.open(l.name);
      const open = await decompressor(raw);
      const got = await hashStream(l.compressedDigest ? raw() : open());
      if (got !== l.digest) throw new ImageError('image.bad_archive', `${l.what}: content hashes to ${got}, expected ${l.digest}`);
      opts.log(`applying layer ${i + 1}/${plan.layers.length} ${l.digest.slice(0, 19)}\n`);
      const s = await applyLayer(rootfs, open, budget);
      for (const p of s.skipped) skipped.push(p);
    }
    const c = (cfg['config'] ?? {}) as Record<string, unknown>;
    const tags = opts.tag ? [tagKey(opts.tag)] : plan.tags;
    if (existsSync(join(staging, 'archive'))) removeStaging(join(staging, 'archive'));
    opts.log('hashing files and sealing the image\n');
    const res = await commitImage(
      opts.imagesDir,
      staging,
      {
        source: plan.source,
        config: {
          env: strings(c['Env']),
          entrypoint: strings(c['Entrypoint']),
          cmd: strings(c['Cmd']),
          workingDir: typeof c['WorkingDir'] === 'string' ? c['WorkingDir'] : '',
          user: typeof c['User'] === 'string' ? c['User'] : '',
        },
      },
      tags,
    );
    return { ...res, skipped: [...skipped, ...res.skipped], tags, layers: plan.layers.length };
  } catch (err) {
    if (existsSync(staging)) removeStaging(staging);
    if (err instanceof ImageError) throw err;
    // Anything else came from reading hostile input (EISDIR on a member named like a
    // directory, a truncated stream, ...): report it as a coded error, never a crash.
    throw new ImageError('image.bad_archive', `cannot import ${path}: ${(err as Error).message}`, { cause: err });
  }
}
