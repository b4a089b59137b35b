import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditLog } from '../audit/log.js';
import { RunAudit } from './run-services.js';

describe('RunAudit (the sink of one aegis run)', () => {
  it('reports the first event that could not be logged once, and fails the close', async () => {
    // A log whose store has gone away: every append rejects.
    const broken = { append: () => Promise.reject(new Error('disk full')), close: () => Promise.resolve() } as unknown as AuditLog;
    const audit = new RunAudit(broken);
    const failures: string[] = [];
    audit.onFailure = (e) => failures.push(e.message);
    await audit.append({ actor: {}, action: 'run.start', decision: 'info', payload: {} });
    await audit.append({ actor: {}, action: 'run.exit', decision: 'info', payload: {} });
    assert.deepEqual(failures, ['disk full']);
    await assert.rejects(audit.close(), /disk full/);
  });
});
