/**
 * Test fixtures for the server's tests (unit and integration): code archives, including hostile
 * ones, built in memory with tar-stream.
 */
import { gzipSync } from 'node:zlib';
import { pack as tarPack, type Header } from 'tar-stream';

/** A .tar.gz of the given entries (files by default; pass a full header for links and the like). */
export async function targz(entries: ReadonlyArray<{ header: Partial<Header> & { name: string }; body?: string }>): Promise<Buffer> {
  const p = tarPack();
  const parts: Buffer[] = [];
  p.on('data', (c: unknown) => void parts.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', resolve);
    p.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      p.entry(e.header as Header, e.body ?? '', (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  await done;
  return gzipSync(Buffer.concat(parts));
}

export function codeArchive(files: Record<string, string>): Promise<Buffer> {
  return targz(Object.entries(files).map(([name, body]) => ({ header: { name, type: 'file', mode: 0o644 }, body })));
}

export function manifest(name: string, extra = ''): string {
  return [
    'version: "1.0"',
    'agent:',
    `  name: ${name}`,
    '  runtime: "python:3.11"',
    '  entrypoint: ["python3", "main.py"]',
    'permissions:',
    '  fs:',
    '    write: ["/data/outputs"]',
    '  execution_time: 30s',
    '  memory: 128MiB',
    extra,
  ].join('\n');
}
