/**
 * Public API of the sandbox area, as the CLI and the server use it:
 * `runSandbox` (the whole lifecycle), `dryRun` (the bundle a run would use), `sweepStaleRuns`
 * (clean up after a killed AEGIS), and the pure spec compiler for tools and tests.
 */
export {
  runSandbox,
  dryRun,
  parseVolumeFlag,
  newExecutionId,
  EXIT_KILLED,
  EXIT_CANNOT_START,
  AGENT_HOST_UID,
  AGENT_HOST_GID,
  type RunSandboxOptions,
  type RunResult,
  type RunStatus,
  type VolumeRequest,
  type OutputTarget,
  type InputSource,
} from './run.js';
export { sweepStaleRuns, DEFAULT_STATE_DIR, type SweptRun } from './state.js';
export { SandboxError, type SandboxErrorCode } from './errors.js';
export {
  compileBundle,
  mountTargets,
  type CompileOptions,
  type CompiledBundle,
  type NetworkOption,
  type ResolvedVolume,
} from './spec/compile.js';
export { compileSeccomp, DENIED_ALWAYS, type SeccompProfile } from './spec/seccomp.js';
export { validateBundle } from './spec/validate.js';
export { driverFor, type RuntimeDriver } from './drivers/index.js';
