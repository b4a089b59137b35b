/**
 * The lifecycle of a sandbox (issue 11) and the status of an execution, as pure state machines:
 * a transition table plus guards. The engine, the dispatcher, the store and the tests share them.
 *
 *   cold ──prepare──▶ warm ──claim──▶ hot ──exit──▶ terminated
 *     │                 │               │
 *     └──start──────────┼──────────────▶┘ (a cold start: prepared and claimed at once)
 *     fail: cold|warm|hot ──▶ failed      destroy: warm ──▶ terminated (evicted, pool shrunk, shutdown)
 *
 * terminated and failed are final: a sandbox serves one execution and is never reused, so no
 * event leaves them (a second `claim` of the same sandbox is refused, which is what makes a warm
 * sandbox single-use).
 *
 * Pure: no I/O, no clock. A refusal is a value with a code (`orchestrator.invalid_transition`),
 * never a throw; the caller audits it (decision deny).
 */
import type { ExecutionStatus } from './types.js';

export type SandboxState = 'cold' | 'warm' | 'hot' | 'terminated' | 'failed';
export const SANDBOX_STATES: readonly SandboxState[] = ['cold', 'warm', 'hot', 'terminated', 'failed'];

/** What makes two sandboxes interchangeable: the exact agent version (manifest and code). */
export interface SandboxKey {
  readonly agent: string;
  readonly version: number;
  readonly manifestDigest: string;
  readonly codeDigest: string;
}

export type SandboxEvent =
  /** Prepare ahead (pool refill); guard: the host budget has room for one more sandbox. */
  | { readonly type: 'prepare'; readonly budgetRoom: boolean }
  /** Start cold for an execution; guard: the host budget has room (after evicting warm ones). */
  | { readonly type: 'start'; readonly budgetRoom: boolean }
  /** A warm sandbox claimed by an execution; guard: same agent version as the request. */
  | { readonly type: 'claim'; readonly sandbox: SandboxKey; readonly requested: SandboxKey }
  /** The execution ended (any final status but `failed_to_start`). */
  | { readonly type: 'exit' }
  /** A warm sandbox torn down unused (evicted for a hot one, pool shrunk or removed, shutdown). */
  | { readonly type: 'destroy' }
  /** Preparing or starting failed, or the sandbox could not be started. */
  | { readonly type: 'fail' };

export type SandboxEventType = SandboxEvent['type'];
export const SANDBOX_EVENTS: readonly SandboxEventType[] = ['prepare', 'start', 'claim', 'exit', 'destroy', 'fail'];

export type TransitionRefusal = 'orchestrator.invalid_transition';

export type TransitionResult<S> =
  | { readonly ok: true; readonly from: S; readonly to: S }
  | { readonly ok: false; readonly from: S; readonly code: TransitionRefusal; readonly reason: string };

/** The table: state x event -> next state; absent = refused. */
export const SANDBOX_TRANSITIONS: Readonly<Record<SandboxState, Partial<Record<SandboxEventType, SandboxState>>>> = {
  cold: { prepare: 'warm', start: 'hot', fail: 'failed' },
  warm: { claim: 'hot', destroy: 'terminated', fail: 'failed' },
  hot: { exit: 'terminated', fail: 'failed' },
  terminated: {},
  failed: {},
};

export function sameKey(a: SandboxKey, b: SandboxKey): boolean {
  return a.agent === b.agent && a.version === b.version && a.manifestDigest === b.manifestDigest && a.codeDigest === b.codeDigest;
}

/** The guard of an event that the table allows: null when it holds, else why not. */
function guard(e: SandboxEvent): string | null {
  switch (e.type) {
    case 'prepare':
    case 'start':
      return e.budgetRoom ? null : 'the host budget (sandboxes, memory) has no room';
    case 'claim':
      return sameKey(e.sandbox, e.requested)
        ? null
        : `the warm sandbox is ${e.sandbox.agent} v${e.sandbox.version}, the execution asks for ${e.requested.agent} v${e.requested.version}`;
    case 'exit':
    case 'destroy':
    case 'fail':
      return null;
  }
}

/** The next state of a sandbox, or a refusal (unknown pair in the table, or a guard that fails). */
export function transition(state: SandboxState, event: SandboxEvent): TransitionResult<SandboxState> {
  const to = SANDBOX_TRANSITIONS[state][event.type];
  if (to === undefined)
    return { ok: false, from: state, code: 'orchestrator.invalid_transition', reason: `${event.type} is not allowed in state ${state}` };
  const why = guard(event);
  if (why !== null) return { ok: false, from: state, code: 'orchestrator.invalid_transition', reason: `${event.type}: ${why}` };
  return { ok: true, from: state, to };
}

export function isFinalSandboxState(s: SandboxState): boolean {
  return s === 'terminated' || s === 'failed';
}

// ---------------------------------------------------------------------------------------------
// Execution status (the API's): queued -> running -> a final status; queued -> killed (cancelled
// before a worker claimed it) or lost; running -> lost (its worker died). Final statuses are final.

/** The API's status names (types.ts). */
export type ExecutionStatusName = ExecutionStatus;
export const EXECUTION_STATUSES: readonly ExecutionStatusName[] = [
  'queued',
  'running',
  'exited',
  'oom',
  'timeout',
  'killed',
  'failed_to_start',
  'lost',
];

export const EXECUTION_TRANSITIONS: Readonly<Record<ExecutionStatusName, readonly ExecutionStatusName[]>> = {
  queued: ['running', 'killed', 'lost'],
  running: ['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost'],
  exited: [],
  oom: [],
  timeout: [],
  killed: [],
  failed_to_start: [],
  lost: [],
};

export function isFinalExecutionStatus(s: ExecutionStatusName): boolean {
  return EXECUTION_TRANSITIONS[s].length === 0;
}

/** Whether an execution may move from `from` to `to` (a refusal says why; the API answers 409). */
export function executionTransition(from: ExecutionStatusName, to: ExecutionStatusName): TransitionResult<ExecutionStatusName> {
  if (EXECUTION_TRANSITIONS[from].includes(to)) return { ok: true, from, to };
  return {
    ok: false,
    from,
    code: 'orchestrator.invalid_transition',
    reason: isFinalExecutionStatus(from) ? `the execution has already ended (${from})` : `${from} cannot become ${to}`,
  };
}
