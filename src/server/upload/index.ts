/**
 * The upload area: what the server accepts from a deployer (a manifest's text and a `.tar.gz`
 * of the agent's code), checked and bounded before anything is stored or extracted.
 */
export {
  extractCodeArchive,
  sha256Digest,
  entrySegments,
  DEFAULT_UPLOAD_LIMITS,
  type UploadLimits,
  type ExtractResult,
} from './extract.js';
export { validateManifestText, type ManifestValidation, type ValidateManifestOptions } from './manifest.js';
export { UploadError, type UploadErrorCode } from './errors.js';
