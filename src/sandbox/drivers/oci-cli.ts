/**
 * crun and runc share the runc command line (`--root R run --bundle B --pid-file F ID`).
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import type { Isolation } from '../../policy/types.js';
import type { OciConfig } from '../spec/oci.js';
import type { RuntimeDriver, RuntimeRun } from './types.js';

/** Resolves `name` on PATH (no child process), or null. */
export function findExecutable(name: string): string | null {
  const candidates = isAbsolute(name) ? [name] : (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  return null;
}

export class OciCliDriver implements RuntimeDriver {
  readonly binary: string;
  readonly pidsOverhead = 0;
  readonly cgroupMode: 'inherit' | 'child' = 'child';
  readonly rlimitsInherited: boolean = false;
  constructor(
    readonly isolation: Isolation,
    name: string,
  ) {
    this.binary = findExecutable(name) ?? name;
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
