/**
 * The deploy check (POST /v1/agents): the manifest text validated exactly as `aegis validate`
 * does (src/server/upload's validateManifestText: the same issues with line/column), and the
 * code archive extracted once into a private scratch folder under the server's data folder with
 * every bound of src/server/upload (no traversal, no links, no devices, no bombs), then removed.
 * Nothing is stored unless both pass: the route stores the archive only after this returns.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { CheckedUpload } from './app.js';
import { ServerError } from './errors.js';
import { extractCodeArchive, sha256Digest, UploadError, validateManifestText, type UploadLimits } from './upload/index.js';

export function uploadChecker(
  scratchDir: string,
  limits: Partial<UploadLimits> = {},
): (manifest: string, archive: Buffer) => Promise<CheckedUpload> {
  return async (manifest, archive) => {
    const v = validateManifestText(manifest);
    if (!v.ok)
      throw new ServerError(
        'server.manifest_invalid',
        `the manifest is invalid (${v.issues.length} issue${v.issues.length === 1 ? '' : 's'})`,
        {
          details: { issues: v.issues.map((i) => ({ line: i.line, column: i.column, path: i.path, message: i.message })) },
        },
      );
    await mkdir(scratchDir, { recursive: true, mode: 0o700 });
    const dest = join(scratchDir, `check-${randomUUID()}`);
    try {
      await extractCodeArchive(archive, dest, limits);
    } catch (err) {
      if (err instanceof UploadError) {
        const code =
          err.code === 'upload.archive_too_large' || err.code === 'upload.content_too_large'
            ? 'server.payload_too_large'
            : 'server.archive_invalid';
        throw new ServerError(code, `${err.code}: ${err.message}`, { cause: err });
      }
      throw err;
    } finally {
      await rm(dest, { recursive: true, force: true });
    }
    return { name: v.policy.agent.name, manifestDigest: v.manifestDigest, codeDigest: sha256Digest(archive) };
  };
}
