/**
 * Public API of the orchestrator: the engine the server's dispatcher runs executions with, the
 * pure lifecycle state machines it shares with the store, and the contract types.
 */
export { createEngine, type Engine, type EngineOptions } from './engine.js';
export { OrchestratorError, type OrchestratorErrorCode } from './errors.js';
export {
  transition,
  executionTransition,
  isFinalExecutionStatus,
  isFinalSandboxState,
  sameKey,
  EXECUTION_STATUSES,
  EXECUTION_TRANSITIONS,
  SANDBOX_STATES,
  SANDBOX_EVENTS,
  SANDBOX_TRANSITIONS,
  type SandboxState,
  type SandboxEvent,
  type SandboxKey,
  type TransitionResult,
} from './lifecycle.js';
export type * from './types.js';
