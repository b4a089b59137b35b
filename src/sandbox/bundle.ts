/**
 * Host side of the bundle: lists the image along the mount targets (input of the pure planner)
 * and writes a compiled bundle (config.json + rootfs skeleton) into a run's directory.
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxError } from './errors.js';
import type { CompiledBundle } from './spec/compile.js';
import type { ImageEntry, ImageListing } from './spec/rootfs.js';

/** Reads the image's entries at each of `dirs` (sandbox-absolute), never following symlinks. */
export function scanImage(imageRootfs: string, dirs: readonly string[]): ImageListing {
  const out = new Map<string, readonly ImageEntry[] | 'missing' | 'notdir'>();
  for (const dir of dirs) {
    const host = imageRootfs + (dir === '/' ? '' : dir);
    let st;
    try {
      st = lstatSync(host);
    } catch {
      out.set(dir, 'missing');
      continue;
    }
    if (!st.isDirectory()) {
      out.set(dir, 'notdir');
      continue;
    }
    const entries: ImageEntry[] = [];
    for (const d of readdirSync(host, { withFileTypes: true })) {
      if (d.isSymbolicLink()) entries.push({ name: d.name, type: 'symlink', target: readlinkSync(join(host, d.name)) });
      else if (d.isDirectory()) entries.push({ name: d.name, type: 'dir' });
      else if (d.isFile()) entries.push({ name: d.name, type: 'file' });
      else entries.push({ name: d.name, type: 'other' });
    }
    out.set(dir, entries);
  }
  return out;
}

/** Writes `<dir>/config.json` and the skeleton under `<dir>/rootfs`. */
export function writeBundle(dir: string, bundle: CompiledBundle): void {
  try {
    const root = join(dir, 'rootfs');
    mkdirSync(root, { mode: 0o755 });
    for (const e of bundle.rootfs.skeleton) {
      const p = root + e.path;
      if (e.kind === 'dir') {
        mkdirSync(p, { mode: 0o755 });
        if (e.mode !== undefined) chmodSync(p, e.mode);
      }
      else if (e.kind === 'file') writeFileSync(p, '', { mode: 0o444 });
      else symlinkSync(e.target, p);
    }
    writeFileSync(join(dir, 'config.json'), JSON.stringify(bundle.config));
  } catch (err) {
    throw new SandboxError('sandbox.state_failed', `cannot write the bundle in ${dir}: ${(err as Error).message}`, { cause: err });
  }
}
