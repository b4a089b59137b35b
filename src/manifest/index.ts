/** The manifest area: `agent.yaml` v1 schema, parsing with positions, units. Pure. */
export { manifestSchema, parseImageRef, DEFAULTS, LIMITS, type Manifest, type ManifestInput } from './schema.js';
export { parseManifest, parseManifestOrThrow, formatIssue, MAX_MANIFEST_BYTES, type ManifestIssue, type ParseResult } from './parse.js';
export { compilePolicy, CPU_PERIOD_US } from './compile.js';
export { ManifestError, type ManifestErrorCode } from './errors.js';
