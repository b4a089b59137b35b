/**
 * crun: the default runtime (the fastest to start here).
 *
 * ARCHITECTURE NOTE: crun runs with `--cgroup-manager=disabled` and is started inside the run's
 * cgroup (cgroupMode 'inherit'), where AEGIS already set the limits. crun then sets up no
 * cgroup of its own, which also avoids its refusal of hybrid hosts without a hugetlb hierarchy.
 * There is no devices cgroup: the agent has no capabilities in its user namespace (no mknod),
 * /dev is a tmpfs holding only the runtime's default safe device nodes, and every bind mount is
 * nodev.
 */
import { OciCliDriver } from './oci-cli.js';
import type { RuntimeRun } from './types.js';

export class CrunDriver extends OciCliDriver {
  constructor(binary = 'crun') {
    super('crun', binary);
  }

  override readonly cgroupMode = 'inherit' as const;

  protected override globalArgs(r: RuntimeRun): string[] {
    return ['--cgroup-manager=disabled', '--root', r.stateRoot];
  }
}
