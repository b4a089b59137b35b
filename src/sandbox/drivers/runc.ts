/** runc: the reference OCI runtime. Its `--root` must be absolute and not a symlink. */
import { OciCliDriver } from './oci-cli.js';

export class RuncDriver extends OciCliDriver {
  constructor(binary = 'runc') {
    super('runc', binary);
  }
}
