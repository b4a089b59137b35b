/**
 * Private key files, read and created the one way AEGIS does it (the audit log's signing and
 * master keys, the image signing key): a key file readable by group or others is refused, since
 * a key that may have leaked is no key; a new one is created with mode 0600 and O_EXCL, so two
 * processes creating it at once end up using the same key.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';

export type KeyFileRead = { readonly kind: 'ok'; readonly text: string } | { readonly kind: 'missing' } | { readonly kind: 'too_open' };

/** Reads a private key file, refusing one readable by group or others. */
export async function readKeyFile(path: string): Promise<KeyFileRead> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    throw err;
  }
  if ((st.mode & 0o077) !== 0) return { kind: 'too_open' };
  return { kind: 'ok', text: await readFile(path, 'utf8') };
}

/**
 * Creates `path` with `content` (mode 0600) unless it exists; when another process won the race,
 * returns what it wrote (or `too_open` when that file is readable by others).
 */
export async function createKeyFile(path: string, content: string): Promise<KeyFileRead> {
  try {
    await writeFile(path, content, { flag: 'wx', mode: 0o600 });
    return { kind: 'ok', text: content };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const theirs = await readKeyFile(path);
    return theirs.kind === 'missing' ? { kind: 'ok', text: content } : theirs;
  }
}
