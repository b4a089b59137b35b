/**
 * Orchestrator errors. The codes are API: the server and the dispatcher branch on `code`.
 */
import { AegisError } from '../errors.js';

export type OrchestratorErrorCode =
  /** A lifecycle or execution-status transition the state machine does not allow (lifecycle.ts). */
  | 'orchestrator.invalid_transition'
  /** An execution request the engine refuses before anything is made (an id unusable as a sandbox id, ...). */
  | 'orchestrator.invalid_request'
  /** The host-wide budget (sandboxes, memory) has no room for a hot sandbox even after evicting warm ones. */
  | 'orchestrator.budget_exhausted'
  /** The engine is shutting down: no new execution starts. */
  | 'orchestrator.shutting_down';

export class OrchestratorError extends AegisError<OrchestratorErrorCode> {}
