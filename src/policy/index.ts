/** The policy engine: compile a validated manifest once, then answer every access question. Pure. */
export { compilePolicy, CPU_PERIOD_US } from './compile.js';
export { compileEgress } from './net.js';
export { decidePath, normalizeSandboxPath, isWithin, type FsMode } from './paths.js';
export { classifyHost, parseAllowEntry, parseLooseIpv4, specialBlockOf, type HostClass, type IpAddress } from './host.js';
export * from './types.js';
