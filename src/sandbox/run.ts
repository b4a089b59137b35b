/**
 * The run lifecycle, as the CLI and the server call it: `runSandbox(opts)` compiles the policy
 * into a bundle, sets up the run's cgroup, runs the agent on the chosen runtime, enforces the
 * timeout, reports what happened and removes everything it created.
 *
 * Three phases, each a function: `start` (host-path checks in host-paths.ts, run record, user
 * namespace holder, rw volumes, bundle, cgroup, spawn; every resource recorded in RunResources),
 * `supervise` (streams, run.spawn/run.start, time limit, abort), then finish (RunResources.release,
 * output drained, `classifyExit` in exit.ts, the closing audit events).
 *
 * A prepared sandbox (the orchestrator's warm pools) runs the same phases split in time:
 * `prepareSandbox` = start with the shim (shim.ts) as the container's process, which waits for
 * its input; `launchPrepared` = the input line, then supervise and finish as here.
 *
 * Never throws for a run that went wrong: the result says `failed_to_start` and carries the
 * SandboxError. Fail secure: any error before the runtime is spawned (volumes, code dir,
 * seccomp, cgroup limits, bundle) means the agent does not start.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, watch, type FSWatcher } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import { findExecutable } from '../host/exec.js';
import type { Monitor, MonitorSession, MonitorTarget } from '../monitor/index.js';
import { refusedByProfile } from '../monitor/program.js';
import { processStartTime } from '../host/pid-lock.js';
import type { Isolation, Policy } from '../policy/types.js';
import { ensureSkeleton, scanImage, writeBundle } from './bundle.js';
import { createRunCgroup, runtimeCgroupPath, type RunCgroup } from './cgroups/index.js';
import { DockerDriver, type EngineView } from './drivers/docker.js';
import { driverFor, type MicrovmSettings } from './drivers/index.js';
import type { RuntimeDriver, RuntimeRun } from './drivers/types.js';
import { SandboxError } from './errors.js';
import { classifyExit, EXIT_CANNOT_START, type RunStatus } from './exit.js';
import { AGENT_HOST, resolveCodeDir, resolveVolumes, type VolumeRequest } from './host-paths.js';
import {
  compileBundle,
  DEFAULT_ID_MAP,
  dirsToList,
  mountTargets,
  SANDBOX_RLIMITS,
  usernsFor,
  type CompiledBundle,
  type CompileOptions,
  type NetworkOption,
  type ResolvedVolume,
  type UsernsOption,
} from './spec/compile.js';
import { validateBundle } from './spec/validate.js';
import { DEFAULT_STATE_DIR, removeRunDir, runDir, sweepStaleRuns, writeRecord, type RunRecord, type SweptRun } from './state.js';
import { callbackSink, discardSink, fdSink, pump, pumpInput, type InputPump, type OutputPump } from './stdio.js';
import { SHIM_ARGV, shimLine } from './shim.js';
import { spawnUsernsHolder, type UsernsHolder } from './userns.js';
import { copyBack, DEFAULT_RW_VOLUME_BYTES, stageVolume, unmount, type StagedVolume } from './volumes.js';

export { classifyExit, EXIT_CANNOT_START, EXIT_KILLED, type RunStatus } from './exit.js';

export { AGENT_HOST_GID, AGENT_HOST_UID, parseVolumeFlag, resolveCodeDir, resolveVolumes, type VolumeRequest } from './host-paths.js';

/**
 * Where the agent's stdout/stderr go. 'inherit': copied to this process's fd 1/2 (with
 * backpressure; never handed to the runtime, see stdio.ts); 'ignore': discarded; a function
 * receives every chunk.
 */
export type OutputTarget = 'inherit' | 'ignore' | ((chunk: Buffer) => void);
/**
 * The agent's stdin. 'ignore' (default): empty (EOF at once); 'inherit': this process's stdin,
 * copied in; a Readable: copied in. The runtime only ever gets a pipe AEGIS made (stdio.ts).
 */
export type InputSource = 'inherit' | 'ignore' | Readable;

export interface RunSandboxOptions {
  readonly policy: Policy;
  /** Folder of the agent.yaml: the code dir is resolved from it and must stay inside it. */
  readonly manifestDir: string;
  /** Host path of the image's root filesystem (ResolvedImage.rootfs). Never written. */
  readonly imageRootfs: string;
  /** Overrides `policy.agent.isolation`; the default is crun. */
  readonly isolation?: Isolation;
  readonly volumes?: readonly VolumeRequest[];
  readonly extraArgs?: readonly string[];
  readonly extraEnv?: Readonly<Record<string, string>>;
  /** 'none' (default): a fresh network namespace with loopback only. */
  readonly network?: NetworkOption;
  /** A Docker-format seccomp profile (parsed JSON) to intersect with the default. */
  readonly seccompProfile?: unknown;
  /** Run records, bundles and runtime state live here (default /run/aegis). */
  readonly stateDir?: string;
  readonly executionId?: string;
  readonly stdin?: InputSource;
  readonly stdout?: OutputTarget;
  readonly stderr?: OutputTarget;
  /** Aborting kills the sandbox (status `killed`). */
  readonly signal?: AbortSignal;
  /** Time between TERM and KILL at timeout or abort (default 1000 ms). */
  readonly graceMs?: number;
  readonly audit?: AuditSink;
  /**
   * Who started the run and under which rules (principal, manifest, policy and image digests),
   * from the caller: added to the `run.spawn` event's payload (docs/audit.md).
   */
  readonly provenance?: Readonly<Record<string, unknown>>;
  /**
   * The runtime monitor (src/monitor, docs/monitoring.md): attached after the cgroup exists and
   * before the runtime is spawned, detached once every process of the run is gone. Its events go
   * to `audit`. A monitor that cannot attach means the agent does not start (the caller passes
   * one only when the host requires monitoring).
   */
  readonly monitor?: Monitor;
  /** isolation microvm: the guest and whether emulation is allowed (AegisConfig.microvm); default: KVM only. */
  readonly microvm?: MicrovmSettings;
  /** Called at the end of each phase with its name (`aegis run --timings`, src/run/timings.ts); diagnostics only. */
  readonly phase?: (name: string) => void;
}

export interface RunResult {
  readonly executionId: string;
  readonly status: RunStatus;
  /** The agent's exit code; 137 when AEGIS killed it (oom, timeout, killed); 125 when it did not start. */
  readonly exitCode: number;
  readonly durationMs: number;
  readonly cpuMs: number;
  readonly maxMemoryBytes: number;
  /** A fork or clone failed at the pids limit (on gVisor this ends the whole sandbox). */
  readonly pidsLimitHit: boolean;
  readonly isolation: Isolation;
  /** Why the run failed to start (status `failed_to_start`). */
  readonly error?: SandboxError;
  /**
   * A destination of the agent's output failed other than by EPIPE (e.g. ENOSPC): from then on
   * that stream's output was discarded (the agent got EPIPE). EPIPE itself is not reported.
   */
  readonly outputError?: { readonly stream: 'stdout' | 'stderr'; readonly code: string };
  /** Problems after the run that did not change its status (an rw volume not copied back). */
  readonly warnings?: readonly string[];
}

/** A fresh execution id (also the container id: `aegis-` + 16 hex digits). */
export function newExecutionId(): string {
  return `aegis-${randomBytes(8).toString('hex')}`;
}

let swept = new Set<string>();

/**
 * Sweeps runs left by a dead AEGIS process (once per state dir and process) and returns what
 * was removed; later calls return []. The CLI calls it first, to audit the lost runs.
 */
export async function sweepOnce(stateDir: string): Promise<SweptRun[]> {
  if (swept.has(stateDir)) return [];
  swept = new Set([...swept, stateDir]);
  return sweepStaleRuns(stateDir);
}

function emit(audit: AuditSink | undefined, ev: AuditEventInput): void {
  if (audit === undefined) return;
  try {
    const r = audit.append(ev);
    if (r instanceof Promise) r.catch(() => undefined);
  } catch {
    /* the audit log reports its own failures */
  }
}

/** The pump that delivers one of the agent's output streams to its target. */
function outputPump(src: Readable, t: OutputTarget | undefined, fd: 1 | 2): OutputPump {
  const target = t ?? 'inherit';
  return pump(src, target === 'inherit' ? fdSink(fd) : target === 'ignore' ? discardSink : callbackSink(target));
}

/**
 * Convert and validate: the bundle a run would use (what `aegis run --dry-run` prints).
 * Reads the image's directory listing; writes nothing.
 */
export function compileRun(
  opts: RunSandboxOptions,
  resolved: {
    codeDir: string;
    volumes: readonly ResolvedVolume[];
    cgroupsPath: string | null;
    isolation: Isolation;
    userns?: UsernsOption;
  },
): CompiledBundle {
  const { top } = mountTargets(opts.policy, resolved.volumes);
  const copts: CompileOptions = {
    imageRootfs: opts.imageRootfs,
    imageListing: scanImage(opts.imageRootfs, dirsToList(top)),
    codeDir: resolved.codeDir,
    volumes: resolved.volumes,
    network: opts.network ?? { kind: 'none' },
    extraEnv: opts.extraEnv ?? {},
    extraArgs: opts.extraArgs ?? [],
    cgroupsPath: resolved.cgroupsPath,
    userSeccompProfile: opts.seccompProfile,
    isolation: resolved.isolation,
    ...(resolved.userns !== undefined ? { userns: resolved.userns } : {}),
  };
  const bundle = compileBundle(opts.policy, copts);
  // Validated after the runtime's adjustments: what runs is what was checked.
  const adapted = { ...bundle, config: driverFor(resolved.isolation, opts.microvm).adapt(bundle.config) };
  validateBundle(adapted, copts);
  return adapted;
}

/** Dry run: resolves code dir and volumes as a run would and returns the bundle. Throws SandboxError. */
export function dryRun(opts: RunSandboxOptions): CompiledBundle {
  const isolation: Isolation = opts.isolation ?? opts.policy.agent.isolation ?? 'crun';
  const codeDir = resolveCodeDir(opts.manifestDir, opts.policy.agent.code);
  const volumes = resolveVolumes(opts.policy, opts.volumes ?? []);
  const cgroupsPath = driverFor(isolation).cgroupMode === 'child' ? runtimeCgroupPath(opts.executionId ?? 'dry-run') : null;
  // The holder's pid is known only at run time: the dry run shows pid 0 (a path that cannot be joined).
  return compileRun(opts, {
    codeDir,
    volumes,
    cgroupsPath,
    isolation,
    ...(needsHolder(isolation, opts.network) ? { userns: usernsFor(DRY_RUN_HOLDER_PID) } : {}),
  });
}

/** Placeholder holder pid in `--dry-run` output. */
export const DRY_RUN_HOLDER_PID = 0;

/**
 * crun and runc join a user namespace AEGIS made (userns.ts); gVisor serves these counters in its
 * own kernel. LIMITATION: runc 1.1 joins the user namespace before the others and then may not
 * join a network namespace of the host's (EPERM), so behind the egress gateway runc creates the
 * user namespace itself, owned by root (see validate.ts and docs/sandbox.md).
 */
function needsHolder(isolation: Isolation, network: NetworkOption | undefined): boolean {
  return isolation === 'crun' || (isolation === 'runc' && network?.kind !== 'netns');
}

/** Everything a run creates, undone by `release` in the right order (also after a failed start). */
class RunResources {
  cgroup: RunCgroup | null = null;
  run: RuntimeRun | null = null;
  driver: RuntimeDriver | null = null;
  holder: UsernsHolder | null = null;
  monitor: MonitorSession | null = null;
  /** What the runtime monitor needs to watch this sandbox (set once its cgroup and bundle exist). */
  monitorFacts: Omit<MonitorTarget, 'agent' | 'execution' | 'volumes' | 'onLost'> | null = null;
  /** Aborted when the runtime monitor dies while the agent runs: the agent is stopped (fail secure). */
  readonly monitorLost = new AbortController();
  recordWritten = false;
  /** Paths this run created under its run directory, parents first (fast removal). */
  readonly createdPaths: string[] = [];
  /** rw volumes mounted on their size-limited filesystems (volumes.ts), with their index. */
  readonly staged: { s: StagedVolume; i: number }[] = [];
  /** Problems after the run that do not change its status (an rw volume not copied back). */
  readonly warnings: string[] = [];

  constructor(
    readonly id: string,
    readonly stateDir: string,
  ) {}

  /** Kill what is left, let the runtime forget the container, remove cgroups, copy back, remove files. */
  async release(copyVolumes = false): Promise<void> {
    const { cgroup, driver, run } = this;
    if (cgroup !== null) await cgroup.killAll().catch(() => undefined);
    // A remote engine's rw volumes: read back into their staged filesystems while the engine still has them.
    let notBack = new Map<string, string>();
    if (copyVolumes && driver instanceof DockerDriver && run !== null) {
      const c = await driver.collectVolumes(run).catch((err: unknown) => {
        const why = `the agent's files could not be read back from the engine: ${(err as Error).message}`;
        return { failed: new Map(this.staged.map(({ s }) => [s.mountPoint, why])), warnings: [] };
      });
      if (c !== null) {
        notBack = c.failed;
        this.warnings.push(...c.warnings);
      }
    }
    if (driver?.removeContainers !== undefined && run !== null && driver.hasState(run)) {
      await driver.removeContainers(run).catch((err: unknown) => {
        this.warnings.push(
          `the engine's containers of ${this.id} could not be removed (the next start retries): ${(err as Error).message}`,
        );
      });
    } else if (driver !== null && run !== null && driver.hasState(run)) {
      spawnSync(driver.binary, driver.deleteArgs(run), { stdio: 'ignore', timeout: 10_000 });
    }
    // After the agent's last process: the monitor's last counts and fs.changes (before copy-back).
    await this.monitor?.detach().catch(() => undefined);
    // After the sandbox's processes are gone: the holder's pid reserves the owner uid until then.
    await this.holder?.kill();
    if (cgroup !== null) {
      try {
        cgroup.remove();
      } catch {
        /* the sweeper retries at the next start */
      }
    }
    // After every process of the run is gone: the agent's rw volumes back to their host folders.
    for (const { s, i } of this.staged.splice(0)) {
      const failed = notBack.get(s.mountPoint);
      const w = !copyVolumes
        ? null
        : failed !== undefined
          ? `volume ${s.volume.host}: ${failed}; the folder keeps its contents from before the run`
          : copyBack(s, this.id, i, AGENT_HOST, invoker());
      if (w !== null) this.warnings.push(w);
      try {
        unmount(s.mountPoint);
      } catch (err) {
        this.warnings.push(`volume ${s.volume.host}: cannot unmount ${s.mountPoint}: ${(err as Error).message}`);
      }
    }
    if (this.recordWritten) {
      const known = [...this.createdPaths];
      if (run !== null && existsSync(run.pidFile)) known.push(run.pidFile);
      removeRunDir(this.stateDir, this.id, known);
    }
  }
}

/** How the runtime process ended (or could not be executed). */
interface RuntimeExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly spawnError: Error | null;
}

/**
 * The runtime process as supervision sees it: a child process, or the Docker engine's container
 * (docker/engine.ts ContainerProcess, same events and streams).
 */
type SandboxProcess = Pick<ChildProcessWithoutNullStreams, 'stdin' | 'stdout' | 'stderr' | 'pid' | 'once'>;

/** What the start phase hands to supervision. */
interface Launched {
  readonly child: SandboxProcess;
  /** Settles when the runtime exits; listened to from the spawn on (a prepared sandbox waits before supervision). */
  readonly exited: Promise<RuntimeExit>;
  readonly run: RuntimeRun;
  readonly driver: RuntimeDriver;
  readonly cgroup: RunCgroup;
  /** For run.spawn: the command line in the sandbox and the volumes as the operator gave them. */
  readonly spawnFacts: { readonly args: readonly string[]; readonly volumes: readonly ResolvedVolume[] };
}

/**
 * Phase 1, start: check the host paths, write the run record, start the user-namespace holder,
 * stage rw volumes, compile and validate the bundle, create the cgroup, spawn the runtime. Every
 * resource goes into `res` as it is made; on any error this throws and the caller releases them.
 */
async function start(opts: RunSandboxOptions, isolation: Isolation, res: RunResources): Promise<Launched> {
  const { id, stateDir } = res;
  const phase = opts.phase ?? ((): void => undefined);
  await sweepOnce(stateDir);
  phase('sandbox.sweep');
  const driver = driverFor(isolation, opts.microvm);
  res.driver = driver;
  const why = driver.unavailableReason() ?? (await driver.preflight?.()) ?? null;
  if (why !== null) throw new SandboxError('sandbox.runtime_unavailable', why);
  if (opts.signal?.aborted) throw new SandboxError('sandbox.start_failed', 'aborted before start');

  const codeDir = resolveCodeDir(opts.manifestDir, opts.policy.agent.code);
  const resolvedVolumes = resolveVolumes(opts.policy, opts.volumes ?? []);

  const record: RunRecord = {
    id,
    agent: opts.policy.agent.name,
    isolation,
    runtime: { binary: driver.binary, deleteArgs: [] },
    owner: { pid: process.pid, startTime: processStartTime(process.pid) ?? '' },
    createdAt: new Date().toISOString(),
  };
  const dir = runDir(stateDir, id);
  const stateRoot = join(stateDir, isolation);
  const run: RuntimeRun = {
    id,
    bundleDir: join(dir, 'bundle'),
    stateRoot,
    pidFile: join(dir, 'bundle', 'pid'),
    ...(opts.network?.kind === 'netns' ? { networkNamespace: opts.network.path } : {}),
  };
  res.run = run;
  record.runtime.deleteArgs = driver.deleteArgs(run);
  writeRecord(stateDir, record);
  res.recordWritten = true;
  mkdirSync(run.bundleDir, { mode: 0o711 });
  mkdirSync(stateRoot, { recursive: true, mode: 0o700 });
  chmodSync(stateRoot, 0o700); // the runtime's state holds the container's config: root only

  if (needsHolder(isolation, opts.network)) {
    // Started first: it runs while the volumes, the bundle and the cgroup are set up below.
    const holder = spawnUsernsHolder(stateDir);
    res.holder = holder;
    record.holder = { pid: holder.pid, startTime: holder.startTime };
    writeRecord(stateDir, record);
  }
  phase('sandbox.record_and_holder_spawn');

  const volumes = resolvedVolumes.map((v, i) => {
    if (v.mode !== 'rw') return v;
    const s = stageVolume(v, dir, id, i, AGENT_HOST, invoker());
    res.staged.push({ s, i });
    return { ...v, host: s.mountPoint };
  });

  // Compiled before the cgroup exists: the runtime's own pids allowance depends on the bundle.
  const holder = res.holder;
  const bundle = compileRun(opts, {
    codeDir,
    volumes,
    cgroupsPath: driver.cgroupMode === 'child' ? runtimeCgroupPath(id) : null,
    isolation,
    ...(holder !== null ? { userns: { path: holder.path, ownerUid: holder.ownerUid } } : {}),
  });
  phase('sandbox.compile_and_validate');
  const cgroup = createRunCgroup(
    id,
    {
      ...opts.policy.limits,
      pids: opts.policy.limits.pids + driver.pidsOverhead(bundle.config),
      memoryBytes: opts.policy.limits.memoryBytes + (driver.memoryOverhead ?? 0),
    },
    undefined,
    undefined,
    driver.cgroupMode,
  );
  res.cgroup = cgroup;
  phase('sandbox.cgroup');
  writeBundle(run.bundleDir, bundle, ensureSkeleton(stateDir, bundle));
  phase('sandbox.bundle_write');
  await holder?.ready(DEFAULT_ID_MAP);
  phase('sandbox.holder_ready');
  res.createdPaths.push(join(dir, 'record.json'), run.bundleDir + '/', join(run.bundleDir, 'config.json'));
  res.monitorFacts = {
    // LIMITATION: gVisor's Sentry and a microVM's guest kernel serve the agent's calls: host eBPF would
    // see only the Sentry's or QEMU's own calls and misattribute them, so they are not traced. The
    // Docker engine makes the container's cgroup (<run cgroup>/<container id>) only when it starts
    // the agent, after the watch must be in place, so docker runs are not traced either (only the
    // samples and fs.changes are recorded): docs/monitoring.md.
    cgroupDirs: isolation === 'gvisor' || isolation === 'microvm' || isolation === 'docker' ? [] : cgroup.monitorDirs,
    deniedSyscalls: refusedByProfile(bundle.config.linux.seccomp),
    ...(bundle.config.linux.uidMappings !== undefined ? { uidMappings: bundle.config.linux.uidMappings } : {}),
    // Through res.cgroup: a remote engine's run reads its samples from the engine (set at launch).
    sample: () => (res.cgroup ?? cgroup).sample(),
  };
  if (opts.monitor !== undefined) {
    res.monitor = await attachMonitor(opts.monitor, opts, res);
    phase('sandbox.monitor_attach');
  }

  const spawnFacts = {
    args: bundle.config.process.args,
    volumes: resolvedVolumes.map((v) => ({ host: v.host, sandbox: v.sandbox, mode: v.mode })),
  };
  if (driver instanceof DockerDriver) {
    const child = await driver.launch({
      run,
      config: bundle.config,
      imageRootfs: opts.imageRootfs,
      stateDir,
      cgroupParent: dirname(cgroup.runtimePath),
      limits: {
        memoryBytes: opts.policy.limits.memoryBytes,
        cpuQuotaUs: opts.policy.limits.cpu.quotaUs,
        cpuPeriodUs: opts.policy.limits.cpu.periodUs,
        pids: opts.policy.limits.pids,
      },
      rwSizes: new Map(res.staged.map(({ s }) => [s.mountPoint, s.volume.sizeBytes ?? DEFAULT_RW_VOLUME_BYTES])),
    });
    // A remote engine: this host's cgroup holds nothing of the run; the engine reports and signals.
    res.warnings.push(...driver.deliveryWarnings(run.id));
    const view = driver.engineView(run.id);
    const runCgroup = view === null ? cgroup : engineCgroup(cgroup, view);
    res.cgroup = runCgroup;
    const proc = child as unknown as SandboxProcess;
    const exited = new Promise<RuntimeExit>((resolve) => {
      proc.once('error', (e: Error) => resolve({ code: null, signal: null, spawnError: e }));
      proc.once('exit', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal, spawnError: null }));
    });
    return { child: proc, exited, run, driver, cgroup: runCgroup, spawnFacts };
  }
  const [rt, rtArgs] = driver.rlimitsInherited ? underPrlimit(driver.binary, driver.runArgs(run)) : [driver.binary, driver.runArgs(run)];
  const [cmd, argv] = driver.cgroupMode === 'inherit' ? joinCgroupThenExec(cgroup.procsFiles, rt, rtArgs) : [rt, rtArgs];
  // ARCHITECTURE NOTE: only pipes AEGIS made, never a descriptor of the operator's (stdio.ts).
  const child = spawn(cmd, argv, { cwd: run.bundleDir, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  const exited = new Promise<RuntimeExit>((resolve) => {
    child.once('error', (e) => resolve({ code: null, signal: null, spawnError: e }));
    child.once('exit', (code, signal) => resolve({ code, signal, spawnError: null }));
  });
  if (child.pid !== undefined) writeRecord(stateDir, { ...record, runtimePid: child.pid, runtimeStartTime: processStartTime(child.pid) });
  phase('sandbox.spawn');
  return { child, exited, run, driver, cgroup, spawnFacts };
}

/**
 * The monitor, attached before the runtime is spawned (fail secure: no monitor, no start). Under
 * gVisor the agent's system calls stay in runsc's own kernel: only resource samples and
 * fs.changes are recorded (docs/monitoring.md).
 */
async function attachMonitor(monitor: Monitor, opts: RunSandboxOptions, res: RunResources): Promise<MonitorSession> {
  const facts = res.monitorFacts;
  try {
    if (facts === null) throw new Error('the sandbox has no cgroup yet');
    return await monitor.attach(
      {
        agent: opts.policy.agent.name,
        execution: res.id,
        ...facts,
        volumes: res.staged.map(({ s }) => ({ dir: s.mountPoint, sandbox: s.volume.sandbox })),
        onLost: (why) => {
          emit(opts.audit, {
            actor: { agent: opts.policy.agent.name, execution: res.id },
            action: 'monitor.lost',
            decision: 'deny',
            reason: 'monitor.lost',
            payload: { message: `${why}: the agent is stopped (fail secure)` },
          });
          res.monitorLost.abort();
        },
      },
      opts.audit ?? { append: () => undefined },
    );
  } catch (err) {
    throw new SandboxError('sandbox.monitor_failed', `the runtime monitor could not attach: ${(err as Error).message}`, { cause: err });
  }
}

/** What supervision saw. */
interface Supervised {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly spawnError: Error | null;
  readonly stoppedBy: 'timeout' | 'killed' | null;
  readonly pumps: readonly OutputPump[];
  readonly emitStart: () => void;
}

/**
 * Phase 2, supervise: copy the streams, audit run.spawn and run.start, enforce the time limit and
 * the abort signal (TERM, grace, KILL of the whole cgroup); resolves when the runtime exits.
 */
async function supervise(
  opts: RunSandboxOptions,
  l: Launched,
  actor: { agent: string; execution: string },
  isolation: Isolation,
  prepared = false,
): Promise<Supervised> {
  const { child, run, driver, cgroup } = l;
  const pumps: OutputPump[] = [outputPump(child.stdout, opts.stdout, 1), outputPump(child.stderr, opts.stderr, 2)];
  const stdinSource = opts.stdin === 'inherit' ? process.stdin : opts.stdin === undefined || opts.stdin === 'ignore' ? null : opts.stdin;
  const input: InputPump = pumpInput(stdinSource, child.stdin);

  let stoppedBy: 'timeout' | 'killed' | null = null;
  let killTimer: NodeJS.Timeout | undefined;
  const emitSpawn = (): void => {
    if (child.pid !== undefined) {
      emit(opts.audit, {
        actor,
        action: 'run.spawn',
        decision: 'info',
        payload: { ...opts.provenance, isolation, runtimePid: child.pid, ...l.spawnFacts },
      });
    }
  };
  if (prepared) emitSpawn();
  else child.once('spawn', emitSpawn);
  // run.start when the runtime has created the container (it writes its pid file then); watched
  // only when someone listens. A start the watcher missed is reported at exit.
  let startEmitted = false;
  const emitStart = (): void => {
    if (startEmitted) return;
    startEmitted = true;
    emit(opts.audit, { actor, action: 'run.start', decision: 'info', payload: { isolation } });
  };
  let watcher: FSWatcher | undefined;
  if (prepared && existsSync(run.pidFile)) emitStart();
  else if (opts.audit !== undefined) {
    try {
      watcher = watch(run.bundleDir, (_event, name) => {
        if (name === 'pid') emitStart();
      });
    } catch {
      watcher = undefined;
    }
  }

  const stop = (why: 'timeout' | 'killed'): void => {
    if (stoppedBy !== null) return;
    stoppedBy = why;
    terminate(driver, run, cgroup);
    killTimer = setTimeout(() => void cgroup.killAll().catch(() => undefined), opts.graceMs ?? 1000);
  };
  const timer = setTimeout(() => stop('timeout'), opts.policy.limits.timeoutMs);
  const onAbort = (): void => stop('killed');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();

  const { code, signal, spawnError } = await l.exited;
  watcher?.close();
  clearTimeout(timer);
  clearTimeout(killTimer);
  opts.signal?.removeEventListener('abort', onAbort);
  input.stop();
  return { code, signal, spawnError, stoppedBy, pumps, emitStart };
}

export async function runSandbox(opts: RunSandboxOptions): Promise<RunResult> {
  const started = performance.now();
  const id = opts.executionId ?? newExecutionId();
  const isolation: Isolation = opts.isolation ?? opts.policy.agent.isolation ?? 'crun';
  const res = new RunResources(id, opts.stateDir ?? DEFAULT_STATE_DIR);
  let launched: Launched;
  try {
    launched = await start(opts, isolation, res);
  } catch (err) {
    return finishingFor(opts, res, isolation, started).failed(err);
  }
  return superviseAndFinish(opts, launched, res, isolation, started, false);
}

/** How a run that went wrong before or at its start is reported (the resources released). */
function finishingFor(opts: RunSandboxOptions, res: RunResources, isolation: Isolation, started: number) {
  const id = res.id;
  const actor = { agent: opts.policy.agent.name, execution: id };
  const base = { executionId: id, isolation };
  const failedToStart = (e: SandboxError, durationMs: number, usage = { cpuMs: 0, maxMemoryBytes: 0, pidsLimitHit: false }): RunResult => {
    emit(opts.audit, {
      actor,
      action: 'run.failed_to_start',
      decision: 'deny',
      reason: e.code,
      payload: { message: e.message, isolation },
    });
    return { ...base, status: 'failed_to_start', exitCode: EXIT_CANNOT_START, durationMs, ...usage, error: e };
  };
  const failed = async (err: unknown): Promise<RunResult> => {
    const e =
      err instanceof SandboxError ? err : new SandboxError('sandbox.start_failed', (err as Error)?.message ?? String(err), { cause: err });
    await res.release();
    return failedToStart(e, performance.now() - started);
  };
  return { actor, base, failedToStart, failed };
}

/** Phases 2 and 3: supervise the launched runtime, then release, drain, classify, report. */
async function superviseAndFinish(
  opts: RunSandboxOptions,
  launched: Launched,
  res: RunResources,
  isolation: Isolation,
  started: number,
  prepared: boolean,
): Promise<RunResult> {
  const { actor, base, failedToStart, failed } = finishingFor(opts, res, isolation, started);
  // Fail secure: an agent that can no longer be monitored is stopped like a cancelled one.
  const signal = opts.signal !== undefined ? AbortSignal.any([opts.signal, res.monitorLost.signal]) : res.monitorLost.signal;
  const s = await supervise({ ...opts, signal }, launched, actor, isolation, prepared);
  opts.phase?.('sandbox.runtime_and_agent');
  const durationMs = performance.now() - started;
  const hostUsage = launched.cgroup.usage();
  // A microVM's guest reports its own OOM kills and refused forks (the host cgroup sees only QEMU).
  const guest = launched.driver.guestUsage?.(launched.run) ?? null;
  const usage =
    guest === null
      ? hostUsage
      : { ...hostUsage, oom: hostUsage.oom || guest.oom, pidsLimitHit: hostUsage.pidsLimitHit || guest.pidsLimitHit };
  const containerStarted = existsSync(launched.run.pidFile);
  if (s.spawnError !== null) {
    for (const p of s.pumps) p.settle(0);
    return failed(new SandboxError('sandbox.runtime_unavailable', `cannot execute ${launched.driver.binary}: ${s.spawnError.message}`));
  }

  // Phase 3, finish: release everything (copying rw volumes back when the agent ran), deliver
  // the rest of the output, classify, report.
  await res.release(containerStarted);
  opts.phase?.('sandbox.release');
  // No loss at exit: everything the agent wrote is delivered before the run ends. Release has
  // killed every process that could hold the sandbox's ends, so the streams end once drained;
  // the idle bound only guards against a holder outside the cgroup (none is known), and never
  // fires while a slow reader is still taking data.
  for (const p of s.pumps) p.settle(2000);
  await Promise.all(s.pumps.map((p) => p.done));
  opts.phase?.('sandbox.output_drain');

  const exit = classifyExit({
    stoppedBy: s.stoppedBy,
    code: s.code,
    signal: s.signal,
    signalNumber: s.signal !== null ? signalNumber(s.signal) : null,
    oom: usage.oom,
    containerStarted,
  });
  const measured = { cpuMs: usage.cpuMs, maxMemoryBytes: usage.maxMemoryBytes, pidsLimitHit: usage.pidsLimitHit };
  if (exit.kind === 'not_started') {
    return failedToStart(
      new SandboxError('sandbox.start_failed', `${isolation} could not start the container (${exit.detail})`),
      durationMs,
      measured,
    );
  }
  const { status, exitCode } = exit;
  const failedOutput = (['stdout', 'stderr'] as const)
    .map((stream, i) => ({ stream, code: s.pumps[i]?.error()?.code ?? null }))
    .find((e) => e.code !== null && e.code !== 'EPIPE');
  const result: RunResult = {
    ...base,
    status,
    exitCode,
    durationMs,
    ...measured,
    ...(failedOutput !== undefined ? { outputError: { stream: failedOutput.stream, code: failedOutput.code ?? 'EIO' } } : {}),
    ...(res.warnings.length > 0 ? { warnings: res.warnings } : {}),
  };
  if (containerStarted) s.emitStart();
  for (const w of res.warnings) emit(opts.audit, { actor, action: 'run.volume_warning', decision: 'info', payload: { message: w } });
  if (status !== 'exited')
    emit(opts.audit, { actor, action: `run.${status}`, decision: 'deny', reason: `run.${status}`, payload: { exitCode } });
  // The share of CFS periods in which the agent wanted more CPU than its quota (alert rules read it).
  const cpuThrottledRatio = usage.cpuPeriods > 0 ? Math.round((usage.cpuThrottledPeriods / usage.cpuPeriods) * 1000) / 1000 : 0;
  emit(opts.audit, { actor, action: 'resource.usage', decision: 'info', payload: { ...measured, durationMs, cpuThrottledRatio } });
  emit(opts.audit, { actor, action: 'run.exit', decision: 'info', payload: { status, exitCode, durationMs } });
  return result;
}

/**
 * A sandbox created ahead of its execution (the orchestrator's warm pools): `start` has run with
 * the shim (shim.ts) as the container's process, the runtime has created and started the
 * container, and the shim waits for its input. `launchPrepared` hands it the execution's argv
 * and environment and supervises the run exactly as `runSandbox` does; `discard` tears it down
 * unused. Used once.
 */
export interface PreparedSandbox {
  readonly id: string;
  readonly isolation: Isolation;
  /** False once the runtime has exited (a sandbox that died while waiting: discard it). */
  alive(): boolean;
  /** Tears the sandbox down unused (kills the shim, releases everything); idempotent. */
  discard(): Promise<void>;
}

interface PreparedState extends PreparedSandbox {
  readonly opts: RunSandboxOptions;
  readonly res: RunResources;
  readonly launched: Launched;
  used: boolean;
}

/** How long preparing waits for the runtime to have created the container. */
const PREPARE_TIMEOUT_MS = 10_000;

/**
 * Prepares a sandbox for `opts` (whose entrypoint and extraArgs are ignored: the process is the
 * shim; whose env is the base the execution's line adds to). Throws SandboxError when it cannot
 * (the image has no /bin/sh: `sandbox.start_failed`; the caller starts cold instead).
 */
export async function prepareSandbox(opts: RunSandboxOptions): Promise<PreparedSandbox> {
  const id = opts.executionId ?? newExecutionId();
  const isolation: Isolation = opts.isolation ?? opts.policy.agent.isolation ?? 'crun';
  const res = new RunResources(id, opts.stateDir ?? DEFAULT_STATE_DIR);
  if (!existsSync(join(opts.imageRootfs, 'bin', 'sh')))
    throw new SandboxError('sandbox.start_failed', 'the image has no /bin/sh for the shim of a prepared sandbox');
  const shimmed: RunSandboxOptions = {
    ...opts,
    executionId: id,
    policy: { ...opts.policy, agent: { ...opts.policy.agent, entrypoint: SHIM_ARGV } },
    extraArgs: [],
  };
  let launched: Launched;
  try {
    launched = await start(shimmed, isolation, res);
    // Ready when the runtime has written the container's pid (created and started, the shim
    // waiting in read), or failed when the runtime exits first.
    const deadline = performance.now() + PREPARE_TIMEOUT_MS;
    let exited = false;
    void launched.exited.then(() => (exited = true));
    while (!existsSync(launched.run.pidFile)) {
      if (exited || performance.now() > deadline)
        throw new SandboxError('sandbox.start_failed', `${isolation} did not create the prepared container`);
      await new Promise((r) => setTimeout(r, 2));
    }
  } catch (err) {
    await res.release();
    throw err instanceof SandboxError ? err : new SandboxError('sandbox.start_failed', (err as Error).message, { cause: err });
  }
  let alive = true;
  void launched.exited.then(() => (alive = false));
  const p: PreparedState = {
    id,
    isolation,
    opts,
    res,
    launched,
    used: false,
    alive: () => alive,
    discard: async () => {
      if (p.used) return;
      p.used = true;
      await res.release();
    },
  };
  return p;
}

export interface LaunchOptions {
  /** The agent's whole argv (entrypoint and arguments). */
  readonly argv: readonly string[];
  /** Exported before the exec: the execution's variables (they override the prepared ones). */
  readonly env: Readonly<Record<string, string>>;
  /** The host folder each rw volume is copied back to, in the prepared volumes' order (the execution's outputs). */
  readonly volumeHosts?: readonly string[];
  readonly stdin?: InputSource;
  readonly stdout?: OutputTarget;
  readonly stderr?: OutputTarget;
  readonly signal?: AbortSignal;
  readonly graceMs?: number;
  /** For run.spawn (principal, manifest, policy, image, agent version). */
  readonly provenance?: Readonly<Record<string, unknown>>;
  /**
   * The runtime monitor: attached to the prepared sandbox's cgroup before the shim gets the
   * execution's line (the shim has not executed the agent yet); one that cannot attach means
   * the agent does not start.
   */
  readonly monitor?: Monitor;
}

/**
 * Runs the execution in a prepared sandbox: the shim gets its line, then the execution's stdin;
 * supervision (time limit from now, abort, streams) and the end are runSandbox's. A sandbox
 * already used or dead is a `failed_to_start` result.
 */
export async function launchPrepared(prepared: PreparedSandbox, l: LaunchOptions): Promise<RunResult> {
  const started = performance.now();
  const p = prepared as PreparedState;
  const opts: RunSandboxOptions = {
    ...p.opts,
    stdin: l.stdin,
    stdout: l.stdout,
    stderr: l.stderr,
    signal: l.signal,
    graceMs: l.graceMs,
    provenance: l.provenance ?? p.opts.provenance,
  };
  if (p.used || !p.alive()) {
    const wasUsed = p.used;
    p.used = true;
    if (!wasUsed) await p.res.release();
    return finishingFor(opts, p.res, p.isolation, started).failedToStart(
      new SandboxError(
        'sandbox.start_failed',
        wasUsed ? 'the prepared sandbox was already used' : 'the prepared sandbox died while waiting',
      ),
      0,
    );
  }
  p.used = true;
  // The outputs: the staged rw volumes are copied back to the execution's folders.
  const hosts = l.volumeHosts ?? [];
  p.res.staged.forEach((st, k) => {
    const host = hosts[k];
    if (host !== undefined) p.res.staged[k] = { s: { ...st.s, volume: { ...st.s.volume, host } }, i: st.i };
  });
  let line: Buffer;
  try {
    line = Buffer.from(shimLine(l.argv, l.env));
  } catch (err) {
    return finishingFor(opts, p.res, p.isolation, started).failed(new SandboxError('sandbox.env_refused', (err as Error).message));
  }
  if (l.monitor !== undefined) {
    try {
      p.res.monitor = await attachMonitor(l.monitor, opts, p.res);
    } catch (err) {
      return finishingFor(opts, p.res, p.isolation, started).failed(err);
    }
  }
  const source = l.stdin === 'inherit' ? process.stdin : l.stdin === undefined || l.stdin === 'ignore' ? null : l.stdin;
  const stdin = Readable.from(
    (async function* () {
      yield line;
      if (source !== null) for await (const c of source) yield c as Buffer;
    })(),
  );
  const launched: Launched = {
    ...p.launched,
    spawnFacts: { ...p.launched.spawnFacts, args: l.argv },
  };
  return superviseAndFinish({ ...opts, stdin }, launched, p.res, p.isolation, started, true);
}

/**
 * ARCHITECTURE NOTE: the runtime must be inside the run's cgroup before it forks anything, so
 * it is started through `/bin/sh`, which writes its own pid to every `cgroup.procs` of the run
 * and then execs the runtime (same pid). If any write fails, the shell exits 125 before the
 * runtime runs: no pid file, so the run is reported as failed_to_start (fail secure).
 */
function joinCgroupThenExec(procsFiles: readonly string[], binary: string, args: readonly string[]): [string, string[]] {
  const script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"';
  return ['/bin/sh', ['-c', script, 'aegis-join-cgroup', String(procsFiles.length), ...procsFiles, binary, ...args]];
}

/** `prlimit --<name>=soft:hard ... -- binary args`: the runtime and the agent inherit SANDBOX_RLIMITS. */
function underPrlimit(binary: string, args: readonly string[]): [string, string[]] {
  const limits = SANDBOX_RLIMITS.map((r) => `--${r.type.replace(/^RLIMIT_/, '').toLowerCase()}=${r.soft}:${r.hard}`);
  return [findExecutable('prlimit') ?? 'prlimit', [...limits, '--', binary, ...args]];
}

/**
 * A remote engine's run as run.ts sees a cgroup: usage and samples from the engine's stats, no
 * pid of this host, killAll through the engine (then this host's empty cgroup, for its removal).
 */
function engineCgroup(host: RunCgroup, view: EngineView): RunCgroup {
  return {
    ...host,
    usage: () => view.usage(),
    sample: () => view.sample(),
    pids: () => [],
    killAll: async (timeoutMs?: number) => {
      await view.signal('KILL');
      await host.killAll(timeoutMs);
    },
  };
}

/** TERM the agent: through the runtime when it must relay (gVisor), else to every pid in the cgroup. */
function terminate(driver: RuntimeDriver, run: RuntimeRun, cgroup: RunCgroup): void {
  const view = driver instanceof DockerDriver ? driver.engineView(run.id) : null;
  if (view !== null) {
    void view.signal('TERM');
    return;
  }
  const args = driver.killArgs(run, 'TERM');
  if (args !== null) {
    spawn(driver.binary, args, { stdio: 'ignore' }).on('error', () => undefined);
    return;
  }
  for (const p of cgroup.pids()) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
}

function signalNumber(s: NodeJS.Signals): number {
  return constants.signals[s] ?? 0;
}

/**
 * The user the agent's rw-volume files are handed to: the one running AEGIS (effective ids).
 * ARCHITECTURE NOTE: under sudo that is root; SUDO_UID is not consulted (an environment
 * variable is no proof of identity): chown the folder afterwards if it should be someone else's.
 */
function invoker(): { uid: number; gid: number } {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}
