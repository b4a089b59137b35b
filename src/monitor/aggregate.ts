/**
 * What the monitor makes of bpftrace's records for one execution: audit events, bounded. Pure:
 * the clock is an argument of every call that needs one.
 *
 * - `process.exec` (successful execs, and refused ones other than ENOENT, which a PATH search
 *   produces by the dozen) and `process.exit` are streamed as they come, under a per-second
 *   budget (`eventsPerSecond`); beyond it they are folded into counts.
 * - `syscall.denied` is streamed once a second per refused call (kernel-side counts), under the
 *   same budget; only calls in `deniedSyscalls` (what the seccomp profile refuses) are reported.
 * - `fs.open` is aggregated per (path, access, result) over the whole execution and emitted once
 *   each at the end, for at most `maxPaths` distinct keys; the rest are folded.
 * - `resource.sample` once a second (not budgeted: one per second by construction).
 * Nothing is dropped silently: `monitor.summary` (at the end) says what was folded, what the
 * kernel lost (bpftrace's lost events, opens beyond its map) and how many lines were malformed.
 */
import type { AuditEventInput } from '../audit/event.js';
import type { MonitorRecord } from './parse.js';
import { MAX_ARGV, resultName, syscallName } from './program.js';

export interface AggregatorOptions {
  readonly agent: string;
  readonly execution: string;
  /** Streamed events allowed per second before folding (default 500). */
  readonly eventsPerSecond?: number;
  /** Distinct fs.open keys kept per execution (default 4096). */
  readonly maxPaths?: number;
  /** System call numbers the seccomp profile refuses; EPERM/ENOSYS of other calls is not a `syscall.denied`. */
  readonly deniedSyscalls: ReadonlySet<number>;
  /** The sandbox's user namespace uid mappings (OCI `linux.uidMappings`): host uids become sandbox uids. */
  readonly uidMappings?: readonly { readonly containerID: number; readonly hostID: number; readonly size: number }[];
}

/** One cgroup reading (resource.sample). */
export interface ResourceReading {
  readonly cpuMs: number;
  readonly memoryBytes: number;
  readonly pids: number;
  /** Bytes read and written by the live processes (their /proc/<pid>/io rchar and wchar). */
  readonly readBytes?: number;
  readonly writeBytes?: number;
}

export interface MonitorSummary {
  /** False when the kernel program did not report its final counts (it was killed): opens are missing. */
  readonly complete: boolean;
  readonly folded: Readonly<Record<string, number>>;
  readonly lost: number;
  readonly malformed: number;
  readonly peaks: { readonly memoryBytes: number; readonly pids: number; readonly cpuPercent: number };
  readonly samples: number;
}

interface PendingExec {
  pid: number;
  ppid: number;
  uid: number;
  path: string;
  argv: string[];
}

const ARG_MAX_CHARS = 256;

/**
 * Results that are a refusal (decision `deny`, which the default alert pack reports): permission
 * and read-only refusals. Anything else (ENOENT from a search path, EEXIST) is `info`.
 */
const REFUSALS: ReadonlySet<number> = new Set([1, 13, 30]); // EPERM, EACCES, EROFS

export class Aggregator {
  private readonly budget: number;
  private readonly maxPaths: number;
  private readonly actor: { agent: string; execution: string };
  private window = -1;
  private inWindow = 0;
  private readonly folded = new Map<string, number>();
  private readonly opens = new Map<string, { path: string; write: boolean; errno: number; count: number }>();
  private readonly pending = new Map<number, PendingExec>();
  private opensSeen = 0;
  private opensCounted = 0;
  private opensFolded = 0;
  private readonly deniedSeen = new Map<string, number>();
  private ended = false;
  private lost = 0;
  private malformed = 0;
  private io = { readBytes: 0, writeBytes: 0 };
  private last: { atMs: number; cpuMs: number } | null = null;
  private peaks = { memoryBytes: 0, pids: 0, cpuPercent: 0 };
  private samples = 0;

  constructor(private readonly opts: AggregatorOptions) {
    this.budget = opts.eventsPerSecond ?? 500;
    this.maxPaths = opts.maxPaths ?? 4096;
    this.actor = { agent: opts.agent, execution: opts.execution };
  }

  private fold(action: string, n = 1): void {
    this.folded.set(action, (this.folded.get(action) ?? 0) + n);
  }

  /** The event if the budget of the current second allows it, else null (and counted as folded). */
  private budgeted(nowMs: number, ev: AuditEventInput): AuditEventInput[] {
    const w = Math.floor(nowMs / 1000);
    if (w !== this.window) {
      this.window = w;
      this.inWindow = 0;
    }
    if (this.inWindow >= this.budget) {
      this.fold(ev.action);
      return [];
    }
    this.inWindow++;
    return [ev];
  }

  private flushExec(pid: number, ret: number, nowMs: number): AuditEventInput[] {
    const p = this.pending.get(pid);
    if (p === undefined) return [];
    this.pending.delete(pid);
    const errno = ret < 0 ? -ret : 0;
    if (errno === 2) {
      this.fold('process.exec');
      return [];
    }
    return this.budgeted(nowMs, {
      actor: this.actor,
      action: 'process.exec',
      decision: REFUSALS.has(errno) ? 'deny' : 'info',
      ...(REFUSALS.has(errno) ? { reason: resultName(errno) } : {}),
      payload: {
        pid: p.pid,
        ppid: p.ppid,
        uid: this.sandboxUid(p.uid),
        hostUid: p.uid,
        path: p.path,
        argv: [p.path, ...p.argv],
        result: resultName(errno),
      },
    });
  }

  /** The uid inside the sandbox for a host uid (null when it is not mapped: no user namespace). */
  private sandboxUid(hostUid: number): number | null {
    for (const m of this.opts.uidMappings ?? [])
      if (hostUid >= m.hostID && hostUid < m.hostID + m.size) return hostUid - m.hostID + m.containerID;
    return null;
  }

  /** Events for one record (possibly none). */
  push(r: MonitorRecord, nowMs: number): AuditEventInput[] {
    // After END, bpftrace prints what is left of its maps as it exits (a cleared count prints 0): not ours.
    if (this.ended) return [];
    switch (r.kind) {
      case 'exec':
        this.pending.set(r.pid, { pid: r.pid, ppid: r.ppid, uid: r.uid, path: r.path, argv: [] });
        return [];
      case 'arg': {
        const p = this.pending.get(r.pid);
        if (p !== undefined && r.index >= 1 && r.index < MAX_ARGV && p.argv.length === r.index - 1)
          p.argv.push(r.value.slice(0, ARG_MAX_CHARS));
        return [];
      }
      case 'exec_result':
        return this.flushExec(r.pid, r.ret, nowMs);
      case 'exit': {
        const code = (r.status >> 8) & 0xff;
        const signal = r.status & 0x7f;
        return this.budgeted(nowMs, {
          actor: this.actor,
          action: 'process.exit',
          decision: 'info',
          payload: signal !== 0 ? { pid: r.pid, signal } : { pid: r.pid, exitCode: code },
        });
      }
      case 'opens':
        // A cumulative snapshot of the execution's opens (the kernel map is never cleared).
        this.opens.clear();
        this.opensCounted = 0;
        this.opensFolded = 0;
        for (const e of r.entries) {
          this.opensCounted += e.count;
          const key = `${e.write ? 'w' : 'r'}\u0000${e.errno}\u0000${e.path}`;
          const cur = this.opens.get(key);
          if (cur !== undefined) cur.count += e.count;
          else if (this.opens.size < this.maxPaths) this.opens.set(key, { path: e.path, write: e.write, errno: e.errno, count: e.count });
          else this.opensFolded += e.count;
        }
        return [];
      case 'open_total':
        this.opensSeen = r.count;
        return [];
      case 'denied': {
        const out: AuditEventInput[] = [];
        for (const d of r.entries) {
          // Cumulative counts: report what is new since the last print.
          const key = `${d.nr},${d.errno}`;
          const delta = d.count - (this.deniedSeen.get(key) ?? 0);
          this.deniedSeen.set(key, d.count);
          if (delta <= 0 || !this.opts.deniedSyscalls.has(d.nr)) continue;
          out.push(
            ...this.budgeted(nowMs, {
              actor: this.actor,
              action: 'syscall.denied',
              decision: 'deny',
              reason: 'seccomp',
              payload: { syscall: syscallName(d.nr), nr: d.nr, errno: resultName(d.errno), count: delta },
            }),
          );
        }
        return out;
      }
      case 'io':
        this.io = { readBytes: r.readBytes, writeBytes: r.writeBytes };
        return [];
      case 'end':
        this.ended = true;
        return [];
      case 'lost':
        this.lost += r.count;
        return [];
      case 'malformed':
        this.malformed++;
        return [];
      case 'ready':
      case 'tick':
      case 'ignored':
        return [];
    }
  }

  /** A `resource.sample` from a cgroup reading, with the I/O bytes counted so far. */
  sample(reading: ResourceReading, nowMs: number): AuditEventInput {
    let cpuPercent = 0;
    if (this.last !== null && nowMs > this.last.atMs)
      cpuPercent = Math.round(((reading.cpuMs - this.last.cpuMs) / (nowMs - this.last.atMs)) * 1000) / 10;
    this.last = { atMs: nowMs, cpuMs: reading.cpuMs };
    this.samples++;
    this.peaks = {
      memoryBytes: Math.max(this.peaks.memoryBytes, reading.memoryBytes),
      pids: Math.max(this.peaks.pids, reading.pids),
      cpuPercent: Math.max(this.peaks.cpuPercent, cpuPercent),
    };
    return {
      actor: this.actor,
      action: 'resource.sample',
      decision: 'info',
      payload: {
        cpuMs: Math.round(reading.cpuMs),
        cpuPercent,
        memoryBytes: reading.memoryBytes,
        pids: reading.pids,
        readBytes: reading.readBytes ?? this.io.readBytes,
        writeBytes: reading.writeBytes ?? this.io.writeBytes,
      },
    };
  }

  /**
   * At the end: execs still waiting for their result, one fs.open per key, the summary.
   * `traced`: a kernel program ran, so its END record was due (without it, counts are incomplete).
   */
  finish(nowMs: number, traced = true): { events: AuditEventInput[]; summary: MonitorSummary } {
    const events: AuditEventInput[] = [];
    // An exec whose result never came (the process was killed in execve): reported as ok.
    for (const pid of [...this.pending.keys()]) events.push(...this.flushExec(pid, 0, nowMs));
    for (const o of this.opens.values()) {
      const result = resultName(o.errno);
      events.push({
        actor: this.actor,
        action: 'fs.open',
        decision: REFUSALS.has(o.errno) ? 'deny' : 'info',
        ...(REFUSALS.has(o.errno) ? { reason: result } : {}),
        payload: { path: o.path, access: o.write ? 'write' : 'read', result, count: o.count },
      });
    }
    // Opens the kernel counted but could not key (its map was full that second).
    const unkeyed = this.opensSeen - this.opensCounted;
    if (this.opensFolded > 0) this.fold('fs.open', this.opensFolded);
    const summary: MonitorSummary = {
      complete: !traced || this.ended,
      folded: Object.fromEntries([...this.folded.entries()].sort(([a], [b]) => a.localeCompare(b))),
      lost: this.lost + (unkeyed > 0 ? unkeyed : 0),
      malformed: this.malformed,
      peaks: this.peaks,
      samples: this.samples,
    };
    events.push({
      actor: this.actor,
      action: 'monitor.summary',
      decision: 'info',
      payload: { ...summary, io: this.io, opens: this.opensSeen, paths: this.opens.size },
    });
    return { events, summary };
  }
}
