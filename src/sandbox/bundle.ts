/**
 * Host side of the bundle: lists the image along the mount targets (input of the pure planner)
 * builds (once) the shared root skeleton, and writes a run's config.json.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
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

function writeSkeleton(root: string, bundle: CompiledBundle): void {
  mkdirSync(root, { mode: 0o755 });
  for (const e of bundle.rootfs.skeleton) {
    const p = root + e.path;
    if (e.kind === 'dir') {
      mkdirSync(p, { mode: 0o755 });
      if (e.mode !== undefined) chmodSync(p, e.mode);
    } else if (e.kind === 'file') writeFileSync(p, '', { mode: 0o444 });
    else symlinkSync(e.target, p);
  }
}

/**
 * The root skeleton for `bundle`, shared by every run with the same skeleton (same image layout
 * and mount targets): `<stateDir>/skeletons/<sha256 of the plan>/`. Built once under a temporary
 * name and renamed into place, so a skeleton that exists is complete.
 *
 * ARCHITECTURE NOTE: runtimes never write a skeleton: the root is read-only and every mount
 * target already exists in it. It holds only empty directories, empty files and symbolic links;
 * nothing of a run is ever stored there, so sharing it leaks nothing between runs. It saves
 * creating and removing ~25 entries per run. Skeletons live in the state dir (tmpfs /run by
 * default, empty after a reboot).
 */
export function ensureSkeleton(stateDir: string, bundle: CompiledBundle): string {
  const key = createHash('sha256').update(JSON.stringify(bundle.rootfs.skeleton)).digest('hex');
  const dir = join(stateDir, 'skeletons');
  const final = join(dir, key);
  if (existsSync(final)) return final;
  const tmp = join(dir, `.${key}.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    writeSkeleton(tmp, bundle);
    try {
      renameSync(tmp, final);
    } catch (err) {
      // Another run built the same skeleton first: use theirs.
      rmSync(tmp, { recursive: true, force: true });
      if (!existsSync(final)) throw err;
    }
    return final;
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw new SandboxError('sandbox.state_failed', `cannot build the root skeleton in ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Writes `<dir>/config.json` with `root.path` pointing at the skeleton, relative to the bundle:
 * the runtime resolves it from the bundle directory (its cwd) inside the sandbox's user
 * namespace, which may not be allowed to traverse the state dir's ancestors.
 */
export function writeBundle(dir: string, bundle: CompiledBundle, skeleton: string): void {
  try {
    // 0600: the config holds the agent's environment, and its path shows in `ps`.
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ ...bundle.config, root: { ...bundle.config.root, path: relative(dir, skeleton) } }),
      { mode: 0o600 },
    );
  } catch (err) {
    throw new SandboxError('sandbox.state_failed', `cannot write the bundle in ${dir}: ${(err as Error).message}`, { cause: err });
  }
}
