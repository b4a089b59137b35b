/** The sandbox conformance suite on gVisor (runsc). */
import { runConformance } from './sandbox-conformance.js';

runConformance('gvisor', {
  skip: {
    'joins a network namespace it is given (egress gateway hook)':
      'runsc runs with --network=none (its own netstack, no host interfaces) until the gateway hands gVisor a namespace',
  },
});
