/**
 * The runtime monitor (adapter): sees what an agent does inside its sandbox from the host, with
 * eBPF (bpftrace), and writes it into the audit log as `process.exec`, `process.exit`,
 * `fs.open`, `syscall.denied`, `resource.sample`, `fs.changes` and `monitor.summary` events.
 * docs/monitoring.md says what is seen on each runtime.
 *
 * API: `monitor.attach(target, sink)` before the agent's first instruction (the run's cgroup
 * exists, the runtime is not spawned yet) resolves once the kernel traces the run's cgroups;
 * `session.detach()` after the agent's last process is gone flushes everything and resolves
 * with the summary. `createMonitor()` runs the host-wide hub (hub.ts) in this process;
 * `hostMonitor()` (client.ts) uses the host's shared daemon (daemon.ts).
 *
 * Why bpftrace: it is a Debian package (0.17 here), needs no compiler or kernel headers on the
 * host (BTF), and the whole kernel side is one generated program of a dozen lines (program.ts)
 * that a reviewer can read; its JSON output is parsed as hostile input (parse.ts). A libbpf
 * helper would be faster to start but needs a C toolchain and a binary to ship.
 *
 * ARCHITECTURE NOTE: one bpftrace for the host (hub.ts); each execution registers its cgroup ids
 * and gets only the records of those ids, so two executions cannot see each other's events. A
 * monitor that dies while the agent runs calls the target's `onLost` (the sandbox stops the
 * agent: fail secure). bpftrace prints once a second; if its owner dies, the next write fails
 * on the closed pipe and bpftrace exits (SIGPIPE), detaching every probe.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import { findExecutable } from '../host/exec.js';
import { parseMountinfo } from '../host/mountinfo.js';
import { Aggregator, type MonitorSummary, type ResourceReading } from './aggregate.js';
import { MonitorError } from './errors.js';
import { fsChangesEvent, snapshotVolume, type VolumeSnapshot } from './fs-changes.js';
import { MonitorHub, type RecordSource, type Watch } from './hub.js';
import { syscallNumber } from './program.js';

export { MonitorError, type MonitorErrorCode } from './errors.js';
export type { MonitorSummary, ResourceReading } from './aggregate.js';
export { MonitorHub, type RecordSource, type Watch } from './hub.js';

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
  /**
   * Called once if the monitor dies while the execution runs (its events stop there): the
   * sandbox stops the agent (fail secure, src/sandbox/run.ts).
   */
  readonly onLost?: (why: string) => void;
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
  /** Keys of the kernel maps, for all executions together (default 16384). */
  readonly mapKeys?: number;
  /** How refused calls are traced (hub.ts HubOptions.traceRefused; variants only for bench/monitor.ts). */
  readonly traceRefused?: boolean | 'per-call';
  /** resource.sample interval (default 1000 ms). */
  readonly sampleIntervalMs?: number;
  /** createMonitor: how long its bpftrace outlives the last execution (default 5000 ms). */
  readonly idleMs?: number;
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
  'monitor.lost',
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

/** How long detach waits for the monitor's final counts of an execution. */
const FINISH_TIMEOUT_MS = 10_000;

class Session implements MonitorSession {
  private timer: NodeJS.Timeout | undefined;
  private done: Promise<MonitorSummary> | null = null;
  private readonly before: { dir: string; sandbox: string; snap: VolumeSnapshot }[] = [];
  private watch: Watch | null = null;
  private lostWhy: string | null = null;
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

  async start(source: () => Promise<RecordSource>): Promise<void> {
    for (const v of this.target.volumes ?? []) this.before.push({ ...v, snap: snapshotVolume(v.dir) });
    if (this.target.cgroupDirs.length > 0) {
      const ids = this.target.cgroupDirs.map((d) => cgroupId(d));
      this.watch = await (
        await source()
      ).watch(
        ids,
        (r) => {
          for (const ev of this.agg.push(r, Date.now())) emit(this.sink, ev);
        },
        (why) => {
          if (this.lostWhy !== null || this.done !== null) return;
          this.lostWhy = why;
          this.target.onLost?.(why);
        },
      );
    }
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

  /** A failed attach: stop everything, report nothing. */
  abort(): void {
    clearInterval(this.timer);
    this.watch?.cancel();
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
    if (this.watch !== null && this.lostWhy === null) {
      // The final counts (opens, refused calls) of this execution, then `end`.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.watch.finish().catch(() => undefined),
        new Promise<void>((r) => (timer = setTimeout(r, FINISH_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      this.watch.cancel();
    }
    if (this.before.length > 0) {
      const volumes = this.before.map((v) => ({ sandbox: v.sandbox, before: v.snap, after: snapshotVolume(v.dir) }));
      emit(this.sink, fsChangesEvent({ agent: this.target.agent, execution: this.target.execution }, volumes));
    }
    const { events, summary } = this.agg.finish(Date.now(), this.watch !== null);
    for (const ev of events) emit(this.sink, ev);
    return summary;
  }
}

/** A monitor whose executions read their records from `source` (a hub, or the host daemon). */
export function monitorOver(source: () => Promise<RecordSource>, opts: MonitorOptions = {}): Monitor {
  return {
    async attach(target, sink) {
      const s = new Session(target, sink, opts);
      try {
        await s.start(source);
      } catch (err) {
        s.abort();
        throw err;
      }
      return s;
    },
  };
}

/**
 * A monitor with its own host-wide bpftrace in this process (hub.ts), started at the first
 * attach and shared by every execution attached through it; stopped `idleMs` after the last one
 * detached (default 5 s). `attach` throws MonitorError (the caller refuses the run when monitoring
 * is required). Processes that do not live long (`aegis run`) use the host's daemon instead
 * (client.ts, `hostMonitor`).
 */
export function createMonitor(opts: MonitorOptions = {}): Monitor & { close(): Promise<void> } {
  let hub: Promise<MonitorHub> | null = null;
  let idle: NodeJS.Timeout | undefined;
  const get = (): Promise<MonitorHub> => {
    clearTimeout(idle);
    const cur = hub;
    if (cur !== null) {
      return cur.then((h) => {
        if (h.failure === null) return h;
        if (hub === cur) hub = null;
        return get();
      });
    }
    const next = MonitorHub.start(opts).then((h) => {
      h.onIdle(() => {
        clearTimeout(idle);
        idle = setTimeout(() => {
          if (h.watching === 0 && hub === next) {
            hub = null;
            void h.close();
          }
        }, opts.idleMs ?? 5000);
        idle.unref();
      });
      return h;
    });
    hub = next;
    next.catch(() => {
      if (hub === next) hub = null;
    });
    return next;
  };
  return {
    ...monitorOver(get, opts),
    close: async () => {
      clearTimeout(idle);
      const h = hub;
      hub = null;
      if (h !== null) await (await h.catch(() => null))?.close();
    },
  };
}
