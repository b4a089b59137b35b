import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import type { Policy } from '../policy/types.js';
import { outputVolumes } from './outputs.js';
import { ExecutionSink } from './sinks.js';

const ev = (execution: string): AuditEventInput => ({
  actor: { agent: 'a', execution },
  action: 'net.dns',
  decision: 'allow',
  payload: {},
});

describe('ExecutionSink (a warm sandbox claimed by an execution)', () => {
  it("before the claim: events pass unchanged and no one observes; after: the provisional id becomes the execution's", () => {
    const logged: AuditEventInput[] = [];
    const seen: AuditEventInput[] = [];
    const sink = new ExecutionSink({ append: (e) => void logged.push(e) }, 'aegis-warm1');
    void sink.append(ev('aegis-warm1'));
    sink.bind('exec-7', (e) => seen.push(e));
    void sink.append(ev('aegis-warm1'));
    void sink.append(ev('other')); // not this sandbox's id: left alone
    assert.deepEqual(
      logged.map((e) => e.actor.execution),
      ['aegis-warm1', 'exec-7', 'other'],
    );
    assert.deepEqual(
      seen.map((e) => e.actor.execution),
      ['exec-7', 'other'],
    );
  });
  it('an observer that throws does not stop the event from being logged', () => {
    const logged: AuditEventInput[] = [];
    const sink = new ExecutionSink({ append: (e) => void logged.push(e) }, 'x');
    sink.bind('exec-1', () => {
      throw new Error('observer bug');
    });
    void sink.append(ev('x'));
    assert.equal(logged.length, 1);
  });
});

describe('outputVolumes (fs.write paths backed by the outputs folder)', () => {
  const policy = (write: string[]): Policy => ({ fs: { read: [], write } }) as unknown as Policy;
  it('one rw volume per outermost write path, at the same path below the outputs folder, created 0700', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-outputs-'));
    try {
      const v = outputVolumes(policy(['/data/out', '/data/out/sub', '/tmp2/x/', '/srv']), dir, 8 * 1024 ** 2);
      assert.deepEqual(
        v.map((x) => [x.host.slice(dir.length), x.sandbox, x.mode]),
        [
          ['/data/out', '/data/out', 'rw'],
          ['/srv', '/srv', 'rw'],
          ['/tmp2/x', '/tmp2/x', 'rw'],
        ],
      );
      assert.equal(statSync(join(dir, 'data', 'out')).mode & 0o777, 0o700);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('no write path: no volume', () => {
    assert.deepEqual(outputVolumes(policy([]), '/nonexistent', 1), []);
  });
});
