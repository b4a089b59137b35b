/**
 * runc: the reference OCI runtime. Its `--root` must be absolute and not a symlink.
 *
 * ARCHITECTURE NOTE (rlimits): runc 1.1 sets `process.rlimits` from its host-side parent with
 * prlimit(2) on the container's init, which needs CAP_SYS_RESOURCE over the init's user
 * namespace. That namespace is owned by a dedicated uid, not root (src/sandbox/userns.ts), and
 * root on these hosts lacks CAP_SYS_RESOURCE, so runc would fail with EPERM. adapt() therefore
 * empties `process.rlimits` and AEGIS starts runc under `prlimit` with the very limits of the
 * compiled bundle (SANDBOX_RLIMITS): the agent inherits them (checked by the quota tests).
 */
import type { OciConfig } from '../spec/oci.js';
import { OciCliDriver } from './oci-cli.js';

export class RuncDriver extends OciCliDriver {
  constructor(binary = 'runc') {
    super('runc', binary);
  }

  override readonly rlimitsInherited = true;

  override adapt(config: OciConfig): OciConfig {
    return { ...config, process: { ...config.process, rlimits: [] } };
  }
}
