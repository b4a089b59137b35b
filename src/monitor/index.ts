/**
 * The runtime monitor (adapter): sees what an agent does inside its sandbox from the host, with
 * eBPF (bpftrace), and writes it into the audit log as `process.exec`, `process.exit`,
 * `fs.open`, `syscall.denied`, `resource.sample`, `fs.changes` and `monitor.summary` events.
 * docs/monitoring.md says what is seen on each runtime.
 *
 * API: `createMonitor(opts).attach(target, sink)` before the agent's first instruction (the run's
 * cgroup exists, the runtime is not spawned yet) resolves once the kernel probes are attached;
 * `session.detach()` after the agent's last process is gone flushes everything and resolves
 * with the summary.
 *
 * Why bpftrace: it is a Debian package (0.17 here), needs no compiler or kernel headers on the
 * host (BTF), and the whole kernel side is one generated program of a dozen lines (program.ts)
 * that a reviewer can read; its JSON output is parsed as hostile input (parse.ts). A libbpf
 * helper would be faster to start but needs a C toolchain and a binary to ship.
 *
 * ARCHITECTURE NOTE: one bpftrace process per execution, owned by the process that runs it, with
 * the execution's cgroup ids compiled into its filters: two executions never share a filter, so
 * they cannot see each other's events. bpftrace prints once a second; if AEGIS dies, the next
 * write fails on the closed pipe and bpftrace exits (SIGPIPE), detaching every probe.
 * LIMITATION: not one shared host daemon yet; each attach costs a bpftrace start (~0.3-1 s,
 * paid before the agent starts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import { findExecutable } from '../host/exec.js';
import { parseMountinfo } from '../host/mountinfo.js';
import { Aggregator, type MonitorSummary, type ResourceReading } from './aggregate.js';
import { MonitorError } from './errors.js';
import { fsChangesEvent, snapshotVolume, type VolumeSnapshot } from './fs-changes.js';
import { parseLine } from './parse.js';
import { bpftraceProgram, STRLEN, syscallNumber } from './program.js';

export { MonitorError, type MonitorErrorCode } from './errors.js';
export type { MonitorSummary, ResourceReading } from './aggregate.js';

/** One execution to watch. */
export interface MonitorTarget {
  readonly agent: string;
  readonly execution: string;
  /**
   * cgroup v2 directories whose processes are the agent's (their inode numbers are the ids the
   * kernel filters on). Empty: no kernel tracing (gVisor: the agent's calls never reach the host).
   */
  readonly cgroupDirs: readonly string[];
  /** System call names the sandbox's seccomp profile refuses (reported as `syscall.denied`). */
  readonly deniedSyscalls: readonly string[];
  /** The sandbox's uid mappings (OCI `linux.uidMappings`), to report uids as the agent sees them. */
  readonly uidMappings?: readonly { readonly containerID: number; readonly hostID: number; readonly size: number }[];
  /** Reads the execution's cgroup (resource.sample, once a second). */
  readonly sample?: () => ResourceReading;
  /** Writable volumes: `dir` is where the agent's files are on the host now, `sandbox` its path inside. */
  readonly volumes?: readonly { readonly dir: string; readonly sandbox: string }[];
}

export interface MonitorSession {
  /** Flushes and stops; resolves with what was folded or lost. Idempotent. */
  detach(): Promise<MonitorSummary>;
}

export interface Monitor {
  attach(target: MonitorTarget, sink: AuditSink): Promise<MonitorSession>;
}

export interface MonitorOptions {
  /** Absolute path of bpftrace (default: found in the system directories). */
  readonly bpftrace?: string;
  /** Streamed events per second per execution before folding (default 500). */
  readonly eventsPerSecond?: number;
  /** Distinct fs.open keys per execution (default 4096). */
  readonly maxPaths?: number;
  /** How long bpftrace may take to attach (default 20 s: it compiles the program first). */
  readonly attachTimeoutMs?: number;
  /** resource.sample interval (default 1000 ms). */
  readonly sampleIntervalMs?: number;
}

/** The actions the monitor writes (docs/monitoring.md, docs/audit.md). */
export const MONITOR_ACTIONS: ReadonlySet<string> = new Set([
  'process.exec',
  'process.exit',
  'fs.open',
  'syscall.denied',
  'resource.sample',
  'fs.changes',
  'monitor.summary',
]);

export const TRACEFS = '/sys/kernel/tracing';
export const BTF_VMLINUX = '/sys/kernel/btf/vmlinux';

/** What the host offers the monitor (aegis doctor, and the default of AEGIS_MONITOR). */
export interface MonitorSupport {
  readonly bpftrace: string | null;
  readonly tracefs: boolean;
  readonly btf: boolean;
  readonly root: boolean;
  /** Empty when the monitor can run. */
  readonly missing: readonly string[];
}

/** Probes the host (reads mountinfo, looks for bpftrace and BTF). */
export function monitorSupport(): MonitorSupport {
  const bpftrace = findExecutable('bpftrace');
  let tracefs = false;
  try {
    tracefs = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).some((m) => m.fstype === 'tracefs' && m.mountPoint === TRACEFS);
  } catch {
    tracefs = false;
  }
  const btf = existsSync(BTF_VMLINUX);
  const root = process.geteuid?.() === 0;
  const missing = [
    ...(bpftrace === null ? ['bpftrace is not installed (apt-get install bpftrace)'] : []),
    ...(!tracefs ? [`tracefs is not mounted at ${TRACEFS} (mount -t tracefs tracefs ${TRACEFS})`] : []),
    ...(!btf ? [`the kernel has no BTF (${BTF_VMLINUX})`] : []),
    ...(!root ? ['the monitor needs root'] : []),
  ];
  return { bpftrace, tracefs, btf, root, missing };
}

/** A cgroup directory's id: its inode number on the cgroup2 filesystem. */
export function cgroupId(dir: string): number {
  try {
    const ino = statSync(dir, { bigint: true }).ino;
    if (ino <= 0n || ino > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`inode ${ino} out of range`);
    return Number(ino);
  } catch (err) {
    throw new MonitorError('monitor.target_invalid', `cannot read the cgroup id of ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

function emit(sink: AuditSink, ev: AuditEventInput): void {
  try {
    const r = sink.append(ev);
    if (r instanceof Promise) r.catch(() => undefined);
  } catch {
    /* the audit log reports its own failures */
  }
}

/** Longest JSON line read from bpftrace (a map of 4096 paths of 200 bytes is < 2 MiB). */
const MAX_LINE = 16 * 1024 * 1024;

class BpftraceSession implements MonitorSession {
  private child: ChildProcess | null = null;
  private timer: NodeJS.Timeout | undefined;
  private done: Promise<MonitorSummary> | null = null;
  private readonly before: { dir: string; sandbox: string; snap: VolumeSnapshot }[] = [];
  private exited: Promise<void> = Promise.resolve();
  readonly agg: Aggregator;

  constructor(
    private readonly target: MonitorTarget,
    private readonly sink: AuditSink,
    private readonly opts: MonitorOptions,
  ) {
    const denied = new Set<number>();
    for (const n of target.deniedSyscalls) {
      const nr = syscallNumber(n);
      if (nr !== null) denied.add(nr);
    }
    this.agg = new Aggregator({
      agent: target.agent,
      execution: target.execution,
      deniedSyscalls: denied,
      ...(target.uidMappings !== undefined ? { uidMappings: target.uidMappings } : {}),
      ...(opts.eventsPerSecond !== undefined ? { eventsPerSecond: opts.eventsPerSecond } : {}),
      ...(opts.maxPaths !== undefined ? { maxPaths: opts.maxPaths } : {}),
    });
  }

  async start(): Promise<void> {
    for (const v of this.target.volumes ?? []) this.before.push({ ...v, snap: snapshotVolume(v.dir) });
    if (this.target.cgroupDirs.length > 0) await this.startBpftrace();
    const sample = this.target.sample;
    if (sample !== undefined) {
      this.timer = setInterval(() => {
        try {
          emit(this.sink, this.agg.sample(sample(), Date.now()));
        } catch {
          /* the cgroup is gone: the run is ending */
        }
      }, this.opts.sampleIntervalMs ?? 1000);
      this.timer.unref();
    }
  }

  private async startBpftrace(): Promise<void> {
    const bin = this.opts.bpftrace ?? findExecutable('bpftrace');
    if (bin === null) throw new MonitorError('monitor.unavailable', 'bpftrace is not installed (apt-get install bpftrace)');
    const program = bpftraceProgram(this.target.cgroupDirs.map((d) => cgroupId(d)));
    const child = spawn(bin, ['-f', 'json', '-e', program], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        BPFTRACE_STRLEN: String(STRLEN),
        BPFTRACE_MAP_KEYS_MAX: '16384',
        BPFTRACE_PERF_RB_PAGES: '256',
      },
    });
    this.child = child;
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (stderr.length < 8192) stderr += d;
    });
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
    let ready: () => void = () => undefined;
    const readyP = new Promise<void>((r) => (ready = r));
    rl.on('line', (line) => {
      const rec = line.length > MAX_LINE ? ({ kind: 'malformed' } as const) : parseLine(line);
      if (rec.kind === 'ready') ready();
      for (const ev of this.agg.push(rec, Date.now())) emit(this.sink, ev);
    });
    const timeoutMs = this.opts.attachTimeoutMs ?? 20_000;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      readyP.then(() => 'ready' as const),
      this.exited.then(() => 'exited' as const),
      new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
      new Promise<'error'>((r) => child.once('error', () => r('error'))),
    ]);
    clearTimeout(timer);
    if (outcome !== 'ready') {
      child.kill('SIGKILL');
      const why = stderr
        .split('\n')
        .filter((l) => l !== '' && !l.includes('RLIMIT_MEMLOCK'))
        .slice(-3)
        .join('; ');
      throw new MonitorError('monitor.attach_failed', `bpftrace did not attach (${outcome}${why !== '' ? `: ${why}` : ''})`);
    }
  }

  /** A failed attach: stop everything, report nothing. */
  async abort(): Promise<void> {
    clearInterval(this.timer);
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  detach(): Promise<MonitorSummary> {
    this.done ??= this.stop();
    return this.done;
  }

  private async stop(): Promise<MonitorSummary> {
    clearInterval(this.timer);
    const s = this.target.sample;
    if (s !== undefined) {
      try {
        emit(this.sink, this.agg.sample(s(), Date.now()));
      } catch {
        /* gone */
      }
    }
    const child = this.child;
    if (child !== null && child.exitCode === null && child.signalCode === null) {
      // SIGINT: bpftrace runs END (the last partial second of counts) and exits.
      child.kill('SIGINT');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(killer);
    }
    if (this.before.length > 0) {
      const volumes = this.before.map((v) => ({ sandbox: v.sandbox, before: v.snap, after: snapshotVolume(v.dir) }));
      emit(this.sink, fsChangesEvent({ agent: this.target.agent, execution: this.target.execution }, volumes));
    }
    const { events, summary } = this.agg.finish(Date.now(), this.child !== null);
    for (const ev of events) emit(this.sink, ev);
    return summary;
  }
}

/** The monitor: `attach` throws MonitorError (the caller refuses the run when monitoring is required). */
export function createMonitor(opts: MonitorOptions = {}): Monitor {
  return {
    async attach(target, sink) {
      const s = new BpftraceSession(target, sink, opts);
      try {
        await s.start();
      } catch (err) {
        await s.abort();
        throw err;
      }
      return s;
    },
  };
}
