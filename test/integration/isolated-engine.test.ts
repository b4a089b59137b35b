/**
 * The isolated Docker engine (helpers/isolated-engine.ts), the harness of the Docker backend's
 * remote engine tests, does what they rely on: a host folder it hides is empty through its API
 * (the system engine, the control, shows the file), its containerd, shims and containers live in
 * its own mount and PID namespaces, it runs what AEGIS needs (an imported image, no network, a
 * read-only root, a named volume filled through the API, `container:<other>` network mode), and
 * `stop()` leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type Docker from 'dockerode';
import { resolveImage } from '../../src/images/index.js';
import { engineClient, engineImage, engineKey, storeImageOf } from '../../src/sandbox/docker/engine.js';
import { tarOf } from './images-support.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import {
  importIntoIsolatedEngine,
  isolatedEngineUnavailable,
  processesOfNamespace,
  startIsolatedEngine,
  sweepIsolatedEngines,
  type IsolatedEngine,
} from './helpers/isolated-engine.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** Creates, runs and removes a container of `image` running `cmd`; its exit code and output. */
async function runIn(
  docker: Docker,
  image: string,
  cmd: string[],
  hostConfig: Docker.HostConfig,
): Promise<{ code: number; out: string; err: string }> {
  const c = await docker.createContainer({
    Image: image,
    Entrypoint: cmd,
    AttachStdout: true,
    AttachStderr: true,
    HostConfig: { NetworkMode: 'none', ...hostConfig },
  });
  try {
    const stream = (await c.attach({ stream: true, stdout: true, stderr: true })) as unknown as NodeJS.ReadableStream;
    const out = new PassThrough();
    const err = new PassThrough();
    let o = '';
    let e = '';
    out.on('data', (b: Buffer) => void (o += b.toString()));
    err.on('data', (b: Buffer) => void (e += b.toString()));
    docker.modem.demuxStream(stream, out, err);
    const ended = new Promise<void>((r) => {
      stream.on('end', () => r());
      stream.on('close', () => r());
    });
    await c.start();
    const r = (await c.wait()) as { StatusCode: number };
    await Promise.race([ended, sleep(2000)]);
    return { code: r.StatusCode, out: o, err: e };
  } finally {
    await c.remove({ force: true }).catch(() => undefined);
  }
}

describe('isolated Docker engine (the remote engine tests harness)', { timeout: 300_000 }, () => {
  // Not under the engine folders' prefix (aegis-isoeng-): the harness sweeps those.
  const work = mkdtempSync('/var/tmp/aegis-isotest-');
  const hidden = join(work, 'hidden');
  let unavailable: string | null = null;
  let engine: IsolatedEngine | undefined;
  let iso: Docker;
  let rootfs = '';
  let image = '';
  let startMs = 0;
  let recordFile = '';
  let recordBefore: string | null = null;
  let recordAfter: string | null = null;

  before(async () => {
    unavailable = (await sandboxUnavailable('docker')) ?? isolatedEngineUnavailable();
    if (unavailable !== null) return;
    mkdirSync(hidden);
    writeFileSync(join(hidden, 'host-file'), 'seen only on the host\n');
    rootfs = (await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' })).rootfs;
    const t0 = Date.now();
    engine = await startIsolatedEngine({ hide: [hidden] });
    startMs = Date.now() - t0;
    process.stderr.write(`# isolated engine answered after ${startMs} ms (pid ${engine.pid}, ${engine.host})\n`);
    iso = engineClient(engine.host);
    // The store image, imported so that the system engine's import record stays as it is.
    const store = storeImageOf(rootfs);
    assert.ok(store !== null, rootfs);
    recordFile = join(store.store, '..', 'docker-images', await engineKey(engineClient()), store.digest);
    recordBefore = readOrNull(recordFile);
    const t1 = Date.now();
    image = await importIntoIsolatedEngine(engine, rootfs);
    recordAfter = readOrNull(recordFile);
    process.stderr.write(`# python:3.11 imported into it in ${Date.now() - t1} ms\n`);
  });
  after(async () => {
    try {
      await engine?.stop();
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('a bind of a hidden host folder shows it empty, while the system engine shows its file', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const through = await runIn(iso, image, ['ls', '-A', '/d'], { Binds: [`${hidden}:/d:ro`] });
    assert.equal(through.code, 0, through.err);
    assert.equal(through.out, '', 'the isolated engine sees the hidden folder empty');
    // Control: the same container on the system engine sees the host's folder.
    const system = engineClient();
    const sysImage = await engineImage(system, rootfs, '/run/aegis');
    const control = await runIn(system, sysImage, ['ls', '-A', '/d'], { Binds: [`${hidden}:/d:ro`] });
    assert.equal(control.code, 0, control.err);
    assert.equal(control.out, 'host-file\n');
  });

  it("imports a store image without touching the system engine's import record", (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    assert.equal(recordAfter, recordBefore, recordFile);
    assert.match(image, /^sha256:[0-9a-f]{64}$/);
    if (recordBefore !== null) assert.notEqual((JSON.parse(recordBefore) as { engineId: string }).engineId, image);
  });

  it("runs its own containerd, shims and containers in its own mount and PID namespaces, not the system engine's", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const e = engine!;
    assert.notEqual(e.mountNamespace, readlinkSync('/proc/self/ns/mnt'));
    assert.notEqual(e.pidNamespace, readlinkSync('/proc/self/ns/pid'));
    const holder = await iso.createContainer({ Image: image, Entrypoint: ['sleep', '600'], HostConfig: { NetworkMode: 'none' } });
    try {
      await holder.start();
      const procs = processesOfNamespace(e.pidNamespace);
      const ns = (p: number): string => readlinkSync(`/proc/${p}/ns/mnt`);
      const containerd = procs.filter((p) => readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'containerd');
      assert.equal(containerd.length, 1, 'dockerd started its own containerd');
      assert.ok(cmdline(containerd[0]!).includes(e.dir), cmdline(containerd[0]!));
      assert.equal(ns(containerd[0]!), e.mountNamespace);
      const shims = procs.filter((p) => cmdline(p).includes(`containerd-shim-runc-v2 -namespace`) && cmdline(p).includes(holder.id));
      assert.equal(shims.length, 1, 'the holder has one shim, in the engine');
      assert.equal(ns(shims[0]!), e.mountNamespace, "the shim resolves bind sources in the engine's view");
      const sleeper = procs.find((p) => cmdline(p) === 'sleep 600 ');
      assert.ok(sleeper !== undefined, 'the container runs below the engine');
      // The container's cgroup is under the engine's own parent, not the system engine's /docker.
      const cg = readFileSync(`/proc/${sleeper}/cgroup`, 'utf8');
      assert.match(cg, new RegExp(`:memory:${e.cgroupParent}/${holder.id}\\n`));
      // The pid the engine reports is in its namespace, not this host's.
      const info = await holder.inspect();
      assert.notEqual(info.State.Pid, sleeper);
      // Its own identity: dockerd's ID key (/etc/docker/key.json) is the system engine's only if it reads the host's /etc/docker.
      const systemId = ((await engineClient().info()) as { ID: string }).ID;
      assert.notEqual(((await iso.info()) as { ID: string }).ID, systemId);
    } finally {
      await holder.remove({ force: true });
    }
  });

  it("runs read-only without network, with a named volume filled through the API, and in another container's network namespace", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const volume = 'aegis-isotest-data';
    await iso.createVolume({ Name: volume });
    const holder = await iso.createContainer({ Image: image, Entrypoint: ['sleep', '600'], HostConfig: { NetworkMode: 'none' } });
    const writer = await iso.createContainer({
      Image: image,
      Entrypoint: ['true'],
      HostConfig: { NetworkMode: 'none', ReadonlyRootfs: true, Binds: [`${volume}:/data`] },
    });
    try {
      await holder.start();
      // putArchive into the volume through a created (never started) read-only container.
      await writer.putArchive(await tarOf([{ name: 'hello.txt', content: 'through the API\n' }]), { path: '/data' });
      const read = await runIn(
        iso,
        image,
        ['sh', '-c', 'cat /data/hello.txt; readlink /proc/self/ns/net; touch /x 2>/dev/null || echo ro'],
        {
          NetworkMode: `container:${holder.id}`,
          ReadonlyRootfs: true,
          Binds: [`${volume}:/data:ro`],
        },
      );
      assert.equal(read.code, 0, read.err);
      const [content, netns, ro] = read.out.split('\n');
      assert.equal(content, 'through the API');
      assert.equal(ro, 'ro', 'the root filesystem is read-only');
      const exec = await holder.exec({ Cmd: ['readlink', '/proc/self/ns/net'], AttachStdout: true, AttachStderr: true });
      const stream = (await exec.start({ hijack: true, stdin: false })) as unknown as NodeJS.ReadableStream;
      const out = new PassThrough();
      let holderNs = '';
      out.on('data', (b: Buffer) => void (holderNs += b.toString()));
      iso.modem.demuxStream(stream, out, new PassThrough());
      await Promise.race([new Promise<void>((r) => stream.on('end', () => r())), sleep(10_000)]);
      assert.match(netns ?? '', /^net:\[[0-9]+\]$/);
      assert.equal(netns, holderNs.trim(), "the reader is in the holder's network namespace");
      // NetworkMode none: only the loopback interface.
      const ifaces = await runIn(iso, image, ['ls', '/sys/class/net'], { NetworkMode: 'none' });
      assert.equal(ifaces.out, 'lo\n');
    } finally {
      await writer.remove({ force: true }).catch(() => undefined);
      await holder.remove({ force: true }).catch(() => undefined);
      await iso.getVolume(volume).remove();
    }
  });

  it('stop() leaves no process, socket, folder, cgroup or mount behind', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const e = engine!;
    // Something running when it stops: a container, a volume.
    await iso.createVolume({ Name: 'aegis-isotest-left' });
    const c = await iso.createContainer({ Image: image, Entrypoint: ['sleep', '600'], HostConfig: { NetworkMode: 'none' } });
    await c.start();
    assert.ok(processesOfNamespace(e.pidNamespace).length >= 4, 'dockerd, containerd, a shim and the container run');
    const socket = e.host.slice('unix://'.length);
    assert.ok(existsSync(socket));
    const cgroups = ['memory', 'pids', 'cpu', 'unified'].map((h) => join('/sys/fs/cgroup', h, e.cgroupParent));
    assert.ok(existsSync(cgroups[0]!), 'the engine made its cgroup parent');
    await e.stop();
    assert.deepEqual(processesOfNamespace(e.pidNamespace), []);
    assert.ok(!existsSync(`/proc/${e.pid}`) || readFileSync(`/proc/${e.pid}/comm`, 'utf8').trim() !== 'dockerd');
    assert.ok(!existsSync(socket), 'the socket is gone');
    assert.ok(!existsSync(e.dir), 'the folder is gone');
    for (const d of cgroups) assert.ok(!existsSync(d), `${d} is gone`);
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(e.dir), 'no mount of the engine is left on the host');
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes('aegis-isoeng-hidden'), 'no hiding tmpfs on the host');
    // The hidden folder itself is untouched on the host.
    assert.equal(readFileSync(join(hidden, 'host-file'), 'utf8'), 'seen only on the host\n');
    await e.stop(); // idempotent
  });
});

describe('isolated Docker engine left by a killed test process', { timeout: 120_000 }, () => {
  it('is torn down by the next sweep (no process, folder or cgroup of it is left)', async (t) => {
    if (!requireOrSkip(t, (await sandboxUnavailable('docker')) ?? isolatedEngineUnavailable())) return;
    const helper = new URL('./helpers/isolated-engine.js', import.meta.url).href;
    // A test process that starts an engine and is SIGKILLed before its stop().
    const owner = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import(${JSON.stringify(helper)}); const e = await m.startIsolatedEngine({ hide: [] });` +
          'console.log(JSON.stringify({ dir: e.dir, ns: e.pidNamespace, cg: e.cgroupParent })); setInterval(() => {}, 1000);',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let line = '';
    const timer = setTimeout(() => owner.kill('SIGKILL'), 60_000);
    const started = await new Promise<{ dir: string; ns: string; cg: string } | null>((resolve) => {
      owner.stdout.on('data', (b: Buffer) => {
        line += b.toString();
        if (line.includes('\n')) resolve(JSON.parse(line) as { dir: string; ns: string; cg: string });
      });
      owner.once('exit', () => resolve(null));
    });
    clearTimeout(timer);
    assert.ok(started !== null, 'the owner started an engine');
    owner.kill('SIGKILL');
    await new Promise((r) => (owner.exitCode !== null || owner.signalCode !== null ? r(null) : owner.once('exit', r)));
    // Its owner is dead; the engine lives on (its own session), until the sweep.
    assert.ok(processesOfNamespace(started.ns).length >= 2, 'the engine outlived its owner');
    assert.ok(existsSync(started.dir));
    await sweepIsolatedEngines();
    assert.deepEqual(processesOfNamespace(started.ns), []);
    assert.ok(!existsSync(started.dir), 'its folder is gone');
    assert.ok(!existsSync(join('/sys/fs/cgroup/memory', started.cg)), 'its cgroups are gone');
  });
});
