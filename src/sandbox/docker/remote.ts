/**
 * The Docker backend on a REMOTE engine (I/O): an engine reached only over its API, which shares
 * none of this host's paths, cgroups or namespaces (Docker Desktop, an engine in a VM, a tcp://
 * engine; AegisConfig.dockerEngine). What the bundle would bind from this host is delivered
 * through the engine's archive API, the limits are the container's own HostConfig
 * (options.ts), and the usage is what the engine's stats report.
 *
 * ARCHITECTURE NOTE (delivery): per run,
 *  - every directory the bundle binds (the code directory, ro volumes, the staged filesystem of
 *    each rw volume) becomes an engine volume labelled with the run: ro ones plain local volumes,
 *    rw ones tmpfs volumes of the volume's size owned by the agent (so the agent's writes stop at
 *    the size, as on the staged filesystem of a local run);
 *  - a keeper container (options.ts keeperOptions: nobody, no capability, no network) holds them
 *    all mounted while the run lasts (a tmpfs volume lives while mounted), and each is filled
 *    through it with a tar of the host directory (transfer.ts packTree: owners, modes and links
 *    as they are);
 *  - the read-only files the bundle binds: the execution CA bundle is put into a never-started
 *    container of the image and committed as the run's own image (labelled with the run, removed
 *    with it); /etc/resolv.conf comes from the engine, made from the gateway container's DNS
 *    options (drivers/docker.ts); any other file is refused;
 *  - after the agent's container has ended, each rw volume is read back through the keeper
 *    (GET archive) into its staged filesystem on this host, with transfer.ts extractTree (the
 *    archive is the agent's: bounded by the volume's size, nothing outside the staged
 *    directory, no device, no set-id bit, links never followed); run.ts's copyBack then treats
 *    it exactly as a local run's. A volume whose copy-out fails is not copied back (the host
 *    folder keeps its contents from before the run).
 * Everything is removed with the run's containers (engine.ts removeRunContainers: containers,
 * volumes and images carrying the run's label; sweepEngine also removes those of a dead AEGIS).
 *
 * LIMITATION (usage): the engine's cgroups are out of reach, so cpu time, memory peak, CPU
 * throttling and the pids count come from its stats stream, sampled about once a second while the
 * agent runs (a run shorter than that may report 0), `oom` from the container's `OOMKilled`, and
 * a pids-limit hit only when a sample saw the count at the limit. The limits themselves are the
 * kernel's, exact.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import type { CgroupUsage } from '../cgroups/index.js';
import { SandboxError } from '../errors.js';
import { SANDBOX_CA_BUNDLE } from '../spec/compile.js';
import type { OciConfig } from '../spec/oci.js';
import {
  filesOptions,
  keeperOptions,
  keeperTarget,
  engineLabels,
  rwEngineBytes,
  rwEngineInodes,
  volumeOptions,
  type EngineMounts,
} from './options.js';
import { extractTree, packTree } from './transfer.js';

/** The copy-out's bounds: the longest path and the deepest tree, and its time. */
const COPY_OUT_MAX_PATH_BYTES = 1024;
const COPY_OUT_MAX_DEPTH = 128;
const COPY_OUT_TIMEOUT_MS = 10 * 60_000;

export interface RemoteDelivery {
  /** The image the agent's container is created from (the run's committed image, or the base). */
  readonly image: string;
  readonly mounts: Extract<EngineMounts, { kind: 'remote' }>;
  readonly keeper: string;
  /** When the keeper was started (its volumes' tmpfs mounts live since then); null when it was not started. */
  readonly keeperStartedAt: string | null;
  /** What was left out of the copies (sockets, devices), for the run's warnings. */
  readonly warnings: readonly string[];
  /** The rw volumes to read back: their staged directory on this host and size. */
  readonly rw: readonly { readonly n: number; readonly staged: string; readonly bytes: number; readonly inodes: number }[];
}

function engineError(what: string, err: unknown): SandboxError {
  if (err instanceof SandboxError) return err;
  const msg = (err as { json?: { message?: string } })?.json?.message ?? (err as Error)?.message ?? String(err);
  return new SandboxError('sandbox.start_failed', `Docker engine: ${what}: ${msg}`, { cause: err });
}

/** Awaits every promise (none is left running), then throws the first failure, if any. */
async function settleAll(ps: readonly Promise<void>[]): Promise<void> {
  const r = await Promise.allSettled(ps);
  const bad = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (bad !== undefined) throw bad.reason;
}

function sortedObject(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The data bytes (statfs: ext4 counts its own metadata out) and inodes of the staged filesystem at `dir`. */
function stagedCapacity(dir: string): { bytes: number; inodes: number } {
  try {
    const st = statfsSync(dir);
    // Totals, not what is free now: the read-back empties the staged filesystem first.
    return { bytes: st.blocks * st.bsize, inodes: st.files };
  } catch (err) {
    throw new SandboxError('sandbox.volume_failed', `cannot measure the staged volume ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/** A tar of single files (`files`: sandbox path -> content), root-owned 0644, for the run's image. */
function filesTar(files: ReadonlyMap<string, Buffer>): Readable {
  const pack = tar.pack();
  for (const [path, content] of files)
    pack.entry({ name: path.replace(/^\/+/, ''), mode: 0o644, uid: 0, gid: 0, mtime: new Date(0), type: 'file' }, content);
  pack.finalize();
  return pack as unknown as Readable;
}

/**
 * Creates the run's volumes, keeper and image and fills them from this host (see the note).
 * `rwSizes`: the size of each rw bind source (a staged filesystem). Throws SandboxError; what it
 * made carries the run's label and is removed with the run.
 */
export async function deliverRemote(
  docker: Docker,
  p: {
    id: string;
    config: OciConfig;
    baseImage: string;
    keeperImage: string;
    imageRootfs: string;
    owner: { pid: number; startTime: string; host?: string };
    agent: { uid: number; gid: number };
    rwSizes: ReadonlyMap<string, number>;
    /** The engine's `LiveRestoreEnabled` (docker info). */
    liveRestore: boolean;
  },
): Promise<RemoteDelivery> {
  const dirs: { n: number; name: string; source: string; destination: string; rw: boolean }[] = [];
  const files = new Map<string, Buffer>();
  const provided: string[] = [];
  for (const m of p.config.mounts) {
    if (m.type !== 'bind') continue;
    const ro = m.options.includes('ro');
    if (ro && m.source === p.imageRootfs + m.destination) continue;
    let st;
    try {
      st = statSync(m.source);
    } catch (err) {
      throw new SandboxError('sandbox.start_failed', `cannot read ${m.source} for the engine: ${(err as Error).message}`, { cause: err });
    }
    if (st.isDirectory()) {
      const n = dirs.length;
      dirs.push({ n, name: `${p.id}-v${n}-${randomBytes(6).toString('hex')}`, source: m.source, destination: m.destination, rw: !ro });
    } else if (ro && m.destination === '/etc/resolv.conf') {
      // Made by the engine from the gateway container's DNS options (drivers/docker.ts).
      provided.push(m.destination);
    } else if (ro && m.destination === SANDBOX_CA_BUNDLE && st.isFile() && st.size <= 4 * 1024 * 1024) {
      files.set(m.destination, readFileSync(m.source));
      provided.push(m.destination);
    } else
      throw new SandboxError('sandbox.docker_refused', `the file ${m.source} cannot be given to a remote engine (at ${m.destination})`);
  }
  // ARCHITECTURE NOTE: an engine with live-restore keeps containers running across its own
  // restart, but (Docker before 23.0.7 / 24.0.6, moby #46148) unmounts a tmpfs volume meanwhile:
  // the keeper would still run, unchanged, over an EMPTY volume, and the read-back would empty the
  // operator's folder. Without live-restore a restart stops the keeper, which the read-back
  // notices. So rw volumes are refused on such an engine.
  if (p.liveRestore && dirs.some((d) => d.rw))
    throw new SandboxError(
      'sandbox.docker_refused',
      "the Docker engine has live-restore on: an rw volume's contents could vanish with an engine restart unnoticed (disable live-restore, or use no rw volume)",
    );
  const engineSizes = new Map<string, { bytes: number; inodes: number }>();
  const makeVolume = async (d: (typeof dirs)[number]): Promise<void> => {
    const requested = d.rw ? p.rwSizes.get(d.source) : undefined;
    if (d.rw && requested === undefined)
      throw new SandboxError('sandbox.docker_refused', `the rw volume at ${d.destination} has no staged size`);
    let tmpfs: { bytes: number; inodes: number; uid: number; gid: number } | undefined;
    if (requested !== undefined) {
      const staged = stagedCapacity(d.source);
      tmpfs = { bytes: rwEngineBytes(staged.bytes, requested), inodes: rwEngineInodes(staged.inodes), ...p.agent };
      engineSizes.set(d.source, tmpfs);
    }
    const want = volumeOptions({ name: d.name, id: p.id, owner: p.owner, ...(tmpfs !== undefined ? { tmpfs } : {}) });
    const made = (await docker
      .createVolume(want)
      .then((v) => v.inspect())
      .catch((err: unknown) => {
        throw engineError(`volume ${d.name}`, err);
      })) as { Name?: string; Labels?: Record<string, string> | null; Options?: Record<string, string> | null };
    // The engine answers a create of an existing name with that volume, options ignored: it must
    // be the one just asked for (the name has a random part; this guards against it all the same).
    const sameLabels = JSON.stringify(sortedObject(made.Labels ?? {})) === JSON.stringify(sortedObject(want.Labels ?? {}));
    const sameOptions = JSON.stringify(sortedObject(made.Options ?? {})) === JSON.stringify(sortedObject(want.DriverOpts ?? {}));
    if (made.Name !== d.name || !sameLabels || !sameOptions)
      throw new SandboxError('sandbox.docker_refused', `the engine already had a volume named ${d.name} that AEGIS did not make: refused`);
  };
  await settleAll(dirs.map(makeVolume));
  const keeper = await docker
    .createContainer(keeperOptions({ id: p.id, image: p.keeperImage, volumes: dirs.map((d) => d.name), owner: p.owner }))
    .catch((err: unknown) => {
      throw engineError('keeper container', err);
    });
  // Started only to hold a tmpfs volume mounted (an rw volume); plain volumes keep their contents
  // and are filled through the created container alike.
  let keeperStartedAt: string | null = null;
  if (dirs.some((d) => d.rw)) {
    await keeper.start().catch((err: unknown) => {
      throw engineError('keeper container start', err);
    });
    const st = await keeper.inspect().catch((err: unknown) => {
      throw engineError('keeper container', err);
    });
    if (!st.State.Running) throw new SandboxError('sandbox.start_failed', 'Docker engine: the keeper container stopped at once');
    keeperStartedAt = st.State.StartedAt;
  }
  const warnings: string[] = [];
  const fill = async (d: (typeof dirs)[number]): Promise<void> => {
    const packed = await packTree(d.source);
    if (packed.skipped.length > 0)
      warnings.push(
        `${d.source} (at ${d.destination}): not copied to the remote engine (neither file, directory, link nor fifo): ${packed.skipped.slice(0, 10).join(', ')}`,
      );
    // Both must succeed: the engine took the archive, and the archive was whole (a file that
    // shrank while being read fails it rather than sending a corrupt tree).
    await Promise.all([keeper.putArchive(packed.stream, { path: keeperTarget(d.n) }), packed.done]).catch((err: unknown) => {
      packed.stream.destroy();
      throw engineError(`copying ${d.source} in`, err);
    });
  };
  await settleAll(dirs.map(fill));
  let image = p.baseImage;
  if (files.size > 0) {
    const c = await docker.createContainer(filesOptions({ id: p.id, image: p.baseImage, owner: p.owner })).catch((err: unknown) => {
      throw engineError('files container', err);
    });
    try {
      await c.putArchive(filesTar(files), { path: '/' });
      // Labelled with the run and its owner: removed with the run, or swept after a dead AEGIS.
      const changes = Object.entries(engineLabels(p.id, 'image', p.owner)).map(([k, v]) => `LABEL ${k}=${v}`);
      const committed = (await c.commit({ changes, pause: false })) as { Id: string };
      image = committed.Id;
    } catch (err) {
      throw engineError("the run's image", err);
    } finally {
      await c.remove({ force: true }).catch(() => undefined);
    }
  }
  return {
    image,
    mounts: { kind: 'remote', volumes: Object.fromEntries(dirs.map((d) => [d.destination, d.name])), provided },
    keeper: keeper.id,
    keeperStartedAt,
    warnings,
    rw: dirs.filter((d) => d.rw).map((d) => ({ n: d.n, staged: d.source, ...engineSizes.get(d.source)! })),
  };
}

/**
 * Reads each rw volume back into its staged directory (emptied first). `failed`: the staged
 * directories that could not be read back, with why (they must not be copied back); `warnings`:
 * entries left out (devices, sockets) of volumes that were.
 */
export async function collectRemote(docker: Docker, d: RemoteDelivery): Promise<{ failed: Map<string, string>; warnings: string[] }> {
  const failed = new Map<string, string>();
  const warnings: string[] = [];
  const keeper = docker.getContainer(d.keeper);
  const deadline = AbortSignal.timeout(COPY_OUT_TIMEOUT_MS);
  for (const v of d.rw) {
    try {
      // ARCHITECTURE NOTE: the volume must be the tmpfs the agent wrote, held mounted by the
      // keeper since its start. A keeper that stopped or was restarted (killed, the engine
      // restarted, OOM) let the tmpfs go: reading the volume now would mount a fresh, EMPTY one,
      // and copyBack would empty the operator's folder. So: not read back, the folder kept.
      const sameKeeper = async (): Promise<void> => {
        const st = await keeper.inspect();
        if (!st.State.Running || st.State.StartedAt !== d.keeperStartedAt || st.RestartCount !== 0)
          throw new Error('the keeper container that held the volume stopped during the run: its contents are gone');
      };
      await sameKeeper();
      if (!existsSync(v.staged)) throw new Error(`${v.staged} is gone`);
      for (const name of readdirSync(v.staged)) rmSync(join(v.staged, name), { recursive: true, force: true });
      const archive = (await keeper.getArchive({ path: keeperTarget(v.n) })) as unknown as Readable;
      const r = await extractTree(archive, v.staged, {
        top: String(v.n),
        maxBytes: v.bytes,
        // tmpfs counts every file, directory and hard link: the archive has at most that many entries, and its top.
        maxEntries: v.inodes + 16,
        maxPathBytes: COPY_OUT_MAX_PATH_BYTES,
        maxDepth: COPY_OUT_MAX_DEPTH,
        signal: deadline,
      });
      // Still the keeper that held it (it may have died while the archive was read).
      await sameKeeper();
      if (r.skipped.length > 0)
        warnings.push(`rw volume at ${v.staged}: not copied back (neither file, directory nor link): ${r.skipped.slice(0, 10).join(', ')}`);
    } catch (err) {
      failed.set(v.staged, `the agent's files could not be read back from the engine: ${(err as Error).message}`);
    }
  }
  return { failed, warnings };
}

/** What the engine's stats stream reported of one container (see the LIMITATION above). */
export class EngineStats {
  private stream: Readable | null = null;
  private stopped = false;
  private cpuNs = 0;
  private memory = 0;
  private maxMemory = 0;
  private pids = 0;
  private pidsAtLimit = false;
  private periods = 0;
  private throttled = 0;
  private readBytes = 0;
  private writeBytes = 0;
  oom = false;

  constructor(private readonly pidsLimit: number) {}

  /** Starts following `containerId`'s stats (call once it runs). */
  async follow(docker: Docker, containerId: string): Promise<void> {
    try {
      const s = (await docker.getContainer(containerId).stats({ stream: true })) as unknown as Readable;
      // Stopped while the engine answered (a short run): the stream is not kept open.
      if (this.stopped) {
        s.destroy();
        return;
      }
      this.stream = s;
      let buf = '';
      s.on('data', (b: Buffer) => {
        buf += b.toString();
        if (buf.length > 1 << 20) buf = '';
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.take(line);
        }
      });
      s.on('error', () => undefined);
    } catch {
      /* no stats: the usage stays 0 (LIMITATION above) */
    }
  }

  /** One stats object (the engine's JSON; untrusted shape: every field checked). */
  take(line: string): void {
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      return;
    }
    const num = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : 0);
    const o = v as {
      cpu_stats?: { cpu_usage?: { total_usage?: unknown }; throttling_data?: { periods?: unknown; throttled_periods?: unknown } };
      memory_stats?: { usage?: unknown; max_usage?: unknown; stats?: { cache?: unknown; inactive_file?: unknown } };
      pids_stats?: { current?: unknown };
      blkio_stats?: { io_service_bytes_recursive?: unknown };
    };
    if (typeof o !== 'object' || o === null) return;
    const cpu = num(o.cpu_stats?.cpu_usage?.total_usage);
    if (cpu === 0) return; // a stopped container's empty sample
    this.cpuNs = Math.max(this.cpuNs, cpu);
    this.periods = Math.max(this.periods, num(o.cpu_stats?.throttling_data?.periods));
    this.throttled = Math.max(this.throttled, num(o.cpu_stats?.throttling_data?.throttled_periods));
    const usage = num(o.memory_stats?.usage);
    this.memory = usage;
    this.maxMemory = Math.max(this.maxMemory, usage, num(o.memory_stats?.max_usage));
    this.pids = num(o.pids_stats?.current);
    if (this.pids >= this.pidsLimit) this.pidsAtLimit = true;
    const io = Array.isArray(o.blkio_stats?.io_service_bytes_recursive) ? (o.blkio_stats.io_service_bytes_recursive as unknown[]) : [];
    let r = 0;
    let w = 0;
    for (const e of io) {
      const x = e as { op?: unknown; value?: unknown };
      if (x.op === 'Read' || x.op === 'read') r += num(x.value);
      if (x.op === 'Write' || x.op === 'write') w += num(x.value);
    }
    this.readBytes = Math.max(this.readBytes, r);
    this.writeBytes = Math.max(this.writeBytes, w);
  }

  stop(): void {
    this.stopped = true;
    this.stream?.destroy();
    this.stream = null;
  }

  usage(): CgroupUsage {
    return {
      cpuMs: Math.round(this.cpuNs / 1e6),
      maxMemoryBytes: this.maxMemory,
      oom: this.oom,
      pidsLimitHit: this.pidsAtLimit,
      cpuPeriods: this.periods,
      cpuThrottledPeriods: this.throttled,
    };
  }

  sample(): { cpuMs: number; memoryBytes: number; pids: number; readBytes: number; writeBytes: number } {
    return {
      cpuMs: Math.round(this.cpuNs / 1e6),
      memoryBytes: this.memory,
      pids: this.pids,
      readBytes: this.readBytes,
      writeBytes: this.writeBytes,
    };
  }
}
