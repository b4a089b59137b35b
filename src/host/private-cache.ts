/**
 * Private caches (adapter): derived data (compiled policies, compiled alert rules) kept under
 * AEGIS's state dir so that a repeated command skips the slow parser.
 *
 * ARCHITECTURE NOTE: an entry is read only from a directory owned by this user with mode 0700
 * (not a symlink), and only from a file owned by this user that nobody else can write, so only
 * this user could have written it. Even then the caller treats the entry as untrusted input:
 * it checks it, and anything that does not check out is ignored and computed again.
 * LIMITATION: someone who can write as this user can plant a well-formed entry; the cache
 * guards against other users, not against this one.
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Whether nobody but this user could have written `path` (a 0700 directory, or a file). */
export function trustedPath(path: string, dir: boolean): boolean {
  try {
    const st = lstatSync(path);
    const owner = st.uid === process.geteuid?.();
    return owner && (dir ? st.isDirectory() && (st.mode & 0o077) === 0 : st.isFile() && (st.mode & 0o022) === 0);
  } catch {
    return false;
  }
}

/** The text of entry `name` in cache `dir`, if both are trusted and readable; else undefined. */
export function readPrivateEntry(dir: string, name: string): string | undefined {
  const file = join(dir, name);
  if (!trustedPath(dir, true) || !trustedPath(file, false)) return undefined;
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Writes entry `name` atomically (0600); never into a directory someone else could write. */
export function writePrivateEntry(dir: string, name: string, text: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!trustedPath(dir, true)) return; // someone else's directory: never write there
    const file = join(dir, name);
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    /* a cache that cannot be written only costs time */
  }
}

/**
 * Identity of the code that computes cached data: the Node version, the dependency lockfile,
 * and name, size and mtime of the compiled modules in `dirs` (file URLs of folders). Any
 * rebuild that changes them changes every key, so an entry never outlives the code that made it.
 */
export function codeStamp(dirs: readonly URL[]): string {
  const parts: string[] = [process.version];
  try {
    parts.push(
      createHash('sha256')
        .update(readFileSync(fileURLToPath(new URL('../../../package-lock.json', import.meta.url))))
        .digest('hex'),
    );
  } catch {
    parts.push('no-lockfile');
  }
  for (const url of dirs) {
    const dir = fileURLToPath(url);
    for (const f of readdirSync(dir).sort()) {
      if (!f.endsWith('.js')) continue;
      const st = statSync(join(dir, f));
      parts.push(`${dir}${f}:${st.size}:${st.mtimeMs}`);
    }
  }
  return parts.join('\n');
}
