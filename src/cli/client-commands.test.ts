import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseConfig } from '../config/index.js';
import { exitCodeOf, parseEnvFlags } from './client-commands.js';
import type { CliContext } from './context.js';
import { main } from './main.js';

const tmp = mkdtempSync(join(tmpdir(), 'aegis-client-cli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A CLI context with captured output and the configuration of `env`. */
function context(env: Record<string, string>): CliContext & { stdout: string; stderr: string } {
  const ctx = {
    stdout: '',
    stderr: '',
    exitCode: 0,
    out(t: string) {
      ctx.stdout += t;
    },
    err(t: string) {
      ctx.stderr += t;
    },
    config: () => parseConfig({ AEGIS_HOME: tmp, ...env }, { homedir: tmp, operator: { uid: 1000, name: 'op' }, isDirectory: () => true }),
  };
  return ctx;
}

describe('client commands', () => {
  it("exit codes: the agent's, 137 when killed, 125 when it could not start or was lost", () => {
    assert.equal(exitCodeOf('exited', 0), 0);
    assert.equal(exitCodeOf('exited', 42), 42);
    for (const s of ['oom', 'timeout', 'killed'] as const) assert.equal(exitCodeOf(s, null), 137);
    for (const s of ['failed_to_start', 'lost'] as const) assert.equal(exitCodeOf(s, null), 125);
  });
  it('--env NAME=VALUE flags', () => {
    assert.deepEqual(parseEnvFlags(['A=1', 'B=x=y', 'C=']), { A: '1', B: 'x=y', C: '' });
    assert.equal(typeof parseEnvFlags(['=1']), 'string');
    assert.equal(typeof parseEnvFlags(['NOEQUALS']), 'string');
  });
  it('an unreachable server: exit 3 with the address and what to check (ps, kill, logs); 125 for exec', async () => {
    const sock = join(tmp, 'none.sock');
    for (const argv of [['ps'], ['kill', 'x'], ['logs', 'x'], ['pool', 'set', 'a', '1']]) {
      const ctx = context({ AEGIS_SERVER: `unix:${sock}` });
      assert.equal(await main(argv, ctx), 3, argv.join(' '));
      assert.match(ctx.stderr, new RegExp(`cannot reach the AEGIS server at unix:${sock} \\(ENOENT\\).*aegis serve`), argv.join(' '));
    }
    const ctx = context({ AEGIS_SERVER: `unix:${sock}` });
    assert.equal(await main(['exec', 'agent', '--', 'a'], ctx), 125);
  });
  it('--server is checked: a bad address is a usage error (2)', async () => {
    const ctx = context({});
    assert.equal(await main(['ps', '--server', 'ftp://host'], ctx), 2);
    assert.match(ctx.stderr, /config\.invalid: --server=ftp:\/\/host/);
  });
});
