/** The runtime drivers, by isolation level. */
import type { Isolation } from '../../policy/types.js';
import { CrunDriver } from './crun.js';
import { RuncDriver } from './runc.js';
import { RunscDriver } from './runsc.js';
import type { RuntimeDriver } from './types.js';

export type { RuntimeDriver, RuntimeRun } from './types.js';

export function driverFor(isolation: Isolation): RuntimeDriver {
  switch (isolation) {
    case 'crun':
      return new CrunDriver();
    case 'runc':
      return new RuncDriver();
    case 'gvisor':
      return new RunscDriver();
  }
}
