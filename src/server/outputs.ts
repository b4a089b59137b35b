/**
 * GET /v1/executions/{id}/outputs: the execution's output folder as a tar stream.
 *
 * ARCHITECTURE NOTE: the folder was written by the untrusted agent. Only folders and regular
 * files go into the tar; symbolic links, devices, FIFOs and sockets are left out, nothing is
 * followed (lstat, then open with O_NOFOLLOW and check the opened file is the one listed), and a
 * file is read for exactly the size put in its header.
 */
import { constants, createReadStream } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { FastifyReply } from 'fastify';
import { pack as tarPack } from 'tar-stream';

/** Bounds on what one response walks (an agent could create millions of files). */
const MAX_ENTRIES = 100_000;
const MAX_DEPTH = 64;

export async function sendOutputsTar(dir: string, reply: FastifyReply): Promise<void> {
  const pack = tarPack();
  const res = reply.raw;
  reply.hijack();
  res.writeHead(200, { 'content-type': 'application/x-tar' });
  const piping = pipeline(pack, res).catch(() => undefined);
  let entries = 0;
  const walk = async (abs: string, rel: string, depth: number): Promise<void> => {
    if (depth > MAX_DEPTH) return;
    let names: string[];
    try {
      names = (await readdir(abs)).sort();
    } catch {
      return;
    }
    for (const name of names) {
      if (++entries > MAX_ENTRIES || res.destroyed) return;
      const p = join(abs, name);
      const r = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(p).catch(() => undefined);
      if (st === undefined) continue;
      if (st.isDirectory()) {
        pack.entry({ name: `${r}/`, type: 'directory', mode: 0o755, mtime: st.mtime });
        await walk(p, r, depth + 1);
      } else if (st.isFile()) {
        const fh = await open(p, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
        if (fh === undefined) continue;
        try {
          const fst = await fh.stat();
          if (!fst.isFile() || fst.ino !== st.ino || fst.dev !== st.dev) continue;
          const size = fst.size;
          await new Promise<void>((resolve, reject) => {
            const header = { name: r, type: 'file' as const, size, mode: 0o644, mtime: fst.mtime };
            const done = (err?: Error | null): void => (err ? reject(err) : resolve());
            if (size === 0) {
              pack.entry(header, Buffer.alloc(0), done);
              return;
            }
            const entry = pack.entry(header, done);
            createReadStream('', { fd: fh.fd, start: 0, end: size - 1, autoClose: false }).pipe(entry);
          });
        } finally {
          await fh.close();
        }
      }
    }
  };
  try {
    await walk(dir, '', 0);
    pack.finalize();
  } catch {
    pack.destroy();
  }
  await piping;
}
