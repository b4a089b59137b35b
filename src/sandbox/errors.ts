/**
 * Sandbox errors. The codes are API: callers (CLI, server) and tests branch on `code`.
 */
import { AegisError } from '../errors.js';

export type SandboxErrorCode =
  /** The policy or options cannot be compiled into a safe bundle (bad path, unknown syscall, ...). */
  | 'sandbox.invalid_spec'
  /** A `--volume` flag is malformed, its host path is missing, or its sandbox path is not granted. */
  | 'sandbox.volume_refused'
  /** An `--env` flag is malformed, names a variable AEGIS sets or a secret reference, or carries a `secret:` value. */
  | 'sandbox.env_refused'
  /** A read-only volume's host folder (or an ancestor) cannot be read by the sandbox's host uid. */
  | 'sandbox.volume_unreadable'
  /** A size-limited writable volume could not be set up (mkfs, loop mount, copy-in). */
  | 'sandbox.volume_failed'
  /** The agent's code directory is missing or resolves outside the manifest's folder. */
  | 'sandbox.code_dir_refused'
  /** A user-supplied seccomp profile file is unreadable or not a Docker-format profile. */
  | 'sandbox.seccomp_profile_invalid'
  /** The OCI runtime binary is missing or the host lacks what it needs (cgroups, hugetlb mount). */
  | 'sandbox.runtime_unavailable'
  /** cgroups could not be created or a limit could not be set (fail secure: no start). */
  | 'sandbox.cgroup_failed'
  /** The sandbox's user namespace (owned by a dedicated host uid) could not be made (see userns.ts). */
  | 'sandbox.userns_failed'
  /** The Docker engine cannot express a rule of the bundle (or cannot enforce it where it runs): refused, never run weaker. */
  | 'sandbox.docker_refused'
  /** The runtime refused to create or start the container. */
  | 'sandbox.start_failed'
  /** The runtime monitor (src/monitor) could not attach, and the host requires it (no start). */
  | 'sandbox.monitor_failed'
  /** State directory problems (cannot create the run record, bundle, or scratch space). */
  | 'sandbox.state_failed';

export class SandboxError extends AegisError<SandboxErrorCode> {}
