/** The sandbox conformance suite on runc. */
import { runConformance } from './sandbox-conformance.js';

runConformance('runc');
