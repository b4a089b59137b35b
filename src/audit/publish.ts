/**
 * Checkpoint publication: every signed checkpoint is also sent somewhere the store's owner does
 * not control as tightly, so that rewriting or rolling back the store is caught against what was
 * published. Sinks: a second file (default; ideally on another disk or host mount), a webhook
 * (HTTP POST of the note, text/plain), or none.
 *
 * ARCHITECTURE NOTE: the default file sink lives beside the store under $AEGIS_HOME; it catches
 * rollback or replacement of the store directory, not an attacker who controls all of
 * $AEGIS_HOME. Point AEGIS_AUDIT_PUBLISH at another location or a webhook for that.
 */
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AuditError } from './errors.js';

export interface CheckpointSink {
  readonly description: string;
  /** Publishes one signed checkpoint note. */
  publish(note: string): Promise<void>;
  /** Records the log's verifier key with the sink on first use (file sinks keep a copy). */
  pinKey(verifierKey: string): Promise<void>;
}

export class FileSink implements CheckpointSink {
  readonly description: string;
  constructor(readonly dir: string) {
    this.description = `file:${dir}`;
  }

  async publish(note: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const fh = await open(join(this.dir, 'checkpoints.jsonl'), 'a', 0o600);
    try {
      await fh.write(`${JSON.stringify({ note })}\n`);
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  async pinKey(verifierKey: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFile(join(this.dir, 'log.pub'), `${verifierKey}\n`, { flag: 'wx', mode: 0o644 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
}

export class WebhookSink implements CheckpointSink {
  readonly description: string;
  constructor(private readonly url: string) {
    this.description = url;
  }

  async publish(note: string): Promise<void> {
    const res = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain; charset=utf-8' },
      body: note,
      signal: AbortSignal.timeout(5000),
    });
    if (!res.ok) throw new AuditError('audit.publish_failed', `webhook ${this.url} answered ${res.status}`);
  }

  async pinKey(verifierKey: string): Promise<void> {
    void verifierKey; // the webhook receiver pins the key it first sees (out of scope here)
  }
}

export class NoSink implements CheckpointSink {
  readonly description = 'none';
  async publish(): Promise<void> {}
  async pinKey(): Promise<void> {}
}

/** Reads what a file sink published: notes in order and the pinned key (if any). */
export async function readPublished(dir: string): Promise<{ notes: string[]; pinnedKey?: string }> {
  let text = '';
  try {
    text = await readFile(join(dir, 'checkpoints.jsonl'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const lines = text.split('\n');
  lines.pop();
  const notes = lines.map((l) => {
    try {
      const v = JSON.parse(l) as { note?: unknown };
      return typeof v.note === 'string' ? v.note : l;
    } catch {
      return l;
    }
  });
  try {
    const pinnedKey = (await readFile(join(dir, 'log.pub'), 'utf8')).trim();
    return { notes, pinnedKey };
  } catch (err) {
    // Only a missing pin means "no pin": any other failure must not quietly fall back to
    // trusting the store's own key (fail secure).
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { notes };
    throw new AuditError('audit.store_io', `cannot read the pinned key ${join(dir, 'log.pub')}: ${(err as Error).message}`, { cause: err });
  }
}

/** Parses AEGIS_AUDIT_PUBLISH: `file:<dir>`, `http(s)://...`, or `none`; default `file:<defaultDir>`. */
export function sinkFromSpec(spec: string | undefined, defaultDir: string): CheckpointSink {
  if (spec === undefined || spec === '') return new FileSink(defaultDir);
  if (spec === 'none') return new NoSink();
  if (spec.startsWith('file:')) return new FileSink(spec.slice(5));
  if (spec.startsWith('https://') || spec.startsWith('http://')) return new WebhookSink(spec);
  throw new AuditError(
    'audit.config_invalid',
    `AEGIS_AUDIT_PUBLISH must be file:<dir>, http(s)://<url> or none, not ${JSON.stringify(spec)}`,
  );
}
