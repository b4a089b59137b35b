/**
 * Builds real OCI image layouts and `docker save` tarballs for the image import tests,
 * including hostile ones (traversal, absolute names, escaping links).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

export interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device';
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

/** An uncompressed tar of `entries`, in order. */
export async function tarOf(entries: readonly TarEntry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(type === 'character-device' ? { devmajor: 1, devminor: 3 } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (type === 'file') p.entry(header, Buffer.from(e.content ?? ''), cb);
      else p.entry(header, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const made: string[] = [];

/** A fresh temporary directory, removed by `removeTempDirs`. */
export function tempDir(label: string): string {
  const d = mkdtempSync(join(tmpdir(), `aegis-${label}-`));
  made.push(d);
  return d;
}

export function removeTempDirs(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}

function writeBlob(dir: string, bytes: Buffer): string {
  const d = sha256(bytes);
  writeFileSync(join(dir, 'blobs', 'sha256', d.slice(7)), bytes);
  return d;
}

/** Writes an OCI image layout to `dir` with `layers` (tar bytes; gzipped when `gzip[i]`). */
export function writeOciLayout(
  dir: string,
  layers: readonly Buffer[],
  opts: { gzip?: readonly boolean[]; refName?: string; architecture?: string } = {},
): { manifest: string } {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const descs = layers.map((l, i) => {
    const gz = opts.gzip?.[i] ?? false;
    const bytes = gz ? gzipSync(l) : l;
    return {
      mediaType: `application/vnd.oci.image.layer.v1.tar${gz ? '+gzip' : ''}`,
      digest: writeBlob(dir, bytes),
      size: bytes.length,
      diffId: sha256(l),
    };
  });
  const config = Buffer.from(
    JSON.stringify({
      architecture: opts.architecture ?? 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8'], Cmd: ['/bin/sh'], WorkingDir: '/app' },
      rootfs: { type: 'layers', diff_ids: descs.map((d) => d.diffId) },
    }),
  );
  const cfgDigest = writeBlob(dir, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfgDigest, size: config.length },
      layers: descs.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
    }),
  );
  const mDigest = writeBlob(dir, manifest);
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: mDigest,
          size: manifest.length,
          ...(opts.refName ? { annotations: { 'org.opencontainers.image.ref.name': opts.refName } } : {}),
        },
      ],
    }),
  );
  return { manifest: mDigest };
}

/** A `docker save` (legacy layout) tarball: manifest.json, <config>.json, <n>/layer.tar. */
export async function dockerSaveTar(
  layers: readonly Buffer[],
  opts: { repoTag?: string; diffIds?: readonly string[] } = {},
): Promise<Buffer> {
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/bin:/bin'], Entrypoint: ['/bin/true'] },
    rootfs: { type: 'layers', diff_ids: opts.diffIds ?? layers.map((l) => sha256(l)) },
  });
  const cfgName = `${sha256(config).slice(7)}.json`;
  const entries: TarEntry[] = [{ name: cfgName, content: config }];
  const names: string[] = [];
  layers.forEach((l, i) => {
    names.push(`layer${i}/layer.tar`);
    entries.push({ name: `layer${i}/`, type: 'directory' });
    entries.push({ name: `layer${i}/layer.tar`, content: l });
  });
  entries.push({
    name: 'manifest.json',
    content: JSON.stringify([{ Config: cfgName, RepoTags: opts.repoTag ? [opts.repoTag] : null, Layers: names }]),
  });
  return tarOf(entries);
}
