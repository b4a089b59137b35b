import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyUnlistableFiles } from './microvm-files.js';
import type { OciConfig } from '../spec/oci.js';

const NOBODY = { uid: 65534, gid: 65534 };

function withFiles(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-mvfiles-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function config(source: string): OciConfig {
  return { mounts: [{ type: 'bind', source, destination: '/etc/resolv.conf', options: ['bind', 'ro'] }] } as unknown as OciConfig;
}

// Runs as root (chown to QEMU's uid), as the launcher does.
describe('copyUnlistableFiles (microVM)', () => {
  it('copies a world-readable file from a folder QEMU cannot list, read-only', () =>
    withFiles((dir) => {
      const run = join(dir, 'run');
      const src = join(dir, 'resolv.conf');
      writeFileSync(src, 'nameserver 10.0.0.1\n', { mode: 0o644 });
      chmodSync(dir, 0o711);
      const out = copyUnlistableFiles(config(src), run, NOBODY);
      const copy = out.mounts[0]!.source;
      assert.notEqual(copy, src);
      assert.equal(readFileSync(copy, 'utf8'), 'nameserver 10.0.0.1\n');
      assert.equal(statSync(copy).mode & 0o777, 0o444);
    }));

  it('refuses a file others may not read instead of making a readable copy of it', () =>
    withFiles((dir) => {
      const src = join(dir, 'secret');
      writeFileSync(src, 'private', { mode: 0o600 });
      chmodSync(src, 0o600);
      chmodSync(dir, 0o711);
      assert.throws(() => copyUnlistableFiles(config(src), join(dir, 'run'), NOBODY), /not readable by others/);
    }));
});
