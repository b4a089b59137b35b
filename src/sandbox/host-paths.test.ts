import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Policy } from '../policy/types.js';
import { unbackedWritePaths, unbackedWriteWarning } from './host-paths.js';

const policy = (write: string[]): Policy => ({ fs: { read: [], write } }) as unknown as Policy;

describe('unbackedWritePaths', () => {
  it('lists fs.write paths no volume covers (their writes vanish with the sandbox)', () => {
    assert.deepEqual(unbackedWritePaths(policy(['/data/outputs', '/data/scratch']), ['/data/outputs']), ['/data/scratch']);
  });
  it('counts a path inside a volume as backed, and a volume inside a path as not', () => {
    assert.deepEqual(unbackedWritePaths(policy(['/data/out/a']), ['/data/out']), []);
    assert.deepEqual(unbackedWritePaths(policy(['/data/out']), ['/data/out/a']), ['/data/out']);
  });
  it('never lists /tmp (the sandbox own scratch space)', () => assert.deepEqual(unbackedWritePaths(policy(['/tmp']), []), []));
  it('says what happens and how to keep the files', () => assert.match(unbackedWriteWarning('/x'), /discarded.*--volume HOST:\/x:rw/));
});
