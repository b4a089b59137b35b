/**
 * The host-wide monitor (adapter): ONE bpftrace for every sandbox of the host, which executions
 * register with and unregister from while it runs, and which routes each record to the execution
 * whose cgroup it came from. Used in-process (createMonitor) and by the monitor daemon
 * (daemon.ts) that `aegis run` and `aegis serve` share through a unix socket.
 *
 * How a cgroup is registered without re-attaching anything: program.ts's `hostProgram` filters
 * every probe by the bpftrace map `@w`; bpftrace 0.17 cannot write a map from user space, so the
 * hub calls `ftruncate(fd, cg * 8 + op)` on a private unlinked file, a probe filtered by the
 * hub's pid and that descriptor updates `@w`, and the hub's `watch` resolves only when bpftrace
 * printed the confirmation (`C <op> <cg>`), i.e. after the kernel map holds the id: an execution
 * whose runtime is spawned after that is traced from its first instruction.
 *
 * ARCHITECTURE NOTE: routing is by cgroup id, which the kernel reports for each event (never by
 * pid, which an agent's processes share a namespace view of). A cgroup id is registered by one
 * execution at a time (a second registration of the same id is refused), so two executions never
 * see each other's events. Control operations are serialised: a `clear` of the kernel maps (when
 * nothing is watched any more) is finished before the next `watch` is confirmed, so no count of a
 * watched execution is ever cleared.
 * LIMITATION: the kernel maps of opens (16384 keys by default for all executions together) are
 * cleared only when no execution is watched; on a host that is never idle, opens past the limit
 * are counted as `lost`. bpftrace's own lost events cannot be attributed: every execution
 * watched at that moment gets them in its `lost`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { findExecutable } from '../host/exec.js';
import { MonitorError } from './errors.js';
import { parseLine, type DeniedEntry, type HostRecord, type MonitorRecord, type OpenEntry } from './parse.js';
import { compileSeccomp } from '../sandbox/spec/seccomp.js';
import { CONTROL, controlLength, hostProgram, refusedByProfile, STRLEN, syscallNumber, type ControlOp } from './program.js';

/** One execution's registration with a hub (or with the daemon, client.ts). */
export interface Watch {
  /**
   * Flushes the execution's final counts (opens, refused calls), delivers them and then an
   * `end` record, and unregisters its cgroups. Resolves when done; rejects when the monitor
   * died first (the counts are then missing: the summary says `complete: false`).
   */
  finish(): Promise<void>;
  /** Unregisters without flushing (a run that did not start). Idempotent. */
  cancel(): void;
}

/** Where an execution's records come from: an in-process hub or the host's monitor daemon. */
export interface RecordSource {
  /**
   * Registers `cgroups` (cgroup v2 ids) and resolves once the kernel traces them. `onRecord`
   * gets only these cgroups' records; `onLost` is called once if the monitor dies before the
   * watch is finished. Throws MonitorError.
   */
  watch(cgroups: readonly number[], onRecord: (r: MonitorRecord) => void, onLost: (why: string) => void): Promise<Watch>;
}

export interface HubOptions {
  /** Absolute path of bpftrace (default: found in the system directories). */
  readonly bpftrace?: string;
  /** How long bpftrace may take to attach (default 20 s: it compiles the program first). */
  readonly attachTimeoutMs?: number;
  /** How long a control operation may take to be confirmed (default 5 s). */
  readonly controlTimeoutMs?: number;
  /** Keys of the kernel maps (default 16384). */
  readonly mapKeys?: number;
  /**
   * How refused system calls are traced: `true` (default) one `raw_syscalls:sys_exit` probe for
   * every call; `'per-call'` one exit tracepoint per call the default seccomp profile refuses (a
   * measurement variant: a manifest's own denials are not seen); `false` not at all (to measure
   * that probe's share). bench/monitor.ts --per-call / --no-refused.
   */
  readonly traceRefused?: boolean | 'per-call';
}

interface Sub {
  readonly cgroups: readonly number[];
  readonly onRecord: (r: MonitorRecord) => void;
  readonly onLost: (why: string) => void;
  done: boolean;
}

/** Longest JSON line read from bpftrace (a map of 16384 paths of 200 bytes is < 8 MiB). */
const MAX_LINE = 32 * 1024 * 1024;

/** The host program's refused-call probes for `HubOptions.traceRefused`. */
function refusedProbes(how: HubOptions['traceRefused']): boolean | string[] {
  if (how !== 'per-call') return how !== false;
  // Only calls whose exit tracepoint exists on this kernel (some are not built in).
  return refusedByProfile(compileSeccomp({ deny: [] })).filter(
    (n) => syscallNumber(n) !== null && existsSync(`${TRACEFS_EVENTS}/sys_exit_${n}`),
  );
}

const TRACEFS_EVENTS = '/sys/kernel/tracing/events/syscalls';

export class MonitorHub implements RecordSource {
  private readonly byCg = new Map<number, Sub>();
  private readonly pending = new Map<string, () => void>();
  private queue: Promise<unknown> = Promise.resolve();
  private dead: string | null = null;
  private idleListener: (() => void) | null = null;
  /** Settles when bpftrace has exited. */
  readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    private readonly fd: number,
    private readonly opts: HubOptions,
    exited: Promise<void>,
  ) {
    this.exited = exited.then(() => {
      this.dead ??= 'the monitor (bpftrace) exited';
      try {
        closeSync(this.fd);
      } catch {
        /* closed */
      }
      for (const r of this.pending.values()) r();
      this.pending.clear();
      const subs = new Set(this.byCg.values());
      this.byCg.clear();
      for (const s of subs) if (!s.done) s.onLost(this.dead);
    });
  }

  /** Starts bpftrace with the host program; resolves when every probe is attached. Throws MonitorError. */
  static async start(opts: HubOptions = {}): Promise<MonitorHub> {
    const bin = opts.bpftrace ?? findExecutable('bpftrace');
    if (bin === null) throw new MonitorError('monitor.unavailable', 'bpftrace is not installed (apt-get install bpftrace)');
    // The control file: private, unlinked at once (only the descriptor matters to the probe).
    const dir = mkdtempSync(join(tmpdir(), 'aegis-monitor-'));
    const fd = openSync(join(dir, 'control'), 'w', 0o600);
    rmSync(dir, { recursive: true, force: true });
    const child = spawn(bin, ['-f', 'json', '-e', hostProgram({ pid: process.pid, fd }, { refused: refusedProbes(opts.traceRefused) })], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        BPFTRACE_STRLEN: String(STRLEN),
        BPFTRACE_MAP_KEYS_MAX: String(opts.mapKeys ?? 16384),
        BPFTRACE_PERF_RB_PAGES: '256',
      },
    });
    const exited = new Promise<void>((resolve) => {
      child.once('close', () => resolve());
      child.once('error', () => resolve());
    });
    const hub = new MonitorHub(child, fd, opts, exited);
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      if (stderr.length < 8192) stderr += d;
    });
    let ready: () => void = () => undefined;
    const readyP = new Promise<void>((r) => (ready = r));
    const rl = createInterface({ input: child.stdout!, crlfDelay: Infinity });
    rl.on('line', (line) => {
      const rec: HostRecord = line.length > MAX_LINE ? { kind: 'malformed' } : parseLine(line);
      if (rec.kind === 'ready') ready();
      else hub.route(rec);
    });
    const timeoutMs = opts.attachTimeoutMs ?? 20_000;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      readyP.then(() => 'ready' as const),
      exited.then(() => 'exited' as const),
      new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (outcome !== 'ready') {
      child.kill('SIGKILL');
      await exited;
      const why = stderr
        .split('\n')
        .filter((l) => l !== '' && !l.includes('RLIMIT_MEMLOCK'))
        .slice(-3)
        .join('; ');
      throw new MonitorError('monitor.attach_failed', `bpftrace did not attach (${outcome}${why !== '' ? `: ${why}` : ''})`);
    }
    return hub;
  }

  /** The pid of bpftrace (tests, diagnostics). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Why the hub can no longer watch anything, or null while it runs. */
  get failure(): string | null {
    return this.dead;
  }

  /** Executions watched now. */
  get watching(): number {
    return new Set(this.byCg.values()).size;
  }

  /** Called each time the last watch ends (the daemon's idle timer). */
  onIdle(f: () => void): void {
    this.idleListener = f;
  }

  /** Stops bpftrace (SIGINT, then SIGKILL after 3 s); every watch still open is lost. */
  async close(): Promise<void> {
    this.dead ??= 'the monitor was stopped';
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGINT');
      const killer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(killer);
    }
    await this.exited;
  }

  /** One control operation, confirmed by bpftrace; serialised with every other. */
  private control(op: ControlOp, cg: number): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.dead !== null) throw new MonitorError('monitor.attach_failed', this.dead);
      const key = `${op} ${cg}`;
      const confirmed = new Promise<void>((resolve) => this.pending.set(key, resolve));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), this.opts.controlTimeoutMs ?? 5000)));
      try {
        ftruncateSync(this.fd, controlLength(op, cg));
      } catch (err) {
        this.pending.delete(key);
        throw new MonitorError('monitor.attach_failed', `the monitor's control file: ${(err as Error).message}`, { cause: err });
      }
      const r = await Promise.race([confirmed.then(() => 'ok' as const), timeout]);
      clearTimeout(timer);
      this.pending.delete(key);
      if (r !== 'ok' || this.dead !== null)
        throw new MonitorError('monitor.attach_failed', this.dead ?? `the monitor did not confirm operation ${op} on cgroup ${cg}`);
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  async watch(cgroups: readonly number[], onRecord: (r: MonitorRecord) => void, onLost: (why: string) => void): Promise<Watch> {
    if (cgroups.length === 0 || cgroups.some((c) => !Number.isSafeInteger(c) || c <= 0 || c >= 2 ** 49))
      throw new MonitorError('monitor.target_invalid', 'cgroup ids must be positive integers');
    if (this.dead !== null) throw new MonitorError('monitor.attach_failed', this.dead);
    for (const c of cgroups)
      if (this.byCg.has(c)) throw new MonitorError('monitor.target_invalid', `cgroup ${c} is already watched by another execution`);
    const sub: Sub = { cgroups: [...new Set(cgroups)], onRecord, onLost, done: false };
    for (const c of sub.cgroups) this.byCg.set(c, sub);
    try {
      for (const c of sub.cgroups) await this.control(CONTROL.watch, c);
    } catch (err) {
      sub.done = true;
      await this.release(sub).catch(() => undefined);
      throw err;
    }
    let finishing: Promise<void> | null = null;
    return {
      finish: () => {
        finishing ??= (async () => {
          if (sub.done) return;
          try {
            // bpftrace prints @o, @n and @d, then confirms: the maps reach route() first.
            await this.control(CONTROL.flush, sub.cgroups[0]!);
            if (!sub.done) sub.onRecord({ kind: 'end' });
          } finally {
            sub.done = true;
            await this.release(sub).catch(() => undefined);
          }
        })();
        return finishing;
      },
      cancel: () => {
        if (sub.done) return;
        sub.done = true;
        void this.release(sub).catch(() => undefined);
      },
    };
  }

  /** Unregisters `sub`'s cgroups; clears the kernel maps when nothing is watched any more. */
  private async release(sub: Sub): Promise<void> {
    try {
      for (const c of sub.cgroups) {
        if (this.byCg.get(c) !== sub) continue;
        await this.control(CONTROL.unwatch, c).finally(() => this.byCg.delete(c));
      }
      if (this.byCg.size === 0 && this.dead === null) await this.control(CONTROL.clear, 0);
    } finally {
      if (this.byCg.size === 0) this.idleListener?.();
    }
  }

  /** Sends one record to the execution its cgroup belongs to (maps: each execution its entries). */
  private route(r: HostRecord): void {
    switch (r.kind) {
      case 'control': {
        const k = `${r.op} ${r.cg}`;
        this.pending.get(k)?.();
        return;
      }
      case 'exec': {
        const { cg, ...rest } = r;
        this.deliver(cg, { ...rest });
        return;
      }
      case 'arg': {
        const { cg, ...rest } = r;
        this.deliver(cg, rest);
        return;
      }
      case 'exec_result': {
        const { cg, ...rest } = r;
        this.deliver(cg, rest);
        return;
      }
      case 'exit': {
        const { cg, ...rest } = r;
        this.deliver(cg, rest);
        return;
      }
      case 'opens': {
        const per = new Map<Sub, OpenEntry[]>();
        for (const { cg, ...e } of r.entries) {
          const s = this.byCg.get(cg);
          if (s !== undefined && !s.done) per.set(s, [...(per.get(s) ?? []), e]);
        }
        for (const [s, entries] of per) s.onRecord({ kind: 'opens', entries });
        return;
      }
      case 'open_totals': {
        const per = new Map<Sub, number>();
        for (const { cg, count } of r.entries) {
          const s = this.byCg.get(cg);
          if (s !== undefined && !s.done) per.set(s, (per.get(s) ?? 0) + count);
        }
        for (const [s, count] of per) s.onRecord({ kind: 'open_total', count });
        return;
      }
      case 'denied': {
        // Summed per (nr, errno) over an execution's cgroups: its aggregator reads cumulative counts.
        const per = new Map<Sub, Map<string, DeniedEntry>>();
        for (const { cg, ...e } of r.entries) {
          const s = this.byCg.get(cg);
          if (s === undefined || s.done) continue;
          const m = per.get(s) ?? new Map<string, DeniedEntry>();
          const k = `${e.nr},${e.errno}`;
          const cur = m.get(k);
          m.set(k, cur === undefined ? e : { ...cur, count: cur.count + e.count });
          per.set(s, m);
        }
        for (const [s, m] of per) s.onRecord({ kind: 'denied', entries: [...m.values()] });
        return;
      }
      case 'lost':
      case 'malformed':
        // Not attributable to one execution: every execution watched now is told.
        for (const s of new Set(this.byCg.values())) if (!s.done) s.onRecord(r);
        return;
      case 'ready':
      case 'tick':
      case 'ignored':
        return;
    }
  }

  private deliver(cg: number, r: MonitorRecord): void {
    const s = this.byCg.get(cg);
    if (s !== undefined && !s.done) s.onRecord(r);
  }
}
