/**
 * The remote-engine file transfer (src/sandbox/docker/transfer.ts) against the REAL local engine,
 * through its API only: a host tree packed into an engine volume with PUT /containers/{id}/archive
 * (a created, never started container: read-only root, no network, the volume rw at /data), then
 * the volume read back with GET /containers/{id}/archive and extracted into an empty directory,
 * which must match the tree (contents, modes, owners, symbolic and hard links, empty directories).
 * Everything made in the engine carries the test's run label and is removed after.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import tar, { type Header } from 'tar-stream';
import { resolveImage } from '../../src/images/index.js';
import { engineClient, engineImage } from '../../src/sandbox/docker/engine.js';
import { SandboxError } from '../../src/sandbox/errors.js';
import { hasCode } from '../../src/test-support/errors.js';
import { LABEL_RUN } from '../../src/sandbox/docker/options.js';
import { extractTree, packTree } from '../../src/sandbox/docker/transfer.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

const RUN = `aegis-dxfer-${process.pid}-${Date.now()}`;
const work = mkdtempSync('/var/tmp/aegis-dxfer-');

/** One line per path below `root`: type, mode, owner, mtime in seconds (files: tar's resolution), contents or link target; hard links grouped by inode. */
function describeTree(root: string, skip: ReadonlySet<string> = new Set()): string[] {
  const lines: string[] = [];
  const inodes = new Map<number, string>();
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (skip.has(r)) continue;
      const p = join(dir, name);
      const st = lstatSync(p);
      const owner = `${st.uid}:${st.gid}`;
      if (st.isDirectory()) {
        lines.push(`${r} dir ${(st.mode & 0o777).toString(8)} ${owner}`);
        walk(p, r);
      } else if (st.isSymbolicLink()) lines.push(`${r} symlink ${owner} -> ${readlinkSync(p)}`);
      else if (st.isFile()) {
        const first = inodes.get(st.ino);
        if (first === undefined) inodes.set(st.ino, r);
        const data = createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16);
        lines.push(
          `${r} file ${(st.mode & 0o777).toString(8)} ${owner} ${Math.floor(st.mtimeMs / 1000)} ${data}${first === undefined ? '' : ` =${first}`}`,
        );
      } else lines.push(`${r} other`);
    }
  };
  walk(root, '');
  return lines;
}

function fixture(): string {
  const src = join(work, 'src');
  mkdirSync(join(src, 'pkg', 'deep', 'deeper'), { recursive: true });
  mkdirSync(join(src, 'empty'));
  writeFileSync(join(src, 'main.py'), 'print("hello")\n');
  writeFileSync(join(src, 'pkg', 'deep', 'deeper', 'data.bin'), Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251)));
  writeFileSync(join(src, 'private'), 'secret-ish');
  chmodSync(join(src, 'private'), 0o600);
  chownSync(join(src, 'private'), 1001, 1002);
  writeFileSync(join(src, 'run.sh'), '#!/bin/sh\n');
  chmodSync(join(src, 'run.sh'), 0o4755); // setuid: kept into the engine, dropped on the way out
  writeFileSync(join(src, 'big-ids'), 'pax');
  chownSync(join(src, 'big-ids'), 300_000, 4_000_000);
  chmodSync(join(src, 'pkg'), 0o750);
  chownSync(join(src, 'pkg'), 1500, 1500);
  linkSync(join(src, 'main.py'), join(src, 'pkg', 'main-hard.py'));
  symlinkSync('../main.py', join(src, 'pkg', 'main-link.py'));
  symlinkSync('/etc/shadow', join(src, 'abs-link'));
  symlinkSync('dangling-target', join(src, 'dangling'));
  execFileSync('mkfifo', [join(src, 'fifo')]);
  utimesSync(join(src, 'main.py'), 1_700_000_000, 1_700_000_000);
  return src;
}

describe('docker remote-engine transfer (packTree -> engine volume -> extractTree)', () => {
  after(async () => {
    rmSync(work, { recursive: true, force: true });
    if ((await sandboxUnavailable('docker')) !== null) return;
    const docker = engineClient();
    for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_RUN}=${RUN}`] } }))
      await docker.getContainer(c.Id).remove({ force: true, v: true });
    for (const v of (await docker.listVolumes({ filters: { label: [`${LABEL_RUN}=${RUN}`] } })).Volumes ?? [])
      await docker.getVolume(v.Name).remove({ force: true });
    for (const i of await docker.listImages({ filters: { label: [`${LABEL_RUN}=${RUN}`] } }))
      await docker.getImage(i.Id).remove({ force: true });
    const left = [
      ...(await docker.listContainers({ all: true, filters: { label: [`${LABEL_RUN}=${RUN}`] } })).map((c) => c.Id),
      ...((await docker.listVolumes({ filters: { label: [`${LABEL_RUN}=${RUN}`] } })).Volumes ?? []).map((v) => v.Name),
      ...(await docker.listImages({ filters: { label: [`${LABEL_RUN}=${RUN}`] } })).map((i) => i.Id),
    ];
    assert.deepEqual(left, [], 'nothing with the test label remains in the engine');
  });

  it('round-trips a tree through an engine volume over the archive API', async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const docker = engineClient();
    const rootfs = (await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' })).rootfs;
    const image = await engineImage(docker, rootfs, '/run/aegis');
    const src = fixture();
    const labels = { [LABEL_RUN]: RUN };
    const volume = `${RUN}-data`;
    await docker.createVolume({ Name: volume, Labels: labels });
    const container = await docker.createContainer({
      Image: image,
      Entrypoint: ['true'],
      Labels: labels,
      HostConfig: {
        NetworkMode: 'none',
        ReadonlyRootfs: true,
        Mounts: [{ Type: 'volume', Source: volume, Target: '/data', ReadOnly: false }],
        LogConfig: { Type: 'none', Config: {} },
      },
    });

    // Copy-in.
    const packed = await packTree(src);
    await container.putArchive(packed.stream, { path: '/data' });
    const counts = await packed.done;
    assert.equal(counts.entries, 14);

    // What the engine holds, as its archive says: the setuid bit and the large ids arrived.
    const headers = new Map<string, Header>();
    const ex = tar.extract();
    ((await container.getArchive({ path: '/data' })) as unknown as Readable).pipe(ex as unknown as NodeJS.WritableStream);
    for await (const e of ex) {
      headers.set(e.header.name, e.header);
      e.resume();
    }
    assert.equal((headers.get('data/run.sh')?.mode ?? 0) & 0o7777, 0o4755);
    assert.equal(headers.get('data/')?.type, 'directory', 'GET /data names entries data/...');
    assert.equal(headers.get('data/pkg/main-hard.py')?.type, 'link');

    // Copy-out, as the lead's remote mode does it.
    const dest = mkdtempSync(join(work, 'out-'));
    const result = await extractTree((await container.getArchive({ path: '/data' })) as unknown as Readable, dest, {
      top: 'data',
      maxBytes: 1 << 20,
      maxEntries: 100,
    });
    assert.deepEqual(result.skipped, ['fifo']);
    assert.equal(result.entries, counts.entries + 1, 'the top entry data/ as well');
    assert.equal(result.bytes, counts.bytes);

    const expected = describeTree(src, new Set(['fifo']));
    assert.deepEqual(describeTree(dest), expected);
    assert.equal(lstatSync(join(dest, 'run.sh')).mode & 0o7777, 0o755, 'no setuid bit on the way out');
    assert.equal(lstatSync(join(src, 'run.sh')).mode & 0o7777, 0o4755);

    // Docker's other naming: GET /data/. gives ./... (top '.').
    const dest2 = mkdtempSync(join(work, 'out-dot-'));
    await extractTree((await container.getArchive({ path: '/data/.' })) as unknown as Readable, dest2, {
      top: '.',
      maxBytes: 1 << 20,
      maxEntries: 100,
    });
    assert.deepEqual(describeTree(dest2), expected);

    // The bound holds against the real engine's archive too.
    const dest3 = mkdtempSync(join(work, 'out-small-'));
    await assert.rejects(
      extractTree((await container.getArchive({ path: '/data' })) as unknown as Readable, dest3, {
        top: 'data',
        maxBytes: 1000,
        maxEntries: 100,
      }),
      hasCode(SandboxError, 'sandbox.volume_refused'),
    );
  });
});
