/**
 * The policy engine: the vocabularies (hosts, image references, paths, syscalls, the Policy type)
 * and every access decision. Pure. A manifest becomes a Policy in src/manifest/compile.ts.
 */
export { compileEgress } from './net.js';
export { decideTool, decideToolOn, findToolServer, ANY_TOOL } from './tools.js';
export { decidePath, normalizeSandboxPath, isWithin, type FsMode } from './paths.js';
export { classifyHost, parseAllowEntry, parseLooseIpv4, specialBlockOf, type HostClass, type IpAddress } from './host.js';
export * from './types.js';
