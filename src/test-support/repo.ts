/** Paths for tests: the repository root and ../shared, found from the compiled file's location. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('repository root not found');
    dir = up;
  }
  return dir;
}

export const REPO_ROOT = findRoot();
export const SHARED_DIR = join(REPO_ROOT, '..', 'shared');
export const AEGIS_BIN = join(REPO_ROOT, 'bin', 'aegis.js');
