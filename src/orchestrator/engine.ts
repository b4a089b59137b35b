/**
 * The execution engine (issue 11): runs the server's executions through the one execution path
 * of `aegis run` (src/run/execute.ts: policy, gateway, audit budget, alerting, runSandbox), keeps
 * warm pools, enforces timeouts and cancels, and cleans up after a dead engine.
 *
 * A sandbox here is what one execution runs in. Its lifecycle (lifecycle.ts) is audited as
 * `sandbox.transition` events: cold -> hot (a cold start), cold -> warm -> hot (from a pool),
 * hot -> terminated, warm -> terminated (destroyed unused), * -> failed.
 *
 * What "warm" means here (docs/orchestrator.md): everything that can be done before the
 * execution's input is known: the manifest loaded and compiled, the image resolved, the alert
 * rules compiled, the run's services started (the audit budget and, for a policy with any
 * network, the gateway: network namespace, veth, nft tables, DNS/HTTP/SOCKS listeners), and
 * the container itself created and started with a shim that waits for the execution's argv and
 * environment (src/sandbox/shim.ts; prepareSandbox/launchPrepared in src/sandbox/run.ts).
 * LIMITATION: an image without /bin/sh gets warm sandboxes without a container (made at claim).
 *
 * ARCHITECTURE NOTE (budget): the host-wide budget (sandboxes and the sum of their memory
 * limits) counts hot, warm and preparing sandboxes. A pool refills only into free room; a cold
 * start without room destroys warm sandboxes (oldest first) until there is, so warm ones never
 * starve hot ones; if even that is not enough the execution fails to start
 * (`orchestrator.budget_exhausted`): the caller (dispatcher) bounds its own concurrency.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import type { AegisConfig } from '../config/index.js';
import { isAegisError } from '../errors.js';
import type { Isolation } from '../policy/types.js';
import {
  EXIT_CANNOT_START,
  EXIT_KILLED,
  newExecutionId,
  prepareSandbox,
  type PreparedSandbox,
  type VolumeRequest,
} from '../sandbox/run.js';
import { DEFAULT_STATE_DIR } from '../sandbox/state.js';
import { secretDeniedEvent } from '../secrets/run.js';
import {
  bindInput,
  loadRun,
  runMonitor,
  runWithServices,
  startServices,
  type BoundRun,
  type LoadedRun,
  type RunMonitor,
  type RunOutcome,
  type StartedServices,
} from '../run/execute.js';
import { RunAudit, sweepLostRuns } from '../run/services.js';
import { OrchestratorError } from './errors.js';
import { transition, type SandboxEvent, type SandboxKey, type SandboxState } from './lifecycle.js';
import { outputVolumes } from './outputs.js';
import { ExecutionSink } from './sinks.js';
import type {
  AgentVersionRef,
  EngineMetrics,
  ExecutionEngine,
  ExecutionObserver,
  ExecutionRequest,
  ExecutionSummary,
  PoolStatus,
  RecoveredExecution,
  RunningExecution,
} from './types.js';

export interface EngineOptions {
  readonly config: AegisConfig;
  /** The server's long-lived audit log (or any sink): every execution writes here; never closed by the engine. */
  readonly audit: AuditSink;
  /** Run records, bundles, runtime state (default /run/aegis). */
  readonly stateDir?: string;
  /** Overrides every agent's isolation (default: the manifest's, else crun). */
  readonly isolation?: Isolation;
  /** TERM -> KILL at cancel and timeout (default 1000 ms). */
  readonly graceMs?: number;
  /** Host-wide budget: at most this many sandboxes, hot + warm + preparing (default 64). */
  readonly maxSandboxes?: number;
  /** Host-wide budget: the sum of the sandboxes' memory limits (default: the host's memory). */
  readonly maxMemoryBytes?: number;
  /** Size of each output volume's filesystem (default 64 MiB; at least 8 MiB). */
  readonly outputBytes?: number;
  /** Wall clock in ms since the epoch (secret expiry). Default Date.now. */
  readonly clock?: () => number;
  /** Operator messages (alerts, failures): the server's stderr. */
  readonly log?: (line: string) => void;
}

/** One sandbox the engine made, from prepare/start to its end. */
interface Sandbox {
  readonly id: string;
  readonly key: SandboxKey;
  state: SandboxState;
  readonly memoryBytes: number;
  readonly sink: ExecutionSink;
  started: StartedServices | null;
  /** A warm sandbox's container, created ahead with the shim (null: made at claim, as cold). */
  prepared: PreparedSandbox | null;
  /** The execution it serves, once hot. */
  execution: string | null;
}

interface Pool {
  readonly ref: AgentVersionRef;
  target: number;
  readonly warm: Sandbox[];
  preparing: number;
}

const DEFAULT_MAX_SANDBOXES = 64;
const DEFAULT_OUTPUT_BYTES = 64 * 1024 ** 2;
/** Loaded manifests kept (deployed versions are immutable: keyed by path and both digests). */
const LOADED_CACHE = 64;
/** A claimed pool is refilled at the agent's first output or this long after its start, whichever is first. */
const REFILL_DELAY_MS = 50;
/** Start latencies kept for metrics(). */
const LATENCY_SAMPLES = 1000;
/** The engine's own deadline after the manifest's timeout and the grace, should runSandbox's timer not end the run. */
const WATCHDOG_SLACK_MS = 5000;
/** Execution ids are sandbox ids (container ids, directory names): a conservative alphabet. */
const EXECUTION_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

const keyOf = (a: AgentVersionRef): SandboxKey => ({
  agent: a.name,
  version: a.version,
  manifestDigest: a.manifestDigest,
  codeDigest: a.codeDigest,
});

/** The engine plus what a server needs beyond the contract: recovery after a dead engine. */
export interface Engine extends ExecutionEngine {
  recover(): Promise<RecoveredExecution[]>;
  /**
   * Starts the host's shared runtime monitor now and keeps it while the engine lives (`aegis
   * serve`), so that no execution pays its start; a no-op when monitoring is off or unsupported
   * under `auto`. Throws MonitorError when it cannot start.
   */
  holdMonitor(): Promise<void>;
}

export function createEngine(o: EngineOptions): Engine {
  const stateDir = o.stateDir ?? DEFAULT_STATE_DIR;
  const graceMs = o.graceMs ?? 1000;
  const maxSandboxes = o.maxSandboxes ?? DEFAULT_MAX_SANDBOXES;
  const maxMemory = o.maxMemoryBytes ?? totalmem();
  const outputBytes = o.outputBytes ?? DEFAULT_OUTPUT_BYTES;
  const clock = o.clock ?? Date.now;
  const say = o.log ?? (() => undefined);
  const audit = o.audit;

  const live = new Set<Sandbox>();
  /** A warm sandbox's outputs are staged under here until its execution's folder is known. */
  const scratchOf = (id: string): string => join(stateDir, 'orchestrator', 'warm', id);
  const removeScratch = (id: string): void => rmSync(scratchOf(id), { recursive: true, force: true });
  /** provisional id -> execution id while a claimed warm sandbox runs: recovery reports the execution. */
  const claimFile = (id: string): string => join(stateDir, 'orchestrator', 'claims', id);
  const pools = new Map<string, Pool>();
  const running = new Map<string, { cancel(): void; done: Promise<ExecutionSummary> }>();
  const preparing = new Set<Promise<void>>();
  const loadedCache = new Map<string, Promise<LoadedRun>>();
  const latency = { warm: [] as number[], cold: [] as number[] };
  let shuttingDown = false;
  // The runtime monitor (AEGIS_MONITOR): every execution, cold or warm, goes through the one
  // execution path with it (runWithServices), under the same fail-secure setting as `aegis run`.
  let monitorP: Promise<RunMonitor | undefined> | null = null;
  let releaseHold: (() => void) | null = null;
  const monitorFor = (): Promise<RunMonitor | undefined> => {
    monitorP ??= runMonitor(o.config, stateDir).then((m) => {
      if (m.note !== null) say(`orchestrator: ${m.note}`);
      return m.monitor;
    });
    return monitorP;
  };

  const append = (e: AuditEventInput): void => {
    try {
      const r = audit.append(e);
      if (r instanceof Promise) r.catch(() => undefined);
    } catch {
      /* the log reports its own failures */
    }
  };

  // Restart recovery: what a dead engine (or `aegis run`) left in this state dir is swept before
  // any sandbox is made here, and each lost run is audited (`run.lost`).
  const recovered: Promise<RecoveredExecution[]> = (async () => {
    try {
      const events = await sweepLostRuns(stateDir, o.config.gatewayEnv);
      for (const ev of events) append(ev);
      return events
        .map((ev) => {
          const id = ev.actor.execution ?? '';
          // A claimed warm sandbox ran under its own id: the claim file names the execution.
          let executionId = id;
          if (EXECUTION_ID.test(id)) {
            try {
              executionId = readFileSync(claimFile(id), 'utf8');
              rmSync(claimFile(id), { force: true });
            } catch {
              executionId = id;
            }
            removeScratch(id);
          }
          return { executionId, agent: ev.actor.agent ?? null };
        })
        .filter((r) => r.executionId !== '');
    } catch (err) {
      say(`orchestrator: the sweep of lost runs failed: ${(err as Error).message}`);
      return [];
    }
  })();

  /** Applies a lifecycle event and audits it (refusals too, as deny). */
  const move = (s: Sandbox, event: SandboxEvent, execution: string | null, observe?: (e: AuditEventInput) => void): boolean => {
    const r = transition(s.state, event);
    const ev: AuditEventInput = {
      actor: { agent: s.key.agent, ...(execution !== null ? { execution } : {}) },
      action: 'sandbox.transition',
      decision: r.ok ? 'info' : 'deny',
      ...(r.ok ? {} : { reason: r.code }),
      payload: {
        sandbox: s.id,
        from: s.state,
        to: r.ok ? r.to : null,
        event: event.type,
        execution,
        agent: s.key.agent,
        version: s.key.version,
        manifestDigest: s.key.manifestDigest,
        codeDigest: s.key.codeDigest,
        ...(r.ok ? {} : { message: r.reason }),
      },
    };
    append(ev);
    try {
      observe?.(ev);
    } catch {
      /* ignored (types.ts) */
    }
    if (r.ok) {
      s.state = r.to;
      if (r.to === 'terminated' || r.to === 'failed') live.delete(s);
    }
    return r.ok;
  };

  /** Cold starts waiting for room: pools do not prepare into it. */
  const reserved = { count: 0, memory: 0 };
  const used = (): { count: number; memory: number } => {
    let memory = reserved.memory;
    for (const s of live) memory += s.memoryBytes;
    return { count: live.size + reserved.count, memory };
  };
  /** Whether one more sandbox of `memoryBytes` fits; `own`: the caller's reservation, not counted against it. */
  const room = (memoryBytes: number, own = { count: 0, memory: 0 }): boolean => {
    const u = used();
    return u.count - own.count + 1 <= maxSandboxes && u.memory - own.memory + memoryBytes <= maxMemory;
  };

  const load = (ref: AgentVersionRef): Promise<LoadedRun> => {
    const k = `${ref.manifestPath}\0${ref.manifestDigest}\0${ref.codeDigest}`;
    let p = loadedCache.get(k);
    if (p === undefined) {
      p = loadRun({ config: o.config, file: ref.manifestPath, stateDir });
      loadedCache.set(k, p);
      p.catch(() => loadedCache.delete(k));
      while (loadedCache.size > LOADED_CACHE) loadedCache.delete(loadedCache.keys().next().value!);
    }
    return p;
  };

  /** A new sandbox record (cold), counted in the budget from now on. */
  const newSandbox = (ref: AgentVersionRef, l: LoadedRun, id: string): Sandbox => {
    const s: Sandbox = {
      id,
      key: keyOf(ref),
      state: 'cold',
      memoryBytes: l.loaded.policy.limits.memoryBytes,
      sink: new ExecutionSink(audit, id),
      started: null,
      prepared: null,
      execution: null,
    };
    return s;
  };

  /** `bound`: the execution's input when it is known (a cold start): its secrets go to the gateway. */
  const startFor = (s: Sandbox, l: LoadedRun, bound?: BoundRun): Promise<StartedServices> =>
    startServices({
      ...(bound !== undefined ? { secrets: bound } : {}),
      imageRootfs: l.image.rootfs,
      config: o.config,
      policy: l.loaded.policy,
      executionId: s.id,
      audit: new RunAudit(s.sink, false),
      budget: l.budget,
      stateDir,
      say: (line) => say(`orchestrator: ${s.key.agent} ${s.id}: ${line}`),
      ...(l.toolCredentials !== undefined ? { toolCredentials: l.toolCredentials } : {}),
      ...(l.toolSandboxes !== undefined ? { toolSandboxes: l.toolSandboxes } : {}),
      ...(o.isolation !== undefined ? { isolation: o.isolation } : {}),
    });

  /** Destroys a warm sandbox unused (pool shrunk, evicted for a hot one, shutdown). */
  const destroyWarm = async (s: Sandbox): Promise<void> => {
    move(s, { type: 'destroy' }, null);
    await s.prepared?.discard();
    await s.started?.discard();
    removeScratch(s.id);
  };

  /**
   * Destroys the oldest warm sandboxes (waiting for those being prepared) until a hot one of
   * `memoryBytes` fits; true when it does, false when only hot ones are left.
   */
  const makeRoom = async (memoryBytes: number): Promise<boolean> => {
    while (!room(memoryBytes, { count: 1, memory: memoryBytes })) {
      const victim = [...pools.values()].flatMap((p) => p.warm).at(0);
      if (victim === undefined) {
        // Sandboxes still being prepared for a pool hold room too: once ready, they are evicted.
        if (preparing.size === 0) return false;
        await Promise.race([...preparing]);
        continue;
      }
      for (const p of pools.values()) {
        const i = p.warm.indexOf(victim);
        if (i >= 0) p.warm.splice(i, 1);
      }
      await destroyWarm(victim);
    }
    return true;
  };

  /**
   * The container of a warm sandbox, created ahead with the shim (src/sandbox/shim.ts): its
   * outputs staged under a scratch folder until claimed. Null when the image has no /bin/sh:
   * then the container is made at claim time (the network and the rest stay prepared).
   */
  const prepareContainer = async (s: Sandbox, l: LoadedRun, started: StartedServices): Promise<PreparedSandbox | null> => {
    if (!existsSync(join(l.image.rootfs, 'bin', 'sh'))) return null;
    const scratch = scratchOf(s.id);
    mkdirSync(scratch, { recursive: true, mode: 0o700 });
    const bound = await bindInput(
      o.config,
      l,
      {
        executionId: s.id,
        env: [],
        args: [],
        volumes: outputVolumes(l.loaded.policy, scratch, outputBytes),
        ...(o.isolation !== undefined ? { isolation: o.isolation } : {}),
        stateDir,
      },
      clock(),
    );
    return prepareSandbox({
      ...bound.opts,
      audit: started.services.audit,
      network: started.services.network,
      extraEnv: started.services.env,
    });
  };

  /** Prepares one warm sandbox for `pool` (already counted in `pool.preparing`). */
  const prepareOne = async (pool: Pool): Promise<void> => {
    let s: Sandbox | null = null;
    try {
      const l = await load(pool.ref);
      s = newSandbox(pool.ref, l, newExecutionId());
      if (!move(s, { type: 'prepare', budgetRoom: room(s.memoryBytes) }, null)) return;
      live.add(s);
      s.started = await startFor(s, l);
      s.prepared = await prepareContainer(s, l, s.started);
      if (shuttingDown || pools.get(pool.ref.name) !== pool || pool.warm.length >= pool.target) {
        await destroyWarm(s);
        return;
      }
      pool.warm.push(s);
    } catch (err) {
      say(`orchestrator: preparing a warm sandbox of ${pool.ref.name} v${pool.ref.version} failed: ${(err as Error).message}`);
      if (s !== null && s.state === 'warm') {
        move(s, { type: 'fail' }, null);
        await s.prepared?.discard();
        await s.started?.discard();
        removeScratch(s.id);
      } else if (s !== null) live.delete(s);
    } finally {
      pool.preparing--;
    }
  };

  /** Refills `pool` in the background up to its target, within the budget. */
  const refill = (pool: Pool): void => {
    if (shuttingDown) return;
    while (pool.warm.length + pool.preparing < pool.target && used().count + pool.preparing < maxSandboxes) {
      pool.preparing++;
      // A failed preparation is not retried in a loop; the next claim or setPool refills.
      const p: Promise<void> = prepareOne(pool).finally(() => preparing.delete(p));
      preparing.add(p);
    }
  };

  /** A warm sandbox of exactly this version, or null (then the execution starts cold). */
  const claimWarm = (ref: AgentVersionRef): Sandbox | null => {
    const pool = pools.get(ref.name);
    if (pool === undefined) return null;
    const want = keyOf(ref);
    const i = pool.warm.findIndex(
      (s) => s.key.version === want.version && s.key.manifestDigest === want.manifestDigest && s.key.codeDigest === want.codeDigest,
    );
    if (i < 0) return null;
    const [s] = pool.warm.splice(i, 1);
    // Refilled once the claimed sandbox's agent has started (see run()): preparing the next
    // one at the same moment would compete with this start for the CPU.
    return s ?? null;
  };

  async function run(req: ExecutionRequest, observer: ExecutionObserver, cancel: AbortController, t0: number): Promise<ExecutionSummary> {
    const { executionId } = req;
    const actor = { agent: req.agent.name, execution: executionId };
    let warm = false;
    /** Set when the engine's own deadline stopped the run. */
    let timedOut = false;
    const failedToStart = (err: { code: string; message: string }, extra: Partial<ExecutionSummary> = {}): ExecutionSummary => {
      const killed = cancel.signal.aborted && !timedOut;
      return {
        executionId,
        status: killed ? 'killed' : 'failed_to_start',
        exitCode: killed ? EXIT_KILLED : EXIT_CANNOT_START,
        durationMs: Math.round(performance.now() - t0),
        cpuMs: 0,
        maxMemoryBytes: 0,
        warm,
        ...(killed ? {} : { error: { code: err.code, message: err.message } }),
        ...extra,
      };
    };
    /** A run that fails before its sandbox exists is still an audited event. */
    const refuse = (err: { code: string; message: string }): ExecutionSummary => {
      const ev: AuditEventInput = {
        actor,
        action: 'run.failed_to_start',
        decision: 'deny',
        reason: err.code,
        payload: { manifest: req.agent.manifestPath, message: err.message, ...digests(req.agent) },
      };
      append(ev);
      safe(() => observer.audit(ev));
      const denied = secretDeniedEvent(err, executionId, req.agent.name);
      if (denied !== undefined) {
        append(denied);
        safe(() => observer.audit(denied));
      }
      return failedToStart(err);
    };

    if (!EXECUTION_ID.test(executionId))
      return refuse(new OrchestratorError('orchestrator.invalid_request', 'the execution id is not usable as a sandbox id'));
    if (shuttingDown) return refuse(new OrchestratorError('orchestrator.shutting_down', 'the engine is shutting down'));
    await recovered;

    let l: LoadedRun;
    let bound;
    try {
      l = await load(req.agent);
      const volumes: VolumeRequest[] = outputVolumes(l.loaded.policy, req.outputsDir, outputBytes);
      bound = await bindInput(
        o.config,
        l,
        {
          executionId,
          env: Object.entries(req.input.env ?? {}).map(([k, v]) => `${k}=${v}`),
          args: req.input.args,
          volumes,
          ...(o.isolation !== undefined ? { isolation: o.isolation } : {}),
          stateDir,
          principal: req.principal,
          extraProvenance: { agentVersion: { name: req.agent.name, version: req.agent.version, ...digests(req.agent) } },
        },
        clock(),
      );
    } catch (err) {
      return refuse(isAegisError(err) ? err : { code: 'orchestrator.internal', message: String(err) });
    }
    if (cancel.signal.aborted) return failedToStart({ code: 'orchestrator.cancelled', message: 'cancelled before start' });

    // A warm sandbox of this version, else a cold start (room made by evicting warm ones). An
    // execution with secret references always starts cold: its gateway must hold its own
    // secrets (issue 12), which a sandbox prepared before the input was known does not.
    let s = bound.runSecrets.bindings.length > 0 ? null : claimWarm(req.agent);
    if (s !== null && s.started?.abort.signal.aborted === true) {
      // Its services failed while it waited (the log, the gateway): never used.
      move(s, { type: 'fail' }, null);
      await s.started.discard();
      s = null;
    }
    let refilled = false;
    let refillTimer: NodeJS.Timeout | undefined;
    /**
     * After a claim, the pool is refilled once the agent is under way: its first output, a
     * bounded delay after the launch, or the end of its run, whichever comes first (preparing
     * the next sandbox at the very moment of the exec would compete with it for the CPU).
     */
    const refillAfterClaim = (): void => {
      if (!warm || refilled) return;
      refilled = true;
      clearTimeout(refillTimer);
      const pool = pools.get(req.agent.name);
      if (pool !== undefined) refill(pool);
    };
    const observeAudit = (e: AuditEventInput): void => {
      if (e.action === 'run.start') {
        const arr = warm ? latency.warm : latency.cold;
        arr.push((performance.now() - t0) / 1000);
        if (arr.length > LATENCY_SAMPLES) arr.shift();
        if (warm) refillTimer = setTimeout(refillAfterClaim, REFILL_DELAY_MS);
      }
      observer.audit(e);
    };
    if (s?.prepared && !s.prepared.alive()) {
      // Its container died while it waited: the execution's container is made now.
      await s.prepared.discard();
      s.prepared = null;
    }
    if (s !== null) {
      warm = true;
      try {
        mkdirSync(dirname(claimFile(s.id)), { recursive: true, mode: 0o700 });
        writeFileSync(claimFile(s.id), executionId, { mode: 0o600 });
      } catch {
        /* recovery then reports the sandbox's own id */
      }
      s.sink.bind(executionId, observeAudit);
      if (!move(s, { type: 'claim', sandbox: s.key, requested: keyOf(req.agent) }, executionId, observeAudit)) {
        await destroyWarm(s);
        return refuse(new OrchestratorError('orchestrator.invalid_transition', 'the warm sandbox could not be claimed'));
      }
    } else {
      s = newSandbox(req.agent, l, executionId);
      s.sink.bind(executionId, observeAudit);
      reserved.count++;
      reserved.memory += s.memoryBytes;
      let fits: boolean;
      try {
        fits = await makeRoom(s.memoryBytes);
      } finally {
        reserved.count--;
        reserved.memory -= s.memoryBytes;
      }
      if (!move(s, { type: 'start', budgetRoom: fits }, executionId, observeAudit))
        return refuse(
          new OrchestratorError(
            'orchestrator.budget_exhausted',
            `the host budget (${maxSandboxes} sandboxes, ${maxMemory} bytes of memory limits) is full`,
          ),
        );
      live.add(s);
      try {
        s.started = await startFor(s, l, bound);
      } catch (err) {
        move(s, { type: 'fail' }, executionId, observeAudit);
        return refuse({
          code: isAegisError(err) ? err.code : 'orchestrator.services_failed',
          message: `cannot start the run's services: ${(err as Error).message}`,
        });
      }
    }
    s.execution = executionId;
    const started = s.started!;

    // The engine's own deadline: runSandbox's timer (the manifest's timeout, TERM, grace, KILL)
    // ends the run; this one fires only if that did not happen, and records `timeout`.
    const watchdog = setTimeout(
      () => {
        timedOut = true;
        cancel.abort();
      },
      l.loaded.policy.limits.timeoutMs + graceMs + WATCHDOG_SLACK_MS,
    );
    let outcome: RunOutcome;
    try {
      const monitor = await monitorFor();
      safe(() => observer.started({ warm }));
      outcome = await runWithServices(
        bound,
        started,
        {
          stdin: req.input.stdin !== undefined ? Readable.from([Buffer.from(req.input.stdin)]) : 'ignore',
          stdout: (c) => {
            refillAfterClaim();
            safe(() => observer.stdout(c));
          },
          stderr: (c) => {
            refillAfterClaim();
            safe(() => observer.stderr(c));
          },
          signal: cancel.signal,
          graceMs,
          say: (line) => say(`orchestrator: ${executionId}: ${line}`),
          ...(monitor !== undefined ? { monitor } : {}),
        },
        s.prepared ?? undefined,
      );
    } catch (err) {
      outcome = { kind: 'cannot_start', message: (err as Error).message };
    } finally {
      clearTimeout(watchdog);
      refillAfterClaim();
      if (warm) {
        removeScratch(s.id);
        rmSync(claimFile(s.id), { force: true });
      }
    }
    if (outcome.kind === 'cannot_start') {
      move(s, { type: 'fail' }, executionId, observeAudit);
      return failedToStart({ code: 'sandbox.start_failed', message: outcome.message });
    }
    const r = outcome.result;
    move(s, r.status === 'failed_to_start' ? { type: 'fail' } : { type: 'exit' }, executionId, observeAudit);
    const summaryBase = {
      durationMs: Math.round(r.durationMs),
      cpuMs: Math.round(r.cpuMs),
      maxMemoryBytes: r.maxMemoryBytes,
    };
    const warnings = [...bound.warnings, ...(r.warnings ?? [])];
    const extra = {
      ...(outcome.budgetStop && r.status === 'killed' ? { stopReason: 'audit.budget_exhausted' } : {}),
      ...(warnings.length > 0 ? { warnings } : {}),
      ...(outcome.alertCounts !== undefined ? { alerts: outcome.alertCounts } : {}),
    };
    if (r.status === 'failed_to_start')
      return failedToStart(r.error ?? { code: 'sandbox.start_failed', message: 'the sandbox did not start' }, { ...summaryBase, ...extra });
    const status = timedOut && r.status === 'killed' ? 'timeout' : r.status;
    return { executionId, status, exitCode: r.exitCode, ...summaryBase, warm, ...extra };
  }

  const engine: Engine = {
    recover: () => recovered,

    async holdMonitor(): Promise<void> {
      const m = await monitorFor();
      if (m === undefined || releaseHold !== null || shuttingDown) return;
      releaseHold = await m.hold();
    },

    execute(req: ExecutionRequest, observer: ExecutionObserver): RunningExecution {
      const t0 = performance.now();
      const cancel = new AbortController();
      const done = run(req, observer, cancel, t0).catch((err: unknown): ExecutionSummary => ({
        executionId: req.executionId,
        status: 'failed_to_start',
        exitCode: EXIT_CANNOT_START,
        durationMs: Math.round(performance.now() - t0),
        cpuMs: 0,
        maxMemoryBytes: 0,
        warm: false,
        error: { code: 'orchestrator.internal', message: String(err) },
      }));
      const handle = { cancel: () => cancel.abort(), done };
      running.set(req.executionId, handle);
      void done.finally(() => {
        if (running.get(req.executionId) === handle) running.delete(req.executionId);
      });
      return { executionId: req.executionId, cancel: handle.cancel, done };
    },

    setPool(agent: AgentVersionRef, warmTarget: number): void {
      const n = Number.isSafeInteger(warmTarget) && warmTarget > 0 ? Math.min(warmTarget, maxSandboxes) : 0;
      const old = pools.get(agent.name);
      const sameVersion =
        old !== undefined &&
        old.ref.version === agent.version &&
        old.ref.manifestDigest === agent.manifestDigest &&
        old.ref.codeDigest === agent.codeDigest;
      if (old !== undefined && (!sameVersion || n === 0)) {
        pools.delete(agent.name);
        for (const s of old.warm.splice(0)) void destroyWarm(s);
      }
      if (n === 0 || shuttingDown) return;
      const pool = sameVersion ? old : { ref: agent, target: n, warm: [], preparing: 0 };
      pool.target = n;
      pools.set(agent.name, pool);
      for (const s of pool.warm.splice(n)) void destroyWarm(s);
      refill(pool);
    },

    pools(): PoolStatus[] {
      return [...pools.values()].map((p) => ({
        agent: p.ref.name,
        version: p.ref.version,
        target: p.target,
        warm: p.warm.length,
        preparing: p.preparing,
      }));
    },

    metrics(): EngineMetrics {
      return { startLatency: { warm: [...latency.warm], cold: [...latency.cold] }, running: running.size };
    },

    async shutdown(): Promise<void> {
      shuttingDown = true;
      const runs = [...running.values()];
      for (const r of runs) r.cancel();
      await Promise.all(runs.map((r) => r.done));
      await Promise.all([...preparing]);
      const warm = [...pools.values()].flatMap((p) => p.warm.splice(0));
      pools.clear();
      await Promise.all(warm.map(destroyWarm));
      releaseHold?.();
      releaseHold = null;
    },
  };
  return engine;
}

function digests(a: AgentVersionRef): { manifestDigest: string; codeDigest: string } {
  return { manifestDigest: a.manifestDigest, codeDigest: a.codeDigest };
}

function safe(f: () => void): void {
  try {
    f();
  } catch {
    /* observers may not throw; what they throw is ignored (types.ts) */
  }
}
