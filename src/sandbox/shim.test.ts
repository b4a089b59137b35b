import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { SHIM_ARGV, shimLine } from './shim.js';

/** Runs the shim with the host's /bin/sh (dash on Debian, as in the images) and returns what the agent saw. */
function throughShim(argv: string[], env: Record<string, string>, stdin = ''): string {
  const r = spawnSync(SHIM_ARGV[0]!, SHIM_ARGV.slice(1), {
    input: shimLine(argv, env) + stdin,
    env: { PATH: '/usr/bin:/bin' },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

describe('the prepared sandbox shim', () => {
  it('execs argv with hostile strings intact (quotes, $, backticks, newlines, backslashes), with the env exported', () => {
    const hostile = ["it's", '$(touch /tmp/pwned)', '`id`', 'a\nb', 'back\\slash', ' spaced ', '', '"dq"', ';exit 3;'];
    const out = throughShim(['/bin/sh', '-c', 'printf "[%s]" "$@"; printf "<%s><%s>" "$X" "$Y"', 'agent', ...hostile], {
      X: "v'al\nue$HOME",
      Y: '',
    });
    assert.equal(out, hostile.map((h) => `[${h}]`).join('') + "<v'al\nue$HOME><>");
  });
  it("the agent's stdin starts right after the line", () => {
    assert.equal(throughShim(['/bin/cat'], {}, 'first line\nsecond\n'), 'first line\nsecond\n');
  });
  it('the shell variables of the shim are not exported to the agent', () => {
    const out = throughShim(['/usr/bin/env'], { A: '1' });
    assert.deepEqual(out.trim().split('\n').sort(), ['A=1', 'PATH=/usr/bin:/bin']);
  });
  it('refuses a variable name that is not one', () => {
    assert.throws(() => shimLine(['/bin/true'], { 'A; rm -rf /': 'x' }));
  });
});
