/** The sandbox conformance suite on gvisor. */
import { runConformance } from './sandbox-conformance.js';

runConformance('gvisor');
