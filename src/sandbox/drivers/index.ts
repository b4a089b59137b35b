/** The runtime drivers, by isolation level. */
import type { Isolation } from '../../policy/types.js';
import { CrunDriver } from './crun.js';
import { DockerDriver } from './docker.js';
import { MicrovmDriver, type MicrovmSettings } from './microvm.js';
import { RuncDriver } from './runc.js';
import { RunscDriver } from './runsc.js';
import type { RuntimeDriver } from './types.js';

export type { RuntimeDriver, RuntimeRun } from './types.js';
export { DEFAULT_MICROVM_SETTINGS, MicrovmDriver, type MicrovmSettings } from './microvm.js';

function create(isolation: Isolation): RuntimeDriver {
  switch (isolation) {
    case 'crun':
      return new CrunDriver();
    case 'runc':
      return new RuncDriver();
    case 'gvisor':
      return new RunscDriver();
    case 'docker':
      return new DockerDriver();
    case 'microvm':
      return new MicrovmDriver();
  }
}

const drivers = new Map<Isolation, RuntimeDriver>();

/** The driver for `isolation` (drivers are stateless; one per process, its binary looked up once). */
export function driverFor(isolation: Isolation, microvm?: MicrovmSettings): RuntimeDriver {
  // The microVM driver carries the operator's settings (guest dir, emulation): one per call.
  if (isolation === 'microvm' && microvm !== undefined) return new MicrovmDriver(microvm);
  let d = drivers.get(isolation);
  if (d === undefined || d.unavailableReason() !== null) {
    d = create(isolation);
    drivers.set(isolation, d);
  }
  return d;
}
