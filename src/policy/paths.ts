/**
 * Filesystem decisions over sandbox paths.
 *
 * Pure: no I/O. Paths are compared as strings after POSIX normalization (`.`, `..`, duplicate
 * and trailing slashes), and "inside" means inside at a component boundary: `/data/inputs2` is
 * not inside `/data/inputs`.
 *
 * LIMITATION: this decides on names. Symbolic links are resolved where paths meet a real
 * filesystem (the sandbox runner resolves host volume paths before asking; inside the sandbox
 * the mounts themselves are the boundary).
 */
import type { Decision, FsPolicy } from './types.js';

export type FsMode = 'read' | 'write';

const MAX_PATH = 4096;

/**
 * Normalize an absolute POSIX path, or return null when it is not one (relative, empty, NUL
 * byte, too long). `..` at the root stays at the root, as the kernel does.
 */
export function normalizeSandboxPath(input: string): string | null {
  if (typeof input !== 'string' || !input.startsWith('/') || input.length > MAX_PATH || input.includes('\0')) return null;
  const out: string[] = [];
  for (const seg of input.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return '/' + out.join('/');
}

/** True when normalized `path` equals `dir` or lies below it (component boundary). */
export function isWithin(path: string, dir: string): boolean {
  if (dir === '/') return true;
  return path === dir || (path.startsWith(dir) && path.charCodeAt(dir.length) === 0x2f);
}

/**
 * Decide an access to a sandbox path. A write grant implies read (a mount cannot be write-only);
 * a read grant never implies write. Everything not granted is denied.
 */
export function decidePath(fs: FsPolicy, mode: FsMode, path: string): Decision {
  const p = normalizeSandboxPath(path);
  if (p === null) return { allow: false, reason: 'fs.denied.invalid_path', detail: `"${path}" is not an absolute path` };
  const w = fs.write.find((d) => isWithin(p, d));
  if (w !== undefined) return { allow: true, reason: mode === 'write' ? 'fs.allowed.write' : 'fs.allowed.read', rule: w };
  const r = fs.read.find((d) => isWithin(p, d));
  if (r !== undefined) {
    if (mode === 'read') return { allow: true, reason: 'fs.allowed.read', rule: r };
    return { allow: false, reason: 'fs.denied.read_only', detail: `${p} is under ${r}, which is granted read-only` };
  }
  return { allow: false, reason: 'fs.denied.not_granted', detail: `${p} is not under any path in permissions.fs` };
}
