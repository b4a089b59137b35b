/**
 * The run lifecycle, as the CLI and the server call it: `runSandbox(opts)` compiles the policy
 * into a bundle, sets up the run's cgroup, runs the agent on the chosen runtime, enforces the
 * timeout, reports what happened and removes everything it created.
 *
 * Never throws for a run that went wrong: the result says `failed_to_start` and carries the
 * SandboxError. Fail secure: any error before the runtime is spawned (volumes, code dir,
 * seccomp, cgroup limits, bundle) means the agent does not start.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, statSync, watch, type FSWatcher } from 'node:fs';
import { join, relative, isAbsolute } from 'node:path';
import type { Readable } from 'node:stream';
import type { AuditSink, AuditEventInput } from '../audit/event.js';
import { decidePath, normalizeSandboxPath } from '../policy/paths.js';
import type { Isolation, Policy } from '../policy/types.js';
import { ensureSkeleton, scanImage, writeBundle } from './bundle.js';
import { createRunCgroup, runtimeCgroupPath, type RunCgroup } from './cgroups/index.js';
import { driverFor } from './drivers/index.js';
import type { RuntimeDriver, RuntimeRun } from './drivers/types.js';
import { SandboxError } from './errors.js';
import {
  AGENT_GID,
  AGENT_UID,
  CODE_MOUNT,
  DEFAULT_ID_MAP,
  compileBundle,
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
import { parseMountinfo } from '../host/mountinfo.js';
import { processStartTime } from '../host/pid-lock.js';
import { callbackSink, discardSink, fdSink, pump, pumpInput, type InputPump, type OutputPump } from './stdio.js';
import { checkReadableBy } from './host-paths.js';
import {
  copyBack,
  DEFAULT_RW_VOLUME_BYTES,
  MAX_RW_VOLUME_BYTES,
  MIN_RW_VOLUME_BYTES,
  stageVolume,
  unmount,
  type StagedVolume,
} from './volumes.js';
import { parseSize } from '../manifest/units.js';
import { DEFAULT_STATE_DIR, removeRunDir, runDir, sweepStaleRuns, writeRecord, type RunRecord, type SweptRun } from './state.js';
import { spawnUsernsHolder, type UsernsHolder } from './userns.js';

export type RunStatus = 'exited' | 'oom' | 'timeout' | 'killed' | 'failed_to_start';

/** A `--volume HOST:SANDBOX[:ro|rw[,size=N]]` request (not yet checked). */
export interface VolumeRequest {
  readonly host: string;
  readonly sandbox: string;
  readonly mode: 'ro' | 'rw';
  /** rw only: size of the volume's filesystem (default DEFAULT_RW_VOLUME_BYTES, 1 GiB). */
  readonly sizeBytes?: number;
}

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

export const EXIT_KILLED = 137;
export const EXIT_CANNOT_START = 125;

/** Resolves the code directory and refuses one that escapes the manifest's folder. */
/** Mount points of this mount namespace (field 5 of /proc/self/mountinfo, octal escapes decoded). */
function mountPoints(): string[] {
  try {
    return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).map((e) => e.mountPoint);
  } catch {
    return [];
  }
}

/**
 * ARCHITECTURE NOTE: read-only binds are `rbind,ro`, and runtimes make only the top mount
 * read-only (crun 1.8 and runsc refuse `rro` here). A host folder with another mount below it
 * would expose that mount writable (and without nosuid/nodev), so such folders are refused.
 */
function refuseSubmounts(what: string, dir: string, code: 'sandbox.code_dir_refused' | 'sandbox.volume_refused'): void {
  const below = mountPoints().filter((m) => m !== dir && m.startsWith(dir === '/' ? '/' : dir + '/'));
  if (below.length > 0) {
    throw new SandboxError(
      code,
      `${what} ${dir} has other mounts below it (${below.slice(0, 3).join(', ')}${below.length > 3 ? ', ...' : ''}): they would not be read-only in the sandbox; attach a folder without mounts inside`,
    );
  }
}

export function resolveCodeDir(manifestDir: string, code: string): string {
  let base: string;
  let dir: string;
  try {
    base = realpathSync(manifestDir);
    dir = realpathSync(join(base, code));
  } catch (err) {
    throw new SandboxError('sandbox.code_dir_refused', `code directory ${join(manifestDir, code)} does not exist`, { cause: err });
  }
  const rel = relative(base, dir);
  if (rel.startsWith('..') || isAbsolute(rel)) {
    throw new SandboxError('sandbox.code_dir_refused', `code directory ${dir} resolves outside the manifest's folder ${base}`);
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new SandboxError('sandbox.code_dir_refused', `code path ${dir} is not a directory`);
  // The agent reads its code as an unprivileged host uid: say so now rather than fail in the runtime.
  const readable =
    st.uid === AGENT_HOST_UID
      ? (st.mode & 0o500) === 0o500
      : st.gid === AGENT_HOST_GID
        ? (st.mode & 0o050) === 0o050
        : (st.mode & 0o005) === 0o005;
  if (!readable) {
    throw new SandboxError(
      'sandbox.code_dir_refused',
      `code directory ${dir} is not readable by the sandbox's host uid ${AGENT_HOST_UID} (mode ${(st.mode & 0o777).toString(8)}): chmod o+rx it`,
    );
  }
  refuseSubmounts('code directory', dir, 'sandbox.code_dir_refused');
  return dir;
}

const RESERVED = ['/proc', '/dev', '/sys', '/tmp', CODE_MOUNT];

/**
 * Checks volume requests against the policy: host path resolved (symlinks) and existing, sandbox
 * path granted by fs.read (ro) or fs.write (rw) according to decidePath. Anything else is refused.
 */
export function resolveVolumes(policy: Policy, requests: readonly VolumeRequest[]): ResolvedVolume[] {
  return requests.map((v) => {
    const sandbox = normalizeSandboxPath(v.sandbox);
    if (sandbox === null || sandbox === '/')
      throw new SandboxError('sandbox.volume_refused', `volume target "${v.sandbox}" is not an absolute path below /`);
    if (RESERVED.some((r) => sandbox === r || sandbox.startsWith(r + '/'))) {
      throw new SandboxError('sandbox.volume_refused', `volume target ${sandbox} is reserved by the sandbox`);
    }
    const d = decidePath(policy.fs, v.mode === 'rw' ? 'write' : 'read', sandbox);
    if (!d.allow)
      throw new SandboxError('sandbox.volume_refused', `volume ${v.host}:${sandbox}:${v.mode} refused: ${d.reason} (${d.detail})`);
    let host: string;
    try {
      host = realpathSync(v.host);
    } catch (err) {
      throw new SandboxError('sandbox.volume_refused', `volume source ${v.host} does not exist`, { cause: err });
    }
    if (!statSync(host).isDirectory()) throw new SandboxError('sandbox.volume_refused', `volume source ${host} is not a directory`);
    refuseSubmounts('volume source', host, 'sandbox.volume_refused');
    if (v.mode === 'ro') {
      // Bound as it is: the agent must be able to read it (else it would only fail inside).
      checkReadableBy(host, AGENT_HOST_UID, AGENT_HOST_GID);
      return { host, sandbox, mode: v.mode };
    }
    if (
      v.sizeBytes !== undefined &&
      !(Number.isSafeInteger(v.sizeBytes) && v.sizeBytes >= MIN_RW_VOLUME_BYTES && v.sizeBytes <= MAX_RW_VOLUME_BYTES)
    ) {
      throw new SandboxError(
        'sandbox.volume_refused',
        `volume ${v.host}: size ${v.sizeBytes} is outside ${MIN_RW_VOLUME_BYTES}..${MAX_RW_VOLUME_BYTES} bytes`,
      );
    }
    return { host, sandbox, mode: v.mode, sizeBytes: v.sizeBytes ?? DEFAULT_RW_VOLUME_BYTES };
  });
}

/** Single-letter binary units as in tmpfs/Docker (`100M`), besides the manifest's (`100MiB`, `100MB`). */
const SHORT_SIZE = /^([0-9]{1,12})([kKmMgGtT])$/;

function parseVolumeSize(flag: string, text: string): number {
  const short = SHORT_SIZE.exec(text);
  if (short) return Number(short[1]) * 1024 ** ('kmgt'.indexOf(short[2]!.toLowerCase()) + 1);
  const r = parseSize(text);
  if (!r.ok) throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": ${r.message}`);
  return r.value;
}

/**
 * Parses `HOST:SANDBOX[:ro|rw[,size=N]]` (default ro; an rw volume without size= gets
 * DEFAULT_RW_VOLUME_BYTES). Sizes: 100M, 2G (binary) or the manifest's units (100MiB, 100MB).
 */
export function parseVolumeFlag(flag: string): VolumeRequest {
  const parts = flag.split(':');
  const [mode, ...options] = (parts.length === 3 ? parts[2]! : 'ro').split(',');
  if ((parts.length !== 2 && parts.length !== 3) || !parts[0] || !parts[1] || (mode !== 'ro' && mode !== 'rw')) {
    throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": expected HOST:SANDBOX[:ro|rw[,size=N]]`);
  }
  let sizeBytes: number | undefined;
  for (const o of options) {
    if (!o.startsWith('size=') || sizeBytes !== undefined)
      throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": unknown or repeated option "${o}" (only size=N, for rw)`);
    if (mode !== 'rw') throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": size= applies to rw volumes only`);
    sizeBytes = parseVolumeSize(flag, o.slice('size='.length));
  }
  return { host: parts[0], sandbox: parts[1], mode, ...(sizeBytes !== undefined ? { sizeBytes } : {}) };
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
  const adapted = { ...bundle, config: driverFor(resolved.isolation).adapt(bundle.config) };
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

export async function runSandbox(opts: RunSandboxOptions): Promise<RunResult> {
  const started = performance.now();
  const id = opts.executionId ?? newExecutionId();
  const isolation: Isolation = opts.isolation ?? opts.policy.agent.isolation ?? 'crun';
  const stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
  const actor = { agent: opts.policy.agent.name, execution: id };
  const base = { executionId: id, isolation };
  let cgroup: RunCgroup | null = null;
  let run: RuntimeRun | null = null;
  let driver: RuntimeDriver | null = null;
  let recordWritten = false;
  let holder: UsernsHolder | null = null;
  /** Paths this run created under its run directory, parents first (fast removal). */
  const createdPaths: string[] = [];
  /** rw volumes mounted on their size-limited filesystems (volumes.ts), with their index. */
  const staged: { s: StagedVolume; i: number }[] = [];
  const warnings: string[] = [];

  const cleanup = async (copyVolumes = false): Promise<void> => {
    // Order: kill what is left, let the runtime forget the container, remove cgroups, files.
    if (cgroup !== null) await cgroup.killAll().catch(() => undefined);
    if (driver !== null && run !== null && driver.hasState(run)) {
      spawnSync(driver.binary, driver.deleteArgs(run), { stdio: 'ignore', timeout: 10_000 });
    }
    // After the sandbox's processes are gone: the holder's pid reserves the owner uid until then.
    await holder?.kill();
    if (cgroup !== null) {
      try {
        cgroup.remove();
      } catch {
        /* the sweeper retries at the next start */
      }
    }
    // After every process of the run is gone: the agent's rw volumes back to their host folders.
    for (const { s, i } of staged.splice(0)) {
      const w = copyVolumes ? copyBack(s, id, i, AGENT_HOST, invoker()) : null;
      if (w !== null) warnings.push(w);
      try {
        unmount(s.mountPoint);
      } catch (err) {
        warnings.push(`volume ${s.volume.host}: cannot unmount ${s.mountPoint}: ${(err as Error).message}`);
      }
    }
    if (recordWritten) {
      const known = [...createdPaths];
      if (run !== null && existsSync(run.pidFile)) known.push(run.pidFile);
      removeRunDir(stateDir, id, known);
    }
  };

  const failed = async (err: unknown): Promise<RunResult> => {
    const e =
      err instanceof SandboxError ? err : new SandboxError('sandbox.start_failed', (err as Error)?.message ?? String(err), { cause: err });
    await cleanup();
    emit(opts.audit, {
      actor,
      action: 'run.failed_to_start',
      decision: 'deny',
      reason: e.code,
      payload: { message: e.message, isolation },
    });
    return {
      ...base,
      status: 'failed_to_start',
      exitCode: EXIT_CANNOT_START,
      durationMs: performance.now() - started,
      cpuMs: 0,
      maxMemoryBytes: 0,
      pidsLimitHit: false,
      error: e,
    };
  };

  let child;
  let spawnFacts: { args: readonly string[]; volumes: readonly ResolvedVolume[] } = { args: [], volumes: [] };
  try {
    await sweepOnce(stateDir);
    driver = driverFor(isolation);
    const why = driver.unavailableReason();
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
    run = {
      id,
      bundleDir: join(dir, 'bundle'),
      stateRoot,
      pidFile: join(dir, 'bundle', 'pid'),
      ...(opts.network?.kind === 'netns' ? { networkNamespace: opts.network.path } : {}),
    };
    record.runtime.deleteArgs = driver.deleteArgs(run);
    writeRecord(stateDir, record);
    recordWritten = true;
    mkdirSync(run.bundleDir, { mode: 0o711 });
    mkdirSync(stateRoot, { recursive: true, mode: 0o700 });
    chmodSync(stateRoot, 0o700); // the runtime's state holds the container's config: root only

    if (needsHolder(isolation, opts.network)) {
      // Started first: it runs while the volumes, the bundle and the cgroup are set up below.
      holder = spawnUsernsHolder(stateDir);
      record.holder = { pid: holder.pid, startTime: holder.startTime };
      writeRecord(stateDir, record);
    }

    const volumes = resolvedVolumes.map((v, i) => {
      if (v.mode !== 'rw') return v;
      const s = stageVolume(v, dir, id, i, AGENT_HOST, invoker());
      staged.push({ s, i });
      return { ...v, host: s.mountPoint };
    });

    // Compiled before the cgroup exists: the runtime's own pids allowance depends on the bundle.
    const bundle = compileRun(opts, {
      codeDir,
      volumes,
      cgroupsPath: driver.cgroupMode === 'child' ? runtimeCgroupPath(id) : null,
      isolation,
      ...(holder !== null ? { userns: { path: holder.path, ownerUid: holder.ownerUid } } : {}),
    });
    cgroup = createRunCgroup(
      id,
      { ...opts.policy.limits, pids: opts.policy.limits.pids + driver.pidsOverhead(bundle.config) },
      undefined,
      undefined,
      driver.cgroupMode,
    );
    spawnFacts = {
      args: bundle.config.process.args,
      volumes: resolvedVolumes.map((v) => ({ host: v.host, sandbox: v.sandbox, mode: v.mode })),
    };
    writeBundle(run.bundleDir, bundle, ensureSkeleton(stateDir, bundle));
    await holder?.ready(DEFAULT_ID_MAP);
    createdPaths.push(join(dir, 'record.json'), run.bundleDir + '/', join(run.bundleDir, 'config.json'));

    const [rt, rtArgs] = driver.rlimitsInherited ? underPrlimit(driver.binary, driver.runArgs(run)) : [driver.binary, driver.runArgs(run)];
    const [cmd, argv] = driver.cgroupMode === 'inherit' ? joinCgroupThenExec(cgroup.procsFiles, rt, rtArgs) : [rt, rtArgs];
    // ARCHITECTURE NOTE: only pipes AEGIS made, never a descriptor of the operator's (stdio.ts).
    child = spawn(cmd, argv, { cwd: run.bundleDir, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    if (child.pid !== undefined) writeRecord(stateDir, { ...record, runtimePid: child.pid, runtimeStartTime: processStartTime(child.pid) });
  } catch (err) {
    return failed(err);
  }

  const pumps: OutputPump[] = [outputPump(child.stdout, opts.stdout, 1), outputPump(child.stderr, opts.stderr, 2)];
  const stdinSource = opts.stdin === 'inherit' ? process.stdin : opts.stdin === undefined || opts.stdin === 'ignore' ? null : opts.stdin;
  const input: InputPump = pumpInput(stdinSource, child.stdin);

  const activeRun = run;
  const activeDriver = driver;
  const activeCgroup = cgroup;
  let spawnError: Error | null = null;
  let reason: 'timeout' | 'killed' | null = null;
  let killTimer: NodeJS.Timeout | undefined;

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (e) => {
      spawnError = e;
      resolve({ code: null, signal: null });
    });
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  child.once('spawn', () => {
    if (child.pid !== undefined) {
      emit(opts.audit, {
        actor,
        action: 'run.spawn',
        decision: 'info',
        payload: { ...opts.provenance, isolation, runtimePid: child.pid, ...spawnFacts },
      });
    }
  });
  // run.start when the runtime has created the container (it writes its pid file then); watched
  // only when someone listens. A start the watcher missed is reported at exit.
  let startEmitted = false;
  const emitStart = (): void => {
    if (startEmitted) return;
    startEmitted = true;
    emit(opts.audit, { actor, action: 'run.start', decision: 'info', payload: { isolation } });
  };
  let watcher: FSWatcher | undefined;
  if (opts.audit !== undefined) {
    try {
      watcher = watch(activeRun.bundleDir, (_event, name) => {
        if (name === 'pid') emitStart();
      });
    } catch {
      watcher = undefined;
    }
  }

  const stop = (why: 'timeout' | 'killed'): void => {
    if (reason !== null) return;
    reason = why;
    terminate(activeDriver, activeRun, activeCgroup);
    killTimer = setTimeout(() => void activeCgroup.killAll().catch(() => undefined), opts.graceMs ?? 1000);
  };
  const timer = setTimeout(() => stop('timeout'), opts.policy.limits.timeoutMs);
  const onAbort = (): void => stop('killed');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();

  const { code, signal } = await exited;
  watcher?.close();
  clearTimeout(timer);
  clearTimeout(killTimer);
  opts.signal?.removeEventListener('abort', onAbort);
  const durationMs = performance.now() - started;
  const usage = activeCgroup.usage();
  const startedAgent = existsSync(activeRun.pidFile);
  input.stop();
  if (spawnError !== null) {
    for (const p of pumps) p.settle(0);
    return failed(
      new SandboxError('sandbox.runtime_unavailable', `cannot execute ${activeDriver.binary}: ${(spawnError as Error).message}`),
    );
  }
  await cleanup(startedAgent);
  // No loss at exit: everything the agent wrote is delivered before the run ends. Cleanup has
  // killed every process that could hold the sandbox's ends, so the streams end once drained;
  // the idle bound only guards against a holder outside the cgroup (none is known), and never
  // fires while a slow reader is still taking data.
  for (const p of pumps) p.settle(2000);
  await Promise.all(pumps.map((p) => p.done));

  const killedBySignal = signal === 'SIGKILL' || code === EXIT_KILLED;
  let status: RunStatus;
  let exitCode: number;
  if (reason !== null) {
    status = reason;
    exitCode = EXIT_KILLED;
  } else if (killedBySignal && usage.oom) {
    status = 'oom';
    exitCode = EXIT_KILLED;
  } else if (!startedAgent && code !== 0) {
    const e = new SandboxError('sandbox.start_failed', `${isolation} could not start the container (exit ${code ?? signal})`);
    emit(opts.audit, {
      actor,
      action: 'run.failed_to_start',
      decision: 'deny',
      reason: e.code,
      payload: { message: e.message, isolation },
    });
    return {
      ...base,
      status: 'failed_to_start',
      exitCode: EXIT_CANNOT_START,
      durationMs,
      cpuMs: usage.cpuMs,
      maxMemoryBytes: usage.maxMemoryBytes,
      pidsLimitHit: usage.pidsLimitHit,
      error: e,
    };
  } else {
    status = 'exited';
    exitCode = code ?? 128 + (signal !== null ? signalNumber(signal) : 0);
  }
  const failedOutput = (['stdout', 'stderr'] as const)
    .map((stream, i) => ({ stream, code: pumps[i]?.error()?.code ?? null }))
    .find((e) => e.code !== null && e.code !== 'EPIPE');
  const result: RunResult = {
    ...base,
    status,
    exitCode,
    durationMs,
    cpuMs: usage.cpuMs,
    maxMemoryBytes: usage.maxMemoryBytes,
    pidsLimitHit: usage.pidsLimitHit,
    ...(failedOutput !== undefined ? { outputError: { stream: failedOutput.stream, code: failedOutput.code ?? 'EIO' } } : {}),
    ...(warnings.length > 0 ? { warnings } : {}),
  };
  if (startedAgent) emitStart();
  for (const w of warnings) emit(opts.audit, { actor, action: 'run.volume_warning', decision: 'info', payload: { message: w } });
  if (status !== 'exited')
    emit(opts.audit, { actor, action: `run.${status}`, decision: 'deny', reason: `run.${status}`, payload: { exitCode } });
  emit(opts.audit, {
    actor,
    action: 'resource.usage',
    decision: 'info',
    payload: { cpuMs: usage.cpuMs, maxMemoryBytes: usage.maxMemoryBytes, durationMs, pidsLimitHit: usage.pidsLimitHit },
  });
  emit(opts.audit, { actor, action: 'run.exit', decision: 'info', payload: { status, exitCode, durationMs } });
  return result;
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
  return ['prlimit', [...limits, '--', binary, ...args]];
}

/** TERM the agent: through the runtime when it must relay (gVisor), else to every pid in the cgroup. */
function terminate(driver: RuntimeDriver, run: RuntimeRun, cgroup: RunCgroup): void {
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
 * The host uid the agent's files get: container uid AGENT_UID in the default id map.
 * ARCHITECTURE NOTE: ro volumes must be readable by this uid (checked before start, see
 * host-paths.ts); rw volumes live on a filesystem of their own whose root belongs to it, and are
 * copied back to the host folder as the user running AEGIS (volumes.ts). AEGIS never chowns the
 * host folders themselves.
 */
export const AGENT_HOST_UID = DEFAULT_ID_MAP.hostBase + AGENT_UID;
export const AGENT_HOST_GID = DEFAULT_ID_MAP.hostBase + AGENT_GID;
const AGENT_HOST = { uid: AGENT_HOST_UID, gid: AGENT_HOST_GID } as const;

/**
 * The user the agent's rw-volume files are handed to: the one running AEGIS (effective ids).
 * ARCHITECTURE NOTE: under sudo that is root; SUDO_UID is not consulted (an environment
 * variable is no proof of identity): chown the folder afterwards if it should be someone else's.
 */
function invoker(): { uid: number; gid: number } {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}
