/**
 * The orchestrator's contract (issue 11): what the server hands the execution engine and what
 * it gets back. Types only. The engine (src/orchestrator/) runs every execution through the same
 * sandbox path as `aegis run` (policy, gateway, audit log, runSandbox): there is no second code
 * path for the sandbox itself. Warm sandboxes are prepared ahead and serve one execution only.
 */
import type { AuditEventInput } from '../audit/event.js';

/** An execution's status, as the API reports it (issue 11's contract). */
export type ExecutionStatus = 'queued' | 'running' | 'exited' | 'oom' | 'timeout' | 'killed' | 'failed_to_start' | 'lost';

/** The statuses an execution ends in. */
export type FinalStatus = Exclude<ExecutionStatus, 'queued' | 'running'>;

/** One deployed version of an agent, with its code already extracted on this host. */
export interface AgentVersionRef {
  readonly name: string;
  readonly version: number;
  /** `sha256:<hex>` of the manifest text as deployed. */
  readonly manifestDigest: string;
  /** `sha256:<hex>` of the uploaded code archive. */
  readonly codeDigest: string;
  /** Host path of the deployed agent.yaml; its folder holds the extracted code. Never written. */
  readonly manifestPath: string;
}

/** What a caller may pass to one execution (checked against the manifest by the engine). */
export interface ExecutionInput {
  readonly args: readonly string[];
  readonly stdin?: string;
  /** Environment additions: only names the manifest allows (`sandbox.env_refused` otherwise). */
  readonly env?: Readonly<Record<string, string>>;
}

export interface ExecutionRequest {
  readonly executionId: string;
  readonly agent: AgentVersionRef;
  readonly input: ExecutionInput;
  /**
   * Host folder for this execution's outputs, created empty by the caller: every `fs.write`
   * path of the manifest is backed by a subfolder of it (the API serves it as a tar stream).
   */
  readonly outputsDir: string;
  /** Who asked (API key id and role, or a local uid), added to the run's audit provenance. */
  readonly principal: Readonly<Record<string, unknown>>;
}

/** Callbacks of one execution; none may throw (the engine ignores what they throw). */
export interface ExecutionObserver {
  /** The sandbox is claimed and the agent is being started; `warm` when it came from a pool. */
  started(info: { readonly warm: boolean }): void;
  stdout(chunk: Buffer): void;
  stderr(chunk: Buffer): void;
  /** Every audit event of the execution as it is appended to the log. */
  audit(event: AuditEventInput): void;
}

/** The same fields `aegis run --summary` writes, plus how the sandbox was obtained. */
export interface ExecutionSummary {
  readonly executionId: string;
  readonly status: Exclude<FinalStatus, 'lost'>;
  readonly exitCode: number;
  readonly durationMs: number;
  readonly cpuMs: number;
  readonly maxMemoryBytes: number;
  readonly warm: boolean;
  readonly stopReason?: string;
  readonly warnings?: readonly string[];
  readonly alerts?: { readonly raised: number; readonly delivered: number; readonly failed: number; readonly dropped: number };
  /** For `failed_to_start`: the error code and message. */
  readonly error?: { readonly code: string; readonly message: string };
}

export interface RunningExecution {
  readonly executionId: string;
  /** TERM, grace, KILL; the execution ends `killed`. Idempotent. */
  cancel(): void;
  /** Never rejects: a failure is a summary with status `failed_to_start`. */
  readonly done: Promise<ExecutionSummary>;
}

export interface PoolStatus {
  readonly agent: string;
  readonly version: number;
  readonly target: number;
  readonly warm: number;
  readonly preparing: number;
}

export interface EngineMetrics {
  /** Seconds from execute() to the agent's start, by how the sandbox was obtained. */
  readonly startLatency: { readonly warm: readonly number[]; readonly cold: readonly number[] };
  readonly running: number;
}

export interface ExecutionEngine {
  execute(req: ExecutionRequest, observer: ExecutionObserver): RunningExecution;
  /** Keeps `warm` prepared sandboxes of this version (0 removes the pool); refilled after each claim. */
  setPool(agent: AgentVersionRef, warm: number): void;
  pools(): PoolStatus[];
  metrics(): EngineMetrics;
  /** Cancels every running execution (recorded `killed`) and destroys every warm sandbox. */
  shutdown(): Promise<void>;
  /**
   * The runs a dead engine left in this state dir, swept (sandbox, cgroup, mounts, netns, veth,
   * nft table removed) and audited as `run.lost` when the engine was created; the dispatcher
   * marks those executions `lost`. Optional so that test doubles need not implement it.
   */
  recover?(): Promise<RecoveredExecution[]>;
}

/** A run a dead engine (or `aegis run`) left behind, swept at start and audited as `run.lost`. */
export interface RecoveredExecution {
  /** The run's id: the execution id for executions this engine ran (a warm sandbox's own id otherwise). */
  readonly executionId: string;
  readonly agent: string | null;
}
