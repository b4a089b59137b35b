import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { serverEvent, serverIsolation, toolSandboxId } from './sandboxed-server.js';

// The sandbox itself (start, stdio, cleanup, sweep) runs end to end in test/integration/run-tools.test.ts.
describe("a local tool server's events", () => {
  const o = {
    agent: 'mail-agent',
    executionId: 'aegis-0123456789abcdef',
    server: 'files',
    sandboxId: 'aegis-0123456789abcdef.tool-files',
    serverAgent: 'files-srv',
  };
  it('are renamed tool.server.<verb>, attributed to the agent and its execution, and name the server and its sandbox', () => {
    const spawned = serverEvent(
      {
        actor: { agent: 'files-srv', execution: o.sandboxId },
        action: 'run.spawn',
        decision: 'info',
        payload: { isolation: 'crun', runtimePid: 7 },
      },
      o,
    );
    assert.deepEqual(spawned, {
      actor: { agent: 'mail-agent', execution: 'aegis-0123456789abcdef' },
      action: 'tool.server.spawn',
      decision: 'info',
      payload: { isolation: 'crun', runtimePid: 7, server: 'files', sandbox: o.sandboxId, serverAgent: 'files-srv' },
    });
  });
  it('keep decision and reason; resource.usage becomes tool.server.usage', () => {
    const killed = serverEvent(
      {
        actor: { agent: 'files-srv', execution: o.sandboxId },
        action: 'run.timeout',
        decision: 'deny',
        reason: 'run.timeout',
        payload: { exitCode: 137 },
      },
      o,
    );
    assert.deepEqual([killed.action, killed.decision, killed.reason], ['tool.server.timeout', 'deny', 'run.timeout']);
    const usage = serverEvent({ actor: {}, action: 'resource.usage', decision: 'info', payload: { cpuMs: 1 } }, o);
    assert.equal(usage.action, 'tool.server.usage');
  });
  it("have a sandbox id of their own, derived from the execution's (a run id the sweep accepts)", () => {
    assert.equal(toolSandboxId('aegis-0123456789abcdef', 'files'), 'aegis-0123456789abcdef.tool-files');
    assert.match(toolSandboxId('aegis-0123456789abcdef', 'a'.repeat(63)), /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/);
  });
});

describe("a local tool server's isolation", () => {
  it("is the run's, unless the server's manifest declares a stronger one", () => {
    assert.equal(serverIsolation(null, undefined), 'crun');
    assert.equal(serverIsolation('gvisor', undefined), 'gvisor');
    assert.equal(serverIsolation(null, 'gvisor'), 'gvisor');
    assert.equal(serverIsolation('crun', 'gvisor'), 'gvisor');
    // `aegis run --isolation crun` never weakens a server declared gvisor or microvm.
    assert.equal(serverIsolation('gvisor', 'crun'), 'gvisor');
    assert.equal(serverIsolation('microvm', 'docker'), 'microvm');
    assert.equal(serverIsolation('microvm', 'gvisor'), 'microvm');
    assert.equal(serverIsolation('runc', 'crun'), 'crun');
  });
});
