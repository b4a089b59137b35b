/** The sandbox conformance suite on gVisor (runsc). */
import { runConformance } from './sandbox-conformance.js';

runConformance('gvisor');
