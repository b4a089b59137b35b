import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { main } from './main.js';
import { EXIT, type CliContext } from './context.js';
import { loadConfig } from '../config/index.js';

function context(env: Record<string, string>): CliContext & { errText: string } {
  const ctx = {
    errText: '',
    exitCode: 0,
    out: () => undefined,
    err: (t: string) => void (ctx.errText += t),
    config: () => loadConfig(env),
  };
  return ctx;
}

describe('aegis main', () => {
  it('reports a bad setting as its message and code, not as an internal error', async () => {
    const ctx = context({ AEGIS_MONITOR: 'bad' });
    const code = await main(['doctor', '--json'], ctx);
    assert.equal(code, EXIT.cannotStart);
    assert.match(ctx.errText, /^aegis: AEGIS_MONITOR=bad must be auto, on or off \(config\.[a-z_]+\)\n$/);
  });
});
