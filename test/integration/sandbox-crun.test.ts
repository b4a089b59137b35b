/** The sandbox conformance suite on crun. */
import { runConformance } from './sandbox-conformance.js';

runConformance('crun');
