/**
 * Plans the per-run root directory ("skeleton") that lets a shared, read-only image be the
 * root filesystem without ever writing into it.
 *
 * Pure: the image is seen only through an `ImageListing` gathered by the caller.
 *
 * ARCHITECTURE NOTE: OCI runtimes create missing mount targets inside `root.path`. Pointing
 * `root.path` at the image directory would make them write `/agent`, `/data/outputs`, ... into
 * the shared image. Instead the root is a small per-run directory holding only directories and
 * symbolic links; every other top-level entry of the image is bind-mounted read-only onto it.
 * Along the path to a mount target, the image directory is mirrored one level at a time, so
 * `/data/outputs` works whether or not the image has `/data`. Image symbolic links are re-created
 * as links (resolved inside the sandbox), never bind-mounted, so a hostile image cannot point a
 * bind mount at a host path. An image path that is a symbolic link or a file where a mount
 * target needs a directory is refused.
 */
import { SandboxError } from '../errors.js';

export type ImageEntryType = 'dir' | 'file' | 'symlink' | 'other';

export interface ImageEntry {
  readonly name: string;
  readonly type: ImageEntryType;
  /** Link target, for symlinks. */
  readonly target?: string;
}

/**
 * What the image holds at each directory the plan needs (absolute sandbox paths, '/' = the image
 * root): its entries, 'missing' when it does not exist, 'notdir' when it is not a real directory.
 */
export type ImageListing = ReadonlyMap<string, readonly ImageEntry[] | 'missing' | 'notdir'>;

export type SkeletonEntry =
  | { readonly kind: 'dir'; readonly path: string; readonly mode?: number }
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string };

export interface RootfsPlan {
  /** Entries to create under the bundle's `rootfs/`, parents first. */
  readonly skeleton: readonly SkeletonEntry[];
  /** Image paths (sandbox-absolute) to bind read-only at the same place. */
  readonly binds: readonly string[];
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** The directories whose image listing `planRootfs` needs: every proper ancestor of each target. */
export function dirsToList(targets: readonly string[]): string[] {
  const dirs = new Set<string>();
  for (const t of targets) {
    for (let p = parentOf(t); ; p = parentOf(p)) {
      dirs.add(p);
      if (p === '/') break;
    }
  }
  return [...dirs].sort();
}

/** Builds the skeleton for `targets` (normalized absolute paths, none nested in another). */
export function planRootfs(targets: readonly string[], listing: ImageListing): RootfsPlan {
  const targetSet = new Set(targets);
  const ancestors = new Set(dirsToList(targets));
  const skeleton: SkeletonEntry[] = [];
  const binds: string[] = [];

  const visit = (dir: string): void => {
    if (dir !== '/') skeleton.push({ kind: 'dir', path: dir });
    const entries = listing.get(dir);
    if (entries === undefined) throw new SandboxError('sandbox.invalid_spec', `internal: image listing lacks ${dir}`);
    if (entries === 'notdir') {
      throw new SandboxError('sandbox.invalid_spec', `the image has a symbolic link or file at ${dir}, where a mount needs a directory`);
    }
    const seen = new Set<string>();
    for (const e of entries === 'missing' ? [] : entries) {
      const p = join(dir, e.name);
      seen.add(p);
      if (targetSet.has(p)) skeleton.push({ kind: 'dir', path: p });
      else if (ancestors.has(p)) visit(p);
      else if (e.type === 'symlink' && e.target !== undefined) skeleton.push({ kind: 'symlink', path: p, target: e.target });
      else if (e.type === 'dir') {
        skeleton.push({ kind: 'dir', path: p });
        binds.push(p);
      } else if (e.type === 'file') {
        skeleton.push({ kind: 'file', path: p });
        binds.push(p);
      }
      // 'other' (devices, fifos, sockets) in the image are not exposed.
    }
    // Targets and ancestors the image lacks.
    const children = [...targetSet, ...ancestors].filter((p) => p !== '/' && parentOf(p) === dir && !seen.has(p)).sort();
    for (const p of children) {
      if (targetSet.has(p)) skeleton.push({ kind: 'dir', path: p });
      else visit(p);
    }
  };
  visit('/');
  return { skeleton, binds };
}
