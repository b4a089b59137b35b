/**
 * Archives for the API: the agent's code folder packed as a `.tar.gz` (what `POST /v1/agents`
 * takes), and an execution's outputs (a tar stream) unpacked into a local folder.
 *
 * The code archive is reproducible: entries sorted, uid/gid 0, mtime 0, modes 0755/0644, so an
 * unchanged folder gives the same code digest on every deploy. Only regular files and
 * directories are packed; a symlink, socket or device in the folder is an error
 * (`code_dir_invalid`), since the server would refuse it anyway.
 *
 * The outputs were written by the agent, which is untrusted: only regular files and directories
 * are unpacked, with relative paths that stay inside the destination (no `..`, no absolute path),
 * each file created new (O_EXCL | O_NOFOLLOW) with mode 0644; other entries are skipped and counted.
 */
import { closeSync, constants, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { AegisClientError } from './errors.js';

export interface PackOptions {
  /** Names (of files or folders, at any depth) left out of the archive. Default: `.git`. */
  readonly ignore?: readonly string[];
}

interface PackEntry {
  readonly rel: string;
  readonly dir: boolean;
  readonly mode: number;
  readonly data?: Buffer;
}

function walk(root: string, rel: string, ignore: ReadonlySet<string>, out: PackEntry[]): void {
  const abs = rel === '' ? root : join(root, rel);
  let names: string[];
  try {
    names = readdirSync(abs).sort();
  } catch (err) {
    throw new AegisClientError('code_dir_invalid', `cannot read ${abs} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, {
      cause: err,
    });
  }
  for (const name of names) {
    if (ignore.has(name)) continue;
    const childRel = rel === '' ? name : `${rel}/${name}`;
    const p = join(root, childRel);
    const st = lstatSync(p);
    if (st.isDirectory()) {
      out.push({ rel: childRel, dir: true, mode: 0o755 });
      walk(root, childRel, ignore, out);
    } else if (st.isFile()) {
      out.push({ rel: childRel, dir: false, mode: (st.mode & 0o111) !== 0 ? 0o755 : 0o644, data: readFileSync(p) });
    } else {
      const what = st.isSymbolicLink() ? 'a symlink' : 'not a regular file or folder';
      throw new AegisClientError('code_dir_invalid', `${p} is ${what}: the server accepts regular files and folders only`);
    }
  }
}

/** The `.tar.gz` of `dir` (reproducible; see the module header). */
export async function packCodeDir(dir: string, opts: PackOptions = {}): Promise<Buffer> {
  let st;
  try {
    st = lstatSync(dir);
  } catch (err) {
    throw new AegisClientError('code_dir_invalid', `${dir} does not exist`, { cause: err });
  }
  if (!st.isDirectory()) throw new AegisClientError('code_dir_invalid', `${dir} is not a folder`);
  const entries: PackEntry[] = [];
  walk(dir, '', new Set(opts.ignore ?? ['.git']), entries);
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  const mtime = new Date(0);
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      const header = { name: e.dir ? `${e.rel}/` : e.rel, mode: e.mode, mtime, uid: 0, gid: 0, uname: '', gname: '' };
      if (e.dir) p.entry({ ...header, type: 'directory' }, cb);
      else p.entry({ ...header, type: 'file', size: e.data?.length ?? 0 }, e.data ?? Buffer.alloc(0), cb);
    });
  }
  p.finalize();
  await collected;
  return gzipSync(Buffer.concat(chunks));
}

export interface UnpackResult {
  readonly files: number;
  readonly bytes: number;
  /** Entries that were not regular files or folders (symlinks, devices), left out. */
  readonly skipped: number;
}

function safeSegments(name: string): string[] | undefined {
  if (name.startsWith('/') || name.includes('\0')) return undefined;
  const segs = name.split('/').filter((s) => s !== '' && s !== '.');
  return segs.includes('..') ? undefined : segs;
}

/** Unpacks a tar stream into `dir` (created if missing; must be empty). */
export async function unpackOutputs(stream: Readable, dir: string): Promise<UnpackResult> {
  const fail = (message: string, cause?: unknown): never => {
    throw new AegisClientError('outputs_failed', message, cause === undefined ? undefined : { cause });
  };
  try {
    mkdirSync(dir, { recursive: true });
    if (readdirSync(dir).length > 0) fail(`${dir} is not empty`);
  } catch (err) {
    if (err instanceof AegisClientError) throw err;
    fail(`cannot create ${dir} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, err);
  }
  const ex = tar.extract();
  stream.on('error', (err) => ex.destroy(err));
  stream.pipe(ex as unknown as NodeJS.WritableStream);
  let files = 0;
  let bytes = 0;
  let skipped = 0;
  const dirs = new Set<string>(['']);
  const mkdirs = (segs: readonly string[]): void => {
    for (let i = 1; i <= segs.length; i++) {
      const rel = segs.slice(0, i).join('/');
      if (dirs.has(rel)) continue;
      mkdirSync(join(dir, rel), { mode: 0o755 });
      dirs.add(rel);
    }
  };
  try {
    for await (const entry of ex) {
      const h = entry.header;
      const segs = safeSegments(h.name);
      if (segs === undefined) fail(`the outputs archive has an unsafe entry ${JSON.stringify(h.name)}`);
      const s = segs as string[];
      if (h.type === 'directory') {
        entry.resume();
        mkdirs(s);
      } else if ((h.type === 'file' || h.type === 'contiguous-file') && s.length > 0) {
        mkdirs(s.slice(0, -1));
        const fd = openSync(join(dir, ...s), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
        try {
          for await (const c of entry as AsyncIterable<Buffer>) {
            for (let off = 0; off < c.length;) off += writeSync(fd, c, off, c.length - off);
            bytes += c.length;
          }
        } finally {
          closeSync(fd);
        }
        files++;
      } else {
        entry.resume();
        skipped++;
      }
    }
  } catch (err) {
    if (err instanceof AegisClientError) throw err;
    fail(`cannot unpack the outputs into ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, err);
  }
  return { files, bytes, skipped };
}
