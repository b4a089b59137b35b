/**
 * `isolation: docker`: the same compiled bundle run by a Docker engine through its API
 * (dockerode; src/sandbox/docker/). run.ts does everything else as for the OCI runtimes: host
 * path checks, rw volumes, the run's cgroup with its limits (the engine makes the container's
 * cgroup below it: `cgroupMode: 'child'`), the time limit, usage, cleanup and the audit events.
 *
 * ARCHITECTURE NOTE (identity): an engine cannot join a user namespace per container (its
 * user-namespace remapping is daemon-wide and off by default), so adapt() drops the user
 * namespace and runs the agent as the very host ids the namespace would have mapped it to
 * (101000:101000, as runsc does behind the gateway): never root, never a host account, no
 * capabilities, no-new-privileges, seccomp. LIMITATION: the per-user kernel counters (inotify,
 * message queues, pending signals) are charged to host uid 101000, shared by every Docker
 * sandbox on the host (crun and runc give each sandbox an owner of its own, docs/sandbox.md).
 *
 * ARCHITECTURE NOTE (network): behind the egress gateway the agent joins either a holder
 * container that sits in the gateway's namespace on this host (`host-netns`), or a per-run
 * gateway container whose relay carries every flow over the engine's API to a dialer in that
 * namespace (`gateway-container`, docker/gateway.ts: no engine network, the one gateway on the
 * host decides). AegisConfig.dockerNetwork chooses (docker/host.ts).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release as kernelRelease } from 'node:os';
import { join } from 'node:path';
import type { Isolation } from '../../policy/types.js';
import type { ContainerProcess } from '../docker/engine.js';
import { dockerEngine, dockerHost, dockerNetwork, engineOnThisKernel, engineUnavailableReason } from '../docker/host.js';
import type { EngineStats, RemoteDelivery } from '../docker/remote.js';
import type { CgroupUsage, RunCgroup } from '../cgroups/index.js';
import { SandboxError } from '../errors.js';
import { DEFAULT_ID_MAP } from '../spec/compile.js';
import type { OciConfig } from '../spec/oci.js';
import type { RuntimeDriver, RuntimeRun } from './types.js';

/** Where the holder container gets AEGIS's holder program. */
const HOLDER_TARGET = '/aegis-netns-holder';

export interface DockerLaunch {
  readonly run: RuntimeRun;
  readonly config: OciConfig;
  readonly imageRootfs: string;
  readonly stateDir: string;
  readonly cgroupParent: string;
  readonly limits: { readonly memoryBytes: number; readonly cpuQuotaUs: number; readonly cpuPeriodUs: number; readonly pids: number };
  /** The size of each rw volume's staged filesystem, by its path (the bind source): a remote engine's tmpfs volumes get it. */
  readonly rwSizes?: ReadonlyMap<string, number>;
}

/** What run.ts reads of a run on a remote engine instead of this host's cgroup (docker/remote.ts). */
export interface EngineView {
  usage(): CgroupUsage;
  sample(): ReturnType<RunCgroup['sample']>;
  /** Signals the agent's container through the engine (its init); resolves when asked. */
  signal(sig: 'TERM' | 'KILL'): Promise<void>;
}

export class DockerDriver implements RuntimeDriver {
  readonly isolation: Isolation = 'docker';
  /** Not an executable: the engine is reached over its API (recorded in run records). */
  readonly binary = 'docker-engine-api';
  readonly cgroupMode = 'child' as const;
  readonly rlimitsInherited = false;
  private readonly engineSwept = new WeakSet<object>();
  /** The gateway relay's dialer of each run in gateway-container mode (ended with the run). */
  private readonly dialers = new Map<string, ChildProcess>();
  /** Runs on a remote engine: what was delivered, and the stats of the agent's container. */
  private readonly remote = new Map<string, { delivery: RemoteDelivery; stats: EngineStats }>();

  /** For a run on a remote engine: what its copies left out (run warnings); empty otherwise. */
  deliveryWarnings(runId: string): readonly string[] {
    return this.remote.get(runId)?.delivery.warnings ?? [];
  }

  /** For a run on a remote engine: its usage, samples and signals come from the engine; null otherwise. */
  engineView(runId: string): EngineView | null {
    const r = this.remote.get(runId);
    if (r === undefined) return null;
    return {
      usage: () => r.stats.usage(),
      sample: () => r.stats.sample(),
      signal: async (sig) => {
        const { engineClient } = await import('../docker/engine.js');
        const c = engineClient().getContainer(runId);
        await c.kill({ signal: `SIG${sig}` }).catch(async (err: unknown) => {
          // Fail secure: a KILL the engine did not take (other than "gone" or "not running")
          // removes the container outright, so the agent never outlives its time limit.
          const status = (err as { statusCode?: number }).statusCode;
          if (sig === 'KILL' && status !== 404 && status !== 409) await c.remove({ force: true }).catch(() => undefined);
        });
      },
    };
  }

  /**
   * For a run on a remote engine whose agent ran: its rw volumes read back into their staged
   * filesystems (before the containers are removed); `failed` ones must not be copied back.
   */
  async collectVolumes(r: Pick<RuntimeRun, 'id'>): Promise<{ failed: Map<string, string>; warnings: string[] } | null> {
    const remote = this.remote.get(r.id);
    if (remote === undefined) return null;
    const [{ engineClient }, { collectRemote }] = await Promise.all([import('../docker/engine.js'), import('../docker/remote.js')]);
    return collectRemote(engineClient(), remote.delivery);
  }

  /**
   * The network holder container's init lives in the run's cgroup too (when there is one); the
   * gateway container of gateway-container mode does not (its limits are its own).
   */
  pidsOverhead(config: OciConfig): number {
    if (dockerNetwork() === 'gateway-container') return 0;
    return config.linux.namespaces.some((n) => n.type === 'network' && n.path !== undefined) ? 1 : 0;
  }

  unavailableReason(): string | null {
    return engineUnavailableReason();
  }

  adapt(config: OciConfig): OciConfig {
    const u = config.process.user;
    const linux = config.linux;
    return {
      ...config,
      process: { ...config.process, user: { ...u, uid: DEFAULT_ID_MAP.hostBase + u.uid, gid: DEFAULT_ID_MAP.hostBase + u.gid } },
      linux: { ...linux, namespaces: linux.namespaces.filter((n) => n.type !== 'user'), uidMappings: [], gidMappings: [] },
    };
  }

  runArgs(): string[] {
    return [];
  }

  killArgs(): string[] | null {
    return null;
  }

  /** AEGIS's marker `<stateRoot>/<id>`: written before the engine is asked for anything of the run. */
  hasState(r: Pick<RuntimeRun, 'id' | 'stateRoot'>): boolean {
    return existsSync(join(r.stateRoot, r.id));
  }

  deleteArgs(): string[] {
    return [];
  }

  /** Removes the run's containers from the engine, then the marker; true when the engine still had any. */
  async removeContainers(r: Pick<RuntimeRun, 'id' | 'stateRoot'>): Promise<boolean> {
    const { engineClient, removeRunContainers } = await import('../docker/engine.js');
    this.remote.get(r.id)?.stats.stop();
    this.remote.delete(r.id);
    const had = await removeRunContainers(engineClient(), r.id);
    this.dialers.get(r.id)?.kill('SIGKILL');
    this.dialers.delete(r.id);
    rmSync(join(r.stateRoot, r.id), { force: true });
    return had;
  }

  /**
   * Imports (or checks) the image, makes the network holder when the bundle joins a namespace,
   * creates the agent's container, and starts it once run.ts listens (the returned process emits
   * 'spawn', then 'exit').
   */
  async launch(l: DockerLaunch): Promise<ContainerProcess> {
    // Loaded only for docker runs: the engine client is not needed by the other runtimes.
    const [e, { containerOptions, holderOptions }] = await Promise.all([import('../docker/engine.js'), import('../docker/options.js')]);
    const { engineClient, engineImage, NETNS_MOUNT, netnsHolderProgram, nsIdentity, ownerFacts, startContainer, ContainerProcess } = e;
    const { dnsOptions, limitsNotKept, missingLimitSupport } = await import('../docker/options.js');
    const docker = engineClient();
    const { run, config } = l;
    writeFileSync(join(run.stateRoot, run.id), '', { mode: 0o600 });
    const owner = ownerFacts();
    let info: { KernelVersion?: string; OperatingSystem?: string } & Record<string, unknown>;
    try {
      info = (await docker.info()) as typeof info;
    } catch (err) {
      throw new SandboxError('sandbox.runtime_unavailable', `Docker engine not reachable: ${(err as Error).message}`, { cause: err });
    }
    // ARCHITECTURE NOTE: a local engine gets this host's cgroup (the limits) and binds, and in
    // host-netns mode this host's gateway namespace; a remote one only what its API carries
    // (docker/remote.ts), with the network through a gateway container.
    const sameKernel = engineOnThisKernel(info, kernelRelease(), dockerHost());
    const wanted = dockerEngine();
    if (wanted === 'local' && dockerHost()?.startsWith('tcp://') === true)
      throw new SandboxError(
        'sandbox.docker_refused',
        `AEGIS_DOCKER_ENGINE=local, but the engine is reached over tcp:// (${dockerHost() ?? ''}): an engine over the network is used as a remote one (set remote or auto)`,
      );
    if (wanted === 'local' && !sameKernel)
      throw new SandboxError(
        'sandbox.docker_refused',
        `AEGIS_DOCKER_ENGINE=local, but the Docker engine runs on another kernel (${info.OperatingSystem ?? '?'} ${info.KernelVersion ?? '?'}): AEGIS's cgroup limits and binds would not apply there (use remote or auto: docs/sandbox.md)`,
      );
    const remote = wanted === 'remote' || !sameKernel;
    // A remote engine's options are the only limits: an engine that cannot enforce one is refused.
    const unsupported = remote ? missingLimitSupport(info as Record<string, unknown>) : [];
    if (unsupported.length > 0)
      throw new SandboxError(
        'sandbox.docker_refused',
        `the Docker engine cannot enforce ${unsupported.join(', ')} (docker info): refused rather than run without those limits`,
      );
    if (remote && dockerNetwork() === 'host-netns')
      throw new SandboxError(
        'sandbox.docker_refused',
        'AEGIS_DOCKER_NETWORK=host-netns needs an engine on this host (the engine is used as a remote one: use gateway-container or auto)',
      );
    // Once per process and engine: containers whose AEGIS owner died and whose run record is gone
    // too (the record sweep in state.ts handles those it knows, and audits them as run.lost). A
    // remote engine may be shared with other AEGIS hosts: only this host's objects are judged.
    if (!this.engineSwept.has(docker)) {
      this.engineSwept.add(docker);
      await e.sweepEngine(docker, remote).catch(() => undefined);
    }
    const mode = remote ? 'gateway-container' : dockerNetwork() === 'auto' ? 'host-netns' : dockerNetwork();
    const baseImage = await engineImage(docker, l.imageRootfs, l.stateDir, run.id);
    let image = baseImage;
    let delivery: RemoteDelivery | null = null;
    let stats: EngineStats | null = null;
    if (remote) {
      const [{ gatewayImage }, { deliverRemote, EngineStats: Stats }] = await Promise.all([
        import('../docker/gateway.js'),
        import('../docker/remote.js'),
      ]);
      delivery = await deliverRemote(docker, {
        id: run.id,
        config,
        baseImage,
        keeperImage: await gatewayImage(docker, l.stateDir),
        imageRootfs: l.imageRootfs,
        owner,
        agent: { uid: config.process.user.uid, gid: config.process.user.gid },
        rwSizes: l.rwSizes ?? new Map(),
        liveRestore: info['LiveRestoreEnabled'] === true,
      });
      image = delivery.image;
      stats = new Stats(l.limits.pids);
      this.remote.set(run.id, { delivery, stats });
    }
    const net = config.linux.namespaces.find((n) => n.type === 'network')?.path;
    let network: { kind: 'none' } | { kind: 'container'; holder: string } = { kind: 'none' };
    let beforeExit: (() => Promise<void>) | undefined;
    if (net !== undefined && mode === 'gateway-container') {
      const { gatewayImage, startGatewayContainer } = await import('../docker/gateway.js');
      const gwImage = await gatewayImage(docker, l.stateDir);
      const resolv = config.mounts.find((m) => m.type === 'bind' && m.destination === '/etc/resolv.conf')?.source;
      const gw = await startGatewayContainer(docker, {
        id: run.id,
        image: gwImage,
        netnsPath: net,
        // Remote: the engine writes the agent's resolv.conf from the gateway container's DNS options.
        ...(remote && resolv !== undefined ? { dns: dnsOptions(readFileSync(resolv, 'utf8')) } : {}),
        agentUid: config.process.user.uid,
        agentGid: config.process.user.gid,
        owner,
      });
      this.dialers.set(run.id, gw.dialer);
      // The refused attempts still to be replayed reach the gateway's counters before the run ends.
      beforeExit = () => gw.flush();
      network = { kind: 'container', holder: gw.containerId };
    } else if (net !== undefined) {
      const holder = await docker
        .createContainer(
          holderOptions({
            id: run.id,
            image,
            program: netnsHolderProgram(l.stateDir),
            programTarget: HOLDER_TARGET,
            netnsPath: net,
            netnsTarget: NETNS_MOUNT,
            hostname: config.hostname,
            cgroupParent: l.cgroupParent,
            owner,
          }),
        )
        .catch((err: unknown) => {
          throw new SandboxError('sandbox.start_failed', `Docker engine: network holder: ${(err as Error).message}`, { cause: err });
        });
      await holder.start();
      const want = nsIdentity(net);
      let joined = false;
      for (let i = 0; i < 100 && !joined; i++) {
        const st = (await holder.inspect()).State;
        if (st.Pid > 0 && want !== null && nsIdentity(`/proc/${st.Pid}/ns/net`) === want) joined = true;
        else if (!st.Running) break;
        else await new Promise((r) => setTimeout(r, 20));
      }
      if (!joined)
        throw new SandboxError(
          'sandbox.docker_refused',
          `the network holder did not join ${net}: the engine cannot reach this host's namespace`,
        );
      network = { kind: 'container', holder: holder.id };
    }
    const options = containerOptions(config, {
      id: run.id,
      image,
      imageRootfs: l.imageRootfs,
      ...(delivery === null ? { cgroupParent: l.cgroupParent } : { engine: delivery.mounts }),
      network,
      limits: l.limits,
      owner,
    });
    const created = await docker.createContainer(options).catch((err: unknown) => {
      throw new SandboxError('sandbox.start_failed', `Docker engine: create: ${(err as Error).message}`, { cause: err });
    });
    // The engine drops an option it cannot apply with a warning only: what it kept is checked.
    // (A local run's binding limits are its cgroup's: the engine's are a backstop there.)
    if (remote) {
      const kept = await created.inspect().catch((err: unknown) => {
        throw new SandboxError('sandbox.start_failed', `Docker engine: inspect of the new container: ${(err as Error).message}`, {
          cause: err,
        });
      });
      const dropped = limitsNotKept(options.HostConfig, kept.HostConfig);
      if (dropped.length > 0)
        throw new SandboxError(
          'sandbox.docker_refused',
          `the Docker engine did not keep ${dropped.join(', ')} as asked: refused rather than run weaker`,
        );
    }
    const proc = new ContainerProcess(created.id);
    if (stats !== null) {
      const s = stats;
      proc.once('spawn', () => void s.follow(docker, created.id));
      const flush = beforeExit;
      // Before 'exit': the gateway's last replays, then the engine's word on an OOM kill.
      beforeExit = async () => {
        await flush?.();
        const st = await docker
          .getContainer(created.id)
          .inspect()
          .catch(() => null);
        s.oom = st?.State?.OOMKilled === true;
        s.stop();
      };
    }
    // Started after run.ts has its listeners (the attach is a round trip at least).
    startContainer(docker, created.id, run.pidFile, proc, beforeExit, delivery === null).catch((err: unknown) => {
      const msg = (err as { json?: { message?: string } })?.json?.message ?? (err as Error).message;
      proc.stderr.write(`aegis: Docker engine could not start the container: ${msg}\n`);
      proc.stdout.end();
      proc.stderr.end();
      proc.emit('exit', 125, null);
    });
    return proc;
  }
}
