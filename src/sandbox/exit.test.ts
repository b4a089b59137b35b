import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyExit, EXIT_KILLED, type ExitFacts } from './exit.js';

const f = (o: Partial<ExitFacts>): ExitFacts => ({
  stoppedBy: null,
  code: 0,
  signal: null,
  signalNumber: null,
  oom: false,
  containerStarted: true,
  ...o,
});

describe('classifyExit', () => {
  it("passes the agent's own exit code through", () => {
    assert.deepEqual(classifyExit(f({ code: 3 })), { kind: 'ended', status: 'exited', exitCode: 3 });
    assert.deepEqual(classifyExit(f({ code: 0 })), { kind: 'ended', status: 'exited', exitCode: 0 });
  });
  it('a signal that ended the agent is 128 + its number', () => {
    assert.deepEqual(classifyExit(f({ code: null, signal: 'SIGSEGV', signalNumber: 11 })), {
      kind: 'ended',
      status: 'exited',
      exitCode: 139,
    });
  });
  it('what AEGIS stopped is timeout or killed, 137, whatever the runtime said (even an OOM)', () => {
    for (const stoppedBy of ['timeout', 'killed'] as const) {
      assert.deepEqual(classifyExit(f({ stoppedBy, code: 0 })), { kind: 'ended', status: stoppedBy, exitCode: EXIT_KILLED });
      assert.deepEqual(classifyExit(f({ stoppedBy, code: null, signal: 'SIGKILL', oom: true })), {
        kind: 'ended',
        status: stoppedBy,
        exitCode: EXIT_KILLED,
      });
    }
  });
  it('oom only when the kill came with an OOM event (SIGKILL, or 137 relayed by the runtime)', () => {
    assert.deepEqual(classifyExit(f({ code: null, signal: 'SIGKILL', oom: true })), {
      kind: 'ended',
      status: 'oom',
      exitCode: EXIT_KILLED,
    });
    assert.deepEqual(classifyExit(f({ code: 137, oom: true })), { kind: 'ended', status: 'oom', exitCode: EXIT_KILLED });
    assert.deepEqual(
      classifyExit(f({ code: 137, oom: false })),
      { kind: 'ended', status: 'exited', exitCode: 137 },
      'the agent itself exited 137',
    );
    assert.deepEqual(
      classifyExit(f({ code: 1, oom: true })),
      { kind: 'ended', status: 'exited', exitCode: 1 },
      'an OOM the agent survived is not oom',
    );
  });
  it('a container that never started is not_started unless the runtime exited 0', () => {
    assert.deepEqual(classifyExit(f({ containerStarted: false, code: 1 })), { kind: 'not_started', detail: 'exit 1' });
    assert.deepEqual(classifyExit(f({ containerStarted: false, code: null, signal: 'SIGKILL' })), {
      kind: 'not_started',
      detail: 'exit SIGKILL',
    });
    assert.deepEqual(classifyExit(f({ containerStarted: false, code: 0 })), { kind: 'ended', status: 'exited', exitCode: 0 });
  });
});
