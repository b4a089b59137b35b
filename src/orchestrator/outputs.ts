/**
 * An execution's output folder: every `fs.write` path of the manifest is backed by a subfolder of
 * `outputsDir` (the same path below it: `/data/outputs` -> `<outputsDir>/data/outputs`), attached
 * as a size-limited rw volume (src/sandbox/volumes.ts), so the API can serve the folder as a tar.
 * A write path inside another write path is covered by the outer one's volume.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { normalizeSandboxPath } from '../policy/paths.js';
import type { Policy } from '../policy/types.js';
import type { VolumeRequest } from '../sandbox/run.js';

/** The volumes of the outputs folder; creates the subfolders (mode 0700: the copy back is made by root). */
export function outputVolumes(policy: Policy, outputsDir: string, sizeBytes: number): VolumeRequest[] {
  const paths = [
    ...new Set(policy.fs.write.map((p) => normalizeSandboxPath(p)).filter((p): p is string => p !== null && p !== '/')),
  ].sort();
  const outer = paths.filter((p) => !paths.some((q) => q !== p && p.startsWith(q + '/')));
  return outer.map((sandbox) => {
    const host = join(outputsDir, sandbox);
    mkdirSync(host, { recursive: true, mode: 0o700 });
    return { host, sandbox, mode: 'rw', sizeBytes };
  });
}
