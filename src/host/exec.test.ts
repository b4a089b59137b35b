import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { describeFailure, findExecutable, runCommand, SYSTEM_DIRS } from './exec.js';

describe('findExecutable', () => {
  it('finds a system tool in the system directories, as an absolute path', () => {
    const sh = findExecutable('sh');
    assert.ok(sh !== null && SYSTEM_DIRS.some((d) => sh.startsWith(`${d}/`)), String(sh));
  });
  it('never looks at $PATH: a directory only on $PATH is not searched', () => {
    assert.equal(findExecutable('node', ['/nonexistent']), null);
  });
  it('takes an absolute path as given, refuses a relative path with a slash, and answers null for what is missing', () => {
    assert.equal(findExecutable('/bin/sh'), '/bin/sh');
    assert.equal(findExecutable('./sh'), null);
    assert.equal(findExecutable('aegis-no-such-tool'), null);
    const plain = join(mkdtempSync(join(tmpdir(), 'aegis-exec-')), 'plain');
    writeFileSync(plain, '#!/bin/sh\n', { mode: 0o644 });
    assert.equal(findExecutable(plain), null, 'not executable');
    assert.equal(findExecutable('/usr/bin'), null, 'a directory');
  });
});

describe('runCommand', () => {
  it('returns the exit code and output of a command that fails, without throwing', async () => {
    const r = await runCommand(['/bin/sh', '-c', 'echo out; echo err >&2; exit 3'], { timeoutMs: 10_000 });
    assert.deepEqual([r.code, r.signal, r.timedOut, r.stdout, r.stderr], [3, null, false, 'out\n', 'err\n']);
    assert.match(describeFailure(['sh', '-c', 'x'], r), /^sh -c x exited 3: err$/);
  });
  it('feeds input and calls onLine for every line, including a last one without a newline', async () => {
    const lines: string[] = [];
    const r = await runCommand(['/bin/cat'], { timeoutMs: 10_000, input: 'a\nb\nc', onLine: (l, s) => lines.push(`${s}:${l}`) });
    assert.equal(r.stdout, 'a\nb\nc');
    assert.deepEqual(lines, ['stdout:a', 'stdout:b', 'stdout:c']);
  });
  it('kills a command that runs past its timeout', async () => {
    const r = await runCommand(['/bin/sleep', '30'], { timeoutMs: 200 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGKILL');
    assert.match(describeFailure(['sleep', '30'], r), /timed out/);
  });
  it('keeps only the tail of a large output', async () => {
    const r = await runCommand(['/bin/sh', '-c', 'head -c 100000 /dev/zero | tr "\\0" x; echo END'], {
      timeoutMs: 10_000,
      maxOutputBytes: 1000,
    });
    assert.equal(r.stdout.length, 1000);
    assert.ok(r.stdout.endsWith('END\n'));
  });
  it('rejects when the command cannot be started', async () => {
    await assert.rejects(runCommand(['/nonexistent/tool'], { timeoutMs: 1000 }), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  });
  it('adds extraEnv to the inherited environment', async () => {
    const r = await runCommand(['/bin/sh', '-c', 'echo "$AEGIS_EXEC_TEST"'], { timeoutMs: 10_000, extraEnv: { AEGIS_EXEC_TEST: 'yes' } });
    assert.equal(r.stdout, 'yes\n');
  });
});
