/**
 * The Docker backend's I/O: the engine client (dockerode over the engine's API socket, never the
 * `docker` CLI), images from AEGIS's store imported under a name carrying their digest and
 * checked before each run, the network holder, the agent's container as a process-like object
 * for run.ts, and removal (also of what a killed AEGIS left: every container carries the run id
 * and its owner's pid and start time as labels).
 *
 * ARCHITECTURE NOTE (where this holds): the container's limits live in a cgroup below the run's
 * cgroup AEGIS owns on this host, the holder joins a network namespace of this host, and binds
 * name host paths: the engine must share this host's kernel and filesystem (a local engine on
 * Linux). `checkLocalEngine` verifies it through the holder (its /proc entry must be the
 * gateway's namespace) and through the container's cgroup, and refuses otherwise
 * (`sandbox.docker_refused`). Docker Desktop (an engine in a VM) is therefore refused, not run
 * weaker; docs/sandbox.md says what it would take.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createReadStream, linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import Docker from 'dockerode';
import { findExecutable } from '../../host/exec.js';
import { processStartTime } from '../../host/pid-lock.js';
import { SandboxError } from '../errors.js';
import { DEFAULT_DOCKER_SOCKET, dockerHost, dockerOwnerHostFile, dockerTls, type EngineTls, onDockerHostChange } from './host.js';
import { LABEL_IMAGE_DIGEST, LABEL_OWNER_HOST, LABEL_OWNER_PID, LABEL_OWNER_START, LABEL_RUN } from './options.js';
import { NETNS_MOUNT, netnsHolderElf } from './netns-holder-elf.js';

export { DEFAULT_DOCKER_SOCKET, engineUnavailableReason, useDockerHost } from './host.js';
/** The engine's image repository for AEGIS's images: `aegis-image:<64 hex digest>`. */
export const IMAGE_REPO = 'aegis-image';
const API_TIMEOUT_MS = 30_000;

const clients = new Map<string, Docker>();
onDockerHostChange(() => clients.clear());
/**
 * A client for `host` (`unix:///path` or `tcp://h:p`, with `tls` over HTTPS); options are
 * explicit, so dockerode reads no environment. With TLS the engine's certificate is verified
 * against `tls.ca` and the host name (Node's defaults, never turned off), and AEGIS presents
 * `tls.cert`/`tls.key`.
 */
export function engineClient(
  host: string | undefined = dockerHost(),
  tls: EngineTls | undefined = host === dockerHost() ? dockerTls() : undefined,
): Docker {
  const key = `${host ?? ''}\0${tls?.ca ?? ''}\0${tls?.cert ?? ''}\0${tls?.key ?? ''}`;
  let c = clients.get(key);
  if (c === undefined) {
    if (host === undefined || host.startsWith('unix://')) {
      c = new Docker({ socketPath: host === undefined ? DEFAULT_DOCKER_SOCKET : host.slice('unix://'.length), timeout: API_TIMEOUT_MS });
    } else {
      const u = new URL(host);
      const port = Number(u.port);
      const hostname = u.hostname.replace(/^\[|\]$/g, '');
      if (tls === undefined) c = new Docker({ protocol: 'http', host: hostname, port, timeout: API_TIMEOUT_MS });
      else {
        let material: { ca: Buffer; cert: Buffer; key: Buffer };
        try {
          material = { ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
        } catch (err) {
          throw new SandboxError('sandbox.runtime_unavailable', `Docker engine TLS material: ${(err as Error).message}`, { cause: err });
        }
        c = new Docker({ protocol: 'https', host: hostname, port, ...material, timeout: API_TIMEOUT_MS });
      }
    }
    clients.set(key, c);
  }
  return c;
}

function engineError(what: string, err: unknown): SandboxError {
  const msg = (err as { json?: { message?: string } })?.json?.message ?? (err as Error)?.message ?? String(err);
  return new SandboxError('sandbox.start_failed', `Docker engine: ${what}: ${msg}`, { cause: err });
}

/** The store and digest of an image root (`<store>/sha256/<hex>/rootfs`), or null for another folder. */
export function storeImageOf(rootfs: string): { store: string; digest: string } | null {
  const m = /^(\/.*)\/sha256\/([0-9a-f]{64})\/rootfs\/?$/.exec(rootfs);
  return m === null ? null : { store: m[1]!, digest: m[2]! };
}

/** Deterministic tar of `rootfs` (sorted, numeric owners, fixed mtime) into `file`; returns its sha256. */
async function tarRootfs(rootfs: string, file: string): Promise<string> {
  const tar = findExecutable('tar');
  if (tar === null) throw new SandboxError('sandbox.runtime_unavailable', 'tar is not installed');
  const args = ['--sort=name', '--numeric-owner', '--xattrs', '--mtime=@0', '-C', rootfs, '-cf', file, '.'];
  await new Promise<void>((resolve, reject) => {
    const child = spawn(tar, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new SandboxError('sandbox.start_failed', `tar of the image ${rootfs} failed (${code}): ${err.slice(-500)}`));
    });
  });
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

interface ImportRecord {
  readonly engineId: string;
  readonly layer: string;
}

/**
 * The engine's image id for `rootfs`, imported if needed. A store image is imported once per
 * engine as `aegis-image:<its digest>`; another folder (tests) as `aegis-image:<sha256 of its
 * tar>` each run. Checked before each run: the name must resolve to the very image AEGIS imported
 * (its engine id, recorded host-wide next to the store in the private
 * `<store>/../docker-images/<engine>/<digest>` (0700 directories, 0600 files of the user running
 * AEGIS; `<engine>` names the engine by its ID, so two engines never overwrite each other's), whose
 * single layer is the sha256 of the tar AEGIS sent) and carry the digest label; otherwise it is
 * imported again. The container is then created from the engine id, never the name.
 */
export async function engineImage(docker: Docker, rootfs: string, stateDir: string, runId?: string): Promise<string> {
  const store = storeImageOf(rootfs);
  const dir = store !== null ? join(store.store, '..', 'docker-images', await engineKey(docker)) : join(stateDir, 'docker', 'images');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const storeDigest = store?.digest ?? null;
  const rec = storeDigest !== null ? readImportRecord(join(dir, storeDigest)) : null;
  if (storeDigest !== null && rec !== null && (await imageMatches(docker, storeDigest, rec))) return rec.engineId;
  const tarFile = join(dir, `.import-${process.pid}.tar`);
  try {
    const layer = await tarRootfs(rootfs, tarFile);
    const digest = storeDigest ?? layer;
    const previous = await docker
      .getImage(`${IMAGE_REPO}:${digest}`)
      .inspect()
      .then((i) => i.Id)
      .catch(() => null);
    const stream = (await docker.importImage(tarFile, {
      repo: IMAGE_REPO,
      tag: digest,
      // A folder outside the store is the run's own: labelled with it, removed with its containers.
      changes: [
        `LABEL ${LABEL_IMAGE_DIGEST}=${digest}`,
        ...(storeDigest === null && runId !== undefined ? [`LABEL ${LABEL_RUN}=${runId}`] : []),
      ],
    } as object)) as Readable;
    await new Promise<void>((resolve, reject) =>
      docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(engineError('image import', err)) : resolve())),
    );
    const info = await docker.getImage(`${IMAGE_REPO}:${digest}`).inspect();
    if (info.RootFS?.Layers?.length !== 1 || info.RootFS.Layers[0] !== `sha256:${layer}`)
      throw new SandboxError('sandbox.start_failed', `Docker engine: the imported image's layer is not the tar AEGIS sent (${digest})`);
    const fresh: ImportRecord = { engineId: info.Id, layer: `sha256:${layer}` };
    const tmp = join(dir, `.${digest}.${process.pid}`);
    writeFileSync(tmp, JSON.stringify(fresh), { mode: 0o600 });
    renameSync(tmp, join(dir, digest));
    // What the name carried before (someone else's image, or AEGIS's earlier import whose check
    // failed), and AEGIS's recorded import: removed unless a container still uses them.
    for (const old of new Set([previous, rec?.engineId ?? null]))
      if (old !== null && old !== info.Id)
        await docker
          .getImage(old)
          .remove()
          .catch(() => undefined);
    return info.Id;
  } catch (err) {
    throw err instanceof SandboxError ? err : engineError('image import', err);
  } finally {
    rmSync(tarFile, { force: true });
  }
}

const engineKeys = new WeakMap<Docker, Promise<string>>();
/**
 * A short name of the engine `docker` talks to, from the ID it reports (GET /info): the folder of
 * its import records. Throws a SandboxError when the engine does not answer or has no ID.
 */
export function engineKey(docker: Docker): Promise<string> {
  let k = engineKeys.get(docker);
  if (k === undefined) {
    k = (docker.info() as Promise<{ ID?: unknown }>).then(
      (info) => {
        if (typeof info.ID !== 'string' || info.ID === '') throw new SandboxError('sandbox.start_failed', 'Docker engine: /info has no ID');
        return createHash('sha256').update(info.ID).digest('hex').slice(0, 16);
      },
      (err: unknown) => {
        engineKeys.delete(docker);
        throw engineError('info', err);
      },
    );
    engineKeys.set(docker, k);
  }
  return k;
}

function readImportRecord(path: string): ImportRecord | null {
  try {
    const st = statSync(path);
    const dir = statSync(join(path, '..'));
    const me = process.geteuid?.() ?? 0;
    if (st.uid !== me || (st.mode & 0o077) !== 0 || dir.uid !== me || (dir.mode & 0o077) !== 0) return null;
    const v = JSON.parse(readFileSync(path, 'utf8')) as Partial<ImportRecord>;
    return typeof v.engineId === 'string' && /^sha256:[0-9a-f]{64}$/.test(v.engineId) && typeof v.layer === 'string'
      ? { engineId: v.engineId, layer: v.layer }
      : null;
  } catch {
    return null;
  }
}

async function imageMatches(docker: Docker, digest: string, rec: ImportRecord): Promise<boolean> {
  try {
    const info = await docker.getImage(`${IMAGE_REPO}:${digest}`).inspect();
    return (
      info.Id === rec.engineId &&
      info.Config?.Labels?.[LABEL_IMAGE_DIGEST] === digest &&
      info.RootFS?.Layers?.length === 1 &&
      info.RootFS.Layers[0] === rec.layer
    );
  } catch {
    return false;
  }
}

/** Writes the netns holder program to `<stateDir>/bin/aegis-netns-holder` (0755: the engine's runc reads it as root). */
export function netnsHolderProgram(stateDir: string): string {
  const dir = join(stateDir, 'bin');
  const path = join(dir, 'aegis-netns-holder');
  const elf = netnsHolderElf();
  try {
    if (readFileSync(path).equals(elf)) return path;
  } catch {
    /* written below */
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}`;
  writeFileSync(tmp, elf, { mode: 0o755 });
  renameSync(tmp, path);
  return path;
}
export { NETNS_MOUNT };

/** Device and inode of a namespace file (for the locality check). */
export function nsIdentity(path: string): string | null {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

let ownerHost: { file: string; id: string } | undefined;
/**
 * This AEGIS host's owner id (16 random bytes, hex), kept in `file` (0600; made once, atomically;
 * a file that is not such an id is replaced): labels its engine objects, so that on an engine
 * shared by several hosts each sweeps only its own. Undefined when no file is configured.
 */
export function ownerHostId(file: string | undefined = dockerOwnerHostFile()): string | undefined {
  if (file === undefined) return undefined;
  if (ownerHost?.file === file) return ownerHost.id;
  const valid = (t: string | null): t is string => t !== null && /^[0-9a-f]{32}$/.test(t);
  let id: string | null = null;
  try {
    id = readFileSync(file, 'utf8').trim();
  } catch {
    id = null;
  }
  if (!valid(id)) {
    try {
      id = makeOwnerHostId(file, valid);
    } catch {
      // No id can be kept (AEGIS_HOME not writable): the objects are labelled as before, without a host.
      return undefined;
    }
  }
  ownerHost = { file, id };
  return id;
}

function makeOwnerHostId(file: string, valid: (t: string | null) => t is string): string {
  {
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, randomBytes(16).toString('hex') + '\n', { mode: 0o600 });
    try {
      // The first writer wins: link() fails when the file exists (another process made it).
      linkSync(tmp, file);
    } catch {
      try {
        if (!valid(readFileSync(file, 'utf8').trim())) renameSync(tmp, file);
      } catch {
        renameSync(tmp, file);
      }
    } finally {
      rmSync(tmp, { force: true });
    }
    const id = readFileSync(file, 'utf8').trim();
    if (!valid(id)) throw new SandboxError('sandbox.start_failed', `${file} does not hold an owner id`);
    return id;
  }
}

/** The owner labels of this process (pid + start time: a reused pid is not mistaken for it; the host when known). */
export function ownerFacts(): { pid: number; startTime: string; host?: string } {
  const host = ownerHostId();
  return { pid: process.pid, startTime: processStartTime(process.pid) ?? '', ...(host !== undefined ? { host } : {}) };
}

/**
 * The agent's container as run.ts supervises a runtime process: `stdin`, `stdout`, `stderr`,
 * `pid` (the container's init on this host), 'spawn' once started, 'exit' (code, null) when the
 * engine reports its end, 'error' when it could not be started.
 */
export class ContainerProcess extends EventEmitter {
  readonly stdin = new PassThrough();
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  pid: number | undefined;
  constructor(readonly containerId: string) {
    super();
  }
}

/**
 * Attach, start and wait: the streams are attached before the start (nothing is lost), the
 * container's host pid is written to `pidFile` once it runs (run.ts's run.start), and 'exit'
 * carries the engine's exit code (after `beforeExit`, e.g. the gateway relay's last replays).
 */
export async function startContainer(
  docker: Docker,
  containerId: string,
  pidFile: string,
  proc: ContainerProcess,
  beforeExit?: () => Promise<void>,
  hostPid = true,
): Promise<void> {
  const c = docker.getContainer(containerId);
  const stream = (await c.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as unknown as Writable &
    Readable & { end(): void };
  docker.modem.demuxStream(stream, proc.stdout, proc.stderr);
  stream.on('error', () => undefined);
  // Listened for from the attach on (a short-lived container may end it before start() returns).
  // The engine ends the attach stream after the container's last output: exit is reported after it
  // (bounded, should the engine keep the connection open).
  const drained = new Promise<void>((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
  // stdin: what run.ts pumps in goes to the container; its end closes the container's stdin (StdinOnce).
  proc.stdin.pipe(stream);
  const waited = c.wait({ condition: 'next-exit' }) as Promise<{ StatusCode: number }>;
  await c.start();
  // Started: the engine's runtime has executed the entrypoint (a missing one fails start()).
  // The pid is the container's init on this host; 0 when it has already exited again.
  // A remote engine's pids are its own kernel's, meaningless here: 0.
  const info = hostPid ? await c.inspect().catch(() => null) : null;
  proc.pid = info !== null && info.State.Pid > 0 ? info.State.Pid : 0;
  writeFileSync(pidFile, String(proc.pid), { mode: 0o600 });
  proc.emit('spawn');
  void waited.then(
    async (r) => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
      clearTimeout(timer);
      await beforeExit?.().catch(() => undefined);
      stream.destroy();
      proc.stdout.end();
      proc.stderr.end();
      proc.emit('exit', r.StatusCode, null);
    },
    (err: unknown) => {
      stream.destroy();
      proc.stdout.end();
      proc.stderr.end();
      proc.emit('error', err instanceof Error ? err : new Error(String(err)));
    },
  );
}

/**
 * Force-removes every container of run `id` (holder included), then the image imported for it
 * alone (a root outside the store); true when there was any container.
 */
export async function removeRunContainers(docker: Docker, id: string): Promise<boolean> {
  const gone = (err: unknown): void => {
    if ((err as { statusCode?: number }).statusCode !== 404) throw err;
  };
  const list = await docker.listContainers({ all: true, filters: { label: [`${LABEL_RUN}=${id}`] } });
  for (const c of list) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(gone);
  const images = await docker.listImages({ filters: { label: [`${LABEL_RUN}=${id}`] } });
  for (const i of images) await docker.getImage(i.Id).remove({ force: true }).catch(gone);
  // A remote run's volumes (docker/remote.ts), after the containers that used them.
  const volumes = (await docker.listVolumes({ filters: { label: [`${LABEL_RUN}=${id}`] } })).Volumes ?? [];
  for (const v of volumes) await docker.getVolume(v.Name).remove().catch(gone);
  return list.length > 0 || volumes.length > 0;
}

/**
 * Removes containers whose AEGIS owner is gone (pid dead, or reused: start time differs) and
 * returns their run ids. The run records' sweep (state.ts) handles runs it knows; this one also
 * finds containers whose record was already removed.
 */
export async function sweepEngine(docker: Docker, shared = false): Promise<string[]> {
  // On an engine other hosts may share (a remote one), an object of another AEGIS host is not
  // this host's to judge: its owner pid means something only there. Objects without the label
  // (older AEGIS) are judged by their pid, as before.
  const me = ownerHostId();
  // An object whose AEGIS owner is gone (pid dead, or reused: start time differs) and, on a
  // shared engine, that this host owns (or no host claims).
  const sweepable = (labels: Record<string, string> | null | undefined): boolean => {
    const host = labels?.[LABEL_OWNER_HOST];
    if (shared && host !== undefined && host !== me) return false;
    const pid = Number(labels?.[LABEL_OWNER_PID]);
    const start = labels?.[LABEL_OWNER_START] ?? '';
    return !(Number.isInteger(pid) && pid > 0 && start !== '' && processStartTime(pid) === start);
  };
  const gone: string[] = [];
  for (const c of await docker.listContainers({ all: true, filters: { label: [LABEL_OWNER_PID] } })) {
    if (!sweepable(c.Labels)) continue;
    await docker
      .getContainer(c.Id)
      .remove({ force: true, v: true })
      .catch(() => undefined);
    gone.push(c.Labels[LABEL_RUN] ?? c.Id);
  }
  // Then what those runs made besides containers: volumes and the runs' own images.
  for (const v of (await docker.listVolumes({ filters: { label: [LABEL_OWNER_PID] } })).Volumes ?? [])
    if (sweepable(v.Labels))
      await docker
        .getVolume(v.Name)
        .remove()
        .catch(() => undefined);
  for (const i of await docker.listImages({ filters: { label: [LABEL_OWNER_PID] } }))
    if (sweepable(i.Labels))
      await docker
        .getImage(i.Id)
        .remove({ force: true })
        .catch(() => undefined);
  return gone;
}
