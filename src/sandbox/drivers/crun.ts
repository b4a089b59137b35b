/**
 * crun: the default runtime (the fastest to start here).
 * Needs, on hybrid cgroup v1 hosts, a mounted hugetlb v1 hierarchy (`aegis doctor --fix`).
 */
import { hybridHugetlbMissing } from '../cgroups/index.js';
import { OciCliDriver } from './oci-cli.js';

export class CrunDriver extends OciCliDriver {
  constructor(binary = 'crun') {
    super('crun', binary);
  }

  override unavailableReason(): string | null {
    const base = super.unavailableReason();
    if (base !== null) return base;
    const missing = hybridHugetlbMissing();
    return missing === null ? null : `crun cannot run on this hybrid cgroup host: ${missing}; run "aegis doctor --fix"`;
  }
}
