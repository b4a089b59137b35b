/**
 * crun and runc share the runc command line (`--root R run --bundle B --pid-file F ID`).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { findExecutable } from '../../host/exec.js';
import type { Isolation } from '../../policy/types.js';
import type { OciConfig } from '../spec/oci.js';
import type { RuntimeDriver, RuntimeRun } from './types.js';

export class OciCliDriver implements RuntimeDriver {
  readonly binary: string;
  readonly cgroupMode: 'inherit' | 'child' = 'child';
  readonly rlimitsInherited: boolean = false;
  constructor(
    readonly isolation: Isolation,
    name: string,
  ) {
    this.binary = findExecutable(name) ?? name;
  }

  pidsOverhead(): number {
    return 0;
  }

  unavailableReason(): string | null {
    return findExecutable(this.binary) === null ? `${this.binary} is not installed (Debian package "${this.binary}")` : null;
  }

  adapt(config: OciConfig): OciConfig {
    return config;
  }

  /** Options before the subcommand. */
  protected globalArgs(r: RuntimeRun): string[] {
    return ['--root', r.stateRoot];
  }

  runArgs(r: RuntimeRun): string[] {
    return [...this.globalArgs(r), 'run', '--bundle', r.bundleDir, '--pid-file', r.pidFile, r.id];
  }

  killArgs(): string[] | null {
    return null;
  }

  hasState(r: Pick<RuntimeRun, 'id' | 'stateRoot'>): boolean {
    return existsSync(join(r.stateRoot, r.id));
  }

  deleteArgs(r: RuntimeRun): string[] {
    return [...this.globalArgs(r), 'delete', '--force', r.id];
  }
}
