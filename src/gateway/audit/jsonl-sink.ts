/**
 * A JSON-lines file AuditSink: one event per line, `time` filled in when absent.
 * Used for a run until the audit log service is wired; the events are the same inputs.
 * Writes are synchronous appends so that events survive a crash of the gateway process.
 */
import { appendFileSync, openSync, closeSync } from 'node:fs';
import type { AuditEventInput, AuditSink } from '../../audit/event.js';

export class JsonlFileSink implements AuditSink {
  private fd: number | null;
  constructor(readonly path: string) {
    this.fd = openSync(path, 'a', 0o600);
  }
  append(event: AuditEventInput): void {
    if (this.fd === null) {
      process.stderr.write(`aegis gateway: audit event after the sink was closed: ${event.action}\n`);
      return;
    }
    const line = JSON.stringify({ v: 1, time: new Date().toISOString(), ...event });
    appendFileSync(this.fd, `${line}\n`);
  }
  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
