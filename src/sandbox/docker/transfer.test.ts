import assert from 'node:assert/strict';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import tar, { type Header } from 'tar-stream';
import { hasCode } from '../../test-support/errors.js';
import { SandboxError } from '../errors.js';
import { extractTree, MAX_METADATA_BYTES, packTree, type ExtractTreeOptions } from './transfer.js';

type Entry = Partial<Header> & { name: string; data?: Buffer | string; pax?: Record<string, string> };

/** A tar of `entries`, built with tar-stream as a hostile engine (or agent) would. */
async function tarOf(entries: readonly Entry[]): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const { data, ...h } of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (data !== undefined) p.entry({ ...h, size: Buffer.byteLength(data) }, data, cb);
      else p.entry(h, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function collect(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const base = mkdtempSync(join(tmpdir(), 'aegis-transfer-'));
after(() => rmSync(base, { recursive: true, force: true }));
let n = 0;

/** A fresh sandbox: `<t>/dest` (empty, the extraction target) beside `<t>/outside` (must never change). */
function scene(): { dest: string; outside: string; snapshot: () => string } {
  const t = join(base, `s${n++}`);
  mkdirSync(join(t, 'dest'), { recursive: true });
  mkdirSync(join(t, 'outside'));
  writeFileSync(join(t, 'outside', 'keep'), 'keep');
  writeFileSync(join(t, 'x'), 'x');
  const snapshot = (): string => {
    const lines: string[] = [];
    const walk = (p: string, rel: string): void => {
      if (rel === './dest') return;
      const st = lstatSync(p);
      lines.push(`${rel} ${st.mode} ${st.uid} ${st.size} ${st.nlink} ${st.mtimeMs}`);
      if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e), `${rel}/${e}`);
    };
    walk(t, '.');
    const pw = statSync('/etc/passwd');
    lines.push(`/etc/passwd ${pw.mode} ${pw.nlink} ${pw.size} ${pw.mtimeMs} ${readFileSync('/etc/passwd', 'utf8').length}`);
    return lines.join('\n');
  };
  return { dest: join(t, 'dest'), outside: join(t, 'outside'), snapshot };
}

const LIMITS = { top: 'data', maxBytes: 1 << 20, maxEntries: 1000 };

/** Extracts `entries` into a fresh scene and asserts it is refused with `code` and nothing outside dest changed. */
async function refusedWith(
  entries: readonly Entry[],
  code: 'sandbox.volume_refused' | 'sandbox.volume_failed',
  opts: ExtractTreeOptions = LIMITS,
) {
  const s = scene();
  const before = s.snapshot();
  const archive = await tarOf(entries);
  await assert.rejects(extractTree(Readable.from([archive]), s.dest, opts), hasCode(SandboxError, code));
  assert.equal(s.snapshot(), before, 'nothing outside destDir changed');
  return s;
}

describe('packTree -> extractTree round trip', () => {
  it('keeps contents, modes (setuid included in the archive, dropped on extraction), owners, links, fifos skipped, empty dirs', async () => {
    const src = join(base, 'src');
    mkdirSync(join(src, 'sub', 'deep'), { recursive: true });
    mkdirSync(join(src, 'empty'));
    writeFileSync(join(src, 'a.txt'), 'hello');
    writeFileSync(join(src, 'big.bin'), Buffer.alloc(300_000, 7));
    writeFileSync(join(src, 'sub', 'deep', 'f'), 'deep');
    writeFileSync(join(src, 'suid'), '#!/bin/sh\n');
    chmodSync(join(src, 'suid'), 0o4755);
    chmodSync(join(src, 'sub'), 0o750);
    chownSync(join(src, 'a.txt'), 1234, 5678);
    chownSync(join(src, 'sub', 'deep', 'f'), 300_000, 4_000_000); // beyond the ustar fields: pax uid/gid
    utimesSync(join(src, 'a.txt'), 1_000_000, 1_000_000);
    linkSync(join(src, 'a.txt'), join(src, 'sub', 'hard'));
    symlinkSync('../a.txt', join(src, 'sub', 'rel-link'));
    symlinkSync('/etc/passwd', join(src, 'abs-link'));
    execFileSync('mkfifo', [join(src, 'fifo')]);

    const packed = await packTree(src);
    const archive = await collect(packed.stream);
    const counts = await packed.done;
    assert.equal(counts.entries, 11);
    assert.equal(counts.bytes, 5 + 300_000 + 4 + 10);

    // What the archive says, before extraction: names relative, no top entry, setuid kept, hard link as a link.
    const seen = new Map<string, Header>();
    const ex = tar.extract();
    Readable.from([archive]).pipe(ex as unknown as NodeJS.WritableStream);
    for await (const e of ex) {
      seen.set(e.header.name, e.header);
      e.resume();
    }
    assert.deepEqual([...seen.keys()].sort(), [
      'a.txt',
      'abs-link',
      'big.bin',
      'empty/',
      'fifo',
      'sub/',
      'sub/deep/',
      'sub/deep/f',
      'sub/hard',
      'sub/rel-link',
      'suid',
    ]);
    assert.equal(seen.get('suid')?.mode, 0o4755);
    assert.equal(seen.get('sub/hard')?.type, 'link');
    assert.equal(seen.get('sub/hard')?.linkname, 'a.txt');
    assert.equal(seen.get('fifo')?.type, 'fifo');

    // Extract as Docker would hand it back: under a top directory.
    const wrapped = await tarOf([{ name: 'data/', type: 'directory', mode: 0o755 }, ...(await entriesOf(archive, 'data/'))]);
    const s = scene();
    const result = await extractTree(Readable.from([wrapped]), s.dest, LIMITS);
    assert.deepEqual(result.skipped, ['fifo']);
    assert.equal(result.bytes, counts.bytes);
    const d = s.dest;
    assert.equal(readFileSync(join(d, 'a.txt'), 'utf8'), 'hello');
    assert.ok(readFileSync(join(d, 'big.bin')).equals(Buffer.alloc(300_000, 7)));
    assert.equal(readFileSync(join(d, 'sub', 'deep', 'f'), 'utf8'), 'deep');
    assert.equal(statSync(join(d, 'a.txt')).uid, 1234);
    assert.equal(statSync(join(d, 'a.txt')).gid, 5678);
    assert.equal(statSync(join(d, 'a.txt')).mtimeMs, 1_000_000_000);
    assert.equal(statSync(join(d, 'sub', 'deep', 'f')).uid, 300_000);
    assert.equal(statSync(join(d, 'sub', 'deep', 'f')).gid, 4_000_000);
    assert.equal(statSync(join(d, 'sub')).mode & 0o7777, 0o750);
    assert.equal(statSync(join(d, 'suid')).mode & 0o7777, 0o755, 'setuid dropped on the way out');
    assert.equal(statSync(join(d, 'sub', 'hard')).ino, statSync(join(d, 'a.txt')).ino, 'the hard link is a link');
    assert.equal(readlinkSync(join(d, 'sub', 'rel-link')), '../a.txt');
    assert.equal(readlinkSync(join(d, 'abs-link')), '/etc/passwd');
    assert.ok(lstatSync(join(d, 'abs-link')).isSymbolicLink());
    assert.deepEqual(readdirSync(join(d, 'empty')), []);
    assert.ok(!readdirSync(d).includes('fifo'));
  });

  it('leaves out a socket and a device node, and lists them; the rest is sent', async () => {
    const src = join(base, 'with-socket');
    mkdirSync(src);
    writeFileSync(join(src, 'kept.txt'), 'kept');
    const sock = join(src, 's.sock');
    execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(sock, resolve));
    try {
      const packed = await packTree(src);
      assert.deepEqual([...packed.skipped].sort(), ['null (a character device)', 's.sock (a socket)']);
      const names: string[] = [];
      const ex = tar.extract();
      ex.on('entry', (h, stream, next) => {
        names.push(h.name);
        stream.resume();
        stream.on('end', next);
      });
      packed.stream.pipe(ex);
      await new Promise<void>((resolve) => ex.on('finish', () => resolve()));
      await packed.done;
      assert.deepEqual(names, ['kept.txt']);
    } finally {
      srv.close();
    }
  });

  it('fails the stream (never a corrupt archive) when a file shrinks while being read', async () => {
    const src = join(base, 'shrink');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), Buffer.alloc(8 << 20, 1));
    const packed = await packTree(src);
    const it = packed.stream[Symbol.asyncIterator]();
    await it.next(); // the header and the first data are out; backpressure holds the rest
    writeFileSync(join(src, 'f'), 'tiny');
    await assert.rejects(
      (async () => {
        for (let r = await it.next(); r.done !== true; r = await it.next());
      })(),
      hasCode(SandboxError, 'sandbox.volume_failed'),
    );
    await assert.rejects(packed.done, hasCode(SandboxError, 'sandbox.volume_failed'));
  });

  it('settles done (rejected) and closes the file when the consumer destroys the stream midway', async () => {
    const src = join(base, 'abandoned');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), Buffer.alloc(8 << 20, 1));
    writeFileSync(join(src, 'g'), 'never sent');
    const fds = readdirSync('/proc/self/fd').length;
    const packed = await packTree(src);
    const it = packed.stream[Symbol.asyncIterator]();
    await it.next();
    packed.stream.destroy();
    await assert.rejects(packed.done, hasCode(SandboxError, 'sandbox.volume_failed'));
    assert.equal(readdirSync('/proc/self/fd').length, fds, 'the file was closed');
  });

  it('sends a file that grows while being read truncated to its size when opened (a whole archive)', async () => {
    const src = join(base, 'grow');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), Buffer.alloc(8 << 20, 1));
    const packed = await packTree(src);
    const chunks: Buffer[] = [];
    const it = packed.stream[Symbol.asyncIterator]();
    const first = await it.next();
    chunks.push(first.value as Buffer);
    appendFileSync(join(src, 'f'), Buffer.alloc(1 << 20, 2));
    for (let r = await it.next(); r.done !== true; r = await it.next()) chunks.push(r.value as Buffer);
    assert.deepEqual(await packed.done, { entries: 1, bytes: 8 << 20 });
    const s = scene();
    const r = await extractTree(Readable.from([Buffer.concat(chunks)]), s.dest, { ...LIMITS, top: '.', maxBytes: 16 << 20 });
    assert.ok(readFileSync(join(s.dest, 'f')).equals(Buffer.alloc(8 << 20, 1)));
    assert.equal(r.entries, 1);
  });
});

/** The entries of `archive` renamed under `prefix` (hard link targets too), with their data. */
async function entriesOf(archive: Buffer, prefix: string): Promise<Entry[]> {
  const out: Entry[] = [];
  const ex = tar.extract();
  Readable.from([archive]).pipe(ex as unknown as NodeJS.WritableStream);
  for await (const e of ex) {
    const h = e.header;
    const data = await collect(e as unknown as Readable);
    const pax = Object.fromEntries(
      Object.entries((h.pax as Record<string, string> | null) ?? {}).filter(([k]) => k !== 'path' && k !== 'linkpath'),
    );
    const entry: Entry = { ...h, name: prefix + h.name, pax };
    if (h.type === 'link') entry.linkname = prefix + h.linkname;
    if (h.type === 'file') entry.data = data;
    if (Object.keys(pax).length === 0) delete entry.pax;
    out.push(entry);
  }
  return out;
}

describe('extractTree: hostile archives', () => {
  const top: Entry = { name: 'data/', type: 'directory', mode: 0o755 };

  it('refuses ../x', async () => {
    await refusedWith([top, { name: 'data/../x', data: 'pwned' }], 'sandbox.volume_refused');
    await refusedWith([top, { name: '../x', data: 'pwned' }], 'sandbox.volume_refused');
  });

  it('refuses an absolute path', async () => {
    await refusedWith([top, { name: '/tmp/abs', data: 'pwned' }], 'sandbox.volume_refused');
  });

  it('refuses an entry outside the top directory', async () => {
    await refusedWith([top, { name: 'data2/x', data: 'pwned' }], 'sandbox.volume_refused');
  });

  it('refuses a file below a symbolic link the archive made (l -> outside, then l/pwned)', async () => {
    const s = scene();
    const before = s.snapshot();
    const archive = await tarOf([top, { name: 'data/l', type: 'symlink', linkname: s.outside }, { name: 'data/l/pwned', data: 'pwned' }]);
    await assert.rejects(extractTree(Readable.from([archive]), s.dest, LIMITS), hasCode(SandboxError, 'sandbox.volume_refused'));
    assert.equal(s.snapshot(), before);
    assert.deepEqual(readdirSync(s.outside), ['keep']);
  });

  it('refuses a file below l -> .. (and /tmp/outside)', async () => {
    await refusedWith(
      [top, { name: 'data/l', type: 'symlink', linkname: '..' }, { name: 'data/l/x', data: 'pwned' }],
      'sandbox.volume_refused',
    );
    await refusedWith(
      [top, { name: 'data/l', type: 'symlink', linkname: '/tmp/outside' }, { name: 'data/l/y/', type: 'directory' }],
      'sandbox.volume_refused',
    );
  });

  it('refuses hard links to /etc/passwd, to ../x, and to a name not extracted before', async () => {
    await refusedWith([top, { name: 'data/h', type: 'link', linkname: '/etc/passwd' }], 'sandbox.volume_refused');
    await refusedWith([top, { name: 'data/h', type: 'link', linkname: '../x' }], 'sandbox.volume_refused');
    await refusedWith([top, { name: 'data/h', type: 'link', linkname: 'data/../x' }], 'sandbox.volume_refused');
    await refusedWith(
      [top, { name: 'data/h', type: 'link', linkname: 'data/later' }, { name: 'data/later', data: 'x' }],
      'sandbox.volume_refused',
    );
    await refusedWith(
      [top, { name: 'data/d/', type: 'directory' }, { name: 'data/h', type: 'link', linkname: 'data/d' }],
      'sandbox.volume_refused',
    );
  });

  it('skips and reports a device node (never created); the rest is extracted', async () => {
    const s = scene();
    const before = s.snapshot();
    const archive = await tarOf([
      top,
      { name: 'data/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'data/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660 },
      { name: 'data/ok', data: 'ok' },
    ]);
    const r = await extractTree(Readable.from([archive]), s.dest, LIMITS);
    assert.deepEqual(r.skipped, ['null', 'sda']);
    assert.deepEqual(readdirSync(s.dest), ['ok']);
    assert.equal(s.snapshot(), before);
  });

  it('extracts a setuid/setgid/sticky file without those bits', async () => {
    const s = scene();
    const archive = await tarOf([
      top,
      { name: 'data/suid', mode: 0o6755, data: 'x' },
      { name: 'data/sticky/', type: 'directory', mode: 0o1777 },
    ]);
    await extractTree(Readable.from([archive]), s.dest, LIMITS);
    assert.equal(statSync(join(s.dest, 'suid')).mode & 0o7777, 0o755);
    assert.equal(statSync(join(s.dest, 'sticky')).mode & 0o7777, 0o777);
  });

  it('refuses a file over maxBytes from its header, before writing it', async () => {
    const s = await refusedWith([top, { name: 'data/big', data: Buffer.alloc(2000) }], 'sandbox.volume_refused', {
      ...LIMITS,
      maxBytes: 1000,
    });
    assert.deepEqual(readdirSync(s.dest), []);
    // The bound is on the total, across files.
    await refusedWith(
      [top, { name: 'data/a', data: Buffer.alloc(600) }, { name: 'data/b', data: Buffer.alloc(600) }],
      'sandbox.volume_refused',
      { ...LIMITS, maxBytes: 1000 },
    );
  });

  it('refuses a header that lies about its size (the stream is cut short), and an archive without its end blocks', async () => {
    const whole = await tarOf([top, { name: 'data/f', data: Buffer.alloc(4096, 1) }]);
    const s = scene();
    const before = s.snapshot();
    // Header + 1 KiB of the 4 KiB the header announces, then the end.
    const cut = whole.subarray(0, 512 + 512 + 1024);
    await assert.rejects(extractTree(Readable.from([cut]), s.dest, LIMITS), hasCode(SandboxError, 'sandbox.volume_refused'));
    assert.equal(s.snapshot(), before);
    // Cut at an entry boundary: every entry whole, but no end-of-archive blocks.
    const s2 = scene();
    const atBoundary = whole.subarray(0, 512 + 512 + 4096);
    await assert.rejects(extractTree(Readable.from([atBoundary]), s2.dest, LIMITS), hasCode(SandboxError, 'sandbox.volume_refused'));
  });

  it('refuses more than maxEntries entries', async () => {
    const many: Entry[] = [top, ...Array.from({ length: 20 }, (_, i) => ({ name: `data/f${i}`, data: 'x' }))];
    await refusedWith(many, 'sandbox.volume_refused', { ...LIMITS, maxEntries: 10 });
  });

  it("stops when its signal aborts (the caller's time bound): refused, nothing outside destDir written", async () => {
    const many: Entry[] = [top, ...Array.from({ length: 600 }, (_, i) => ({ name: `data/f${i}`, data: 'x' }))];
    await refusedWith(many, 'sandbox.volume_refused', { ...LIMITS, signal: AbortSignal.abort('test') });
    // Aborted while it runs: the check between entries stops it.
    const archive = await tarOf(many);
    const s2 = scene();
    const late = new AbortController();
    const p2 = extractTree(Readable.from([archive]), s2.dest, { ...LIMITS, signal: late.signal });
    setImmediate(() => late.abort('late'));
    await assert.rejects(p2, hasCode(SandboxError, 'sandbox.volume_refused'));
  });

  it('a deep tree costs one check per directory, not per entry below it (depth 120, 2000 files)', async () => {
    const dirs = Array.from({ length: 120 }, (_, i) => `d${i}`);
    const deep = `data/${dirs.join('/')}`;
    const entries: Entry[] = [top, ...Array.from({ length: 2000 }, (_, i) => ({ name: `${deep}/f${i}`, data: 'x' }))];
    const s = scene();
    const r = await extractTree(Readable.from([await tarOf(entries)]), s.dest, { ...LIMITS, maxEntries: 5000, maxPathBytes: 4000 });
    assert.equal(r.entries, 2001);
    assert.equal(readdirSync(join(s.dest, ...dirs)).length, 2000);
  });

  it('never turns a directory into something else, nor a file into a directory; a later file replaces a file', async () => {
    await refusedWith([top, { name: 'data/d/', type: 'directory' }, { name: 'data/d', data: 'file now' }], 'sandbox.volume_refused');
    await refusedWith(
      [top, { name: 'data/d/', type: 'directory' }, { name: 'data/d', type: 'symlink', linkname: '/' }],
      'sandbox.volume_refused',
    );
    await refusedWith([top, { name: 'data/f', data: 'x' }, { name: 'data/f/', type: 'directory' }], 'sandbox.volume_refused');
    await refusedWith([top, { name: 'data/f', data: 'x' }, { name: 'data/f/y', data: 'y' }], 'sandbox.volume_refused');
    const s = scene();
    const archive = await tarOf([
      top,
      { name: 'data/f', data: 'first' },
      { name: 'data/f', data: 'second', mode: 0o600 },
      { name: 'data/l', type: 'symlink', linkname: '/etc' },
      { name: 'data/l', data: 'a file, not a link' },
    ]);
    await extractTree(Readable.from([archive]), s.dest, LIMITS);
    assert.equal(readFileSync(join(s.dest, 'f'), 'utf8'), 'second');
    assert.equal(statSync(join(s.dest, 'f')).mode & 0o777, 0o600);
    assert.ok(lstatSync(join(s.dest, 'l')).isFile());
  });

  it('a directory given twice is the same directory (its mode set again), its files kept', async () => {
    const s = scene();
    const archive = await tarOf([
      top,
      { name: 'data/d/', type: 'directory', mode: 0o755 },
      { name: 'data/d/f', data: 'kept' },
      { name: 'data/d/', type: 'directory', mode: 0o700 },
    ]);
    await extractTree(Readable.from([archive]), s.dest, LIMITS);
    assert.equal(readFileSync(join(s.dest, 'd', 'f'), 'utf8'), 'kept');
    assert.equal(statSync(join(s.dest, 'd')).mode & 0o777, 0o700);
  });

  it('refuses an archive whose names and link targets exceed what is held in memory', async () => {
    // Links cost no data and few entries: their names and targets are bounded on their own.
    const target = 'x/'.repeat(1000);
    const many: Entry[] = [
      top,
      ...Array.from({ length: 40 }, (_, i) => ({ name: `data/l${i}`, type: 'symlink' as const, linkname: target })),
    ];
    const s = scene();
    const r = await extractTree(Readable.from([await tarOf(many)]), s.dest, { ...LIMITS, maxMetadataBytes: 100_000 });
    assert.equal(r.entries, 41, 'within the budget: extracted');
    await refusedWith(many, 'sandbox.volume_refused', { ...LIMITS, maxMetadataBytes: 50_000 });
    assert.equal(MAX_METADATA_BYTES, 64 * 1024 * 1024);
  });

  it('refuses a NUL or control character in a name', async () => {
    // A ustar name ends at its first NUL; a pax path carries one as it is.
    await refusedWith([top, { name: 'data/ab', pax: { path: 'data/a\u0000b' }, data: 'x' }], 'sandbox.volume_refused');
    await refusedWith([top, { name: 'data/a\nb', data: 'x' }], 'sandbox.volume_refused');
  });

  it('extracts a long pax name within the bounds, refuses one beyond them', async () => {
    const long = `data/${'d'.repeat(200)}/${'f'.repeat(200)}`;
    const s = scene();
    await extractTree(Readable.from([await tarOf([top, { name: long, data: 'long' }])]), s.dest, LIMITS);
    assert.equal(readFileSync(join(s.dest, 'd'.repeat(200), 'f'.repeat(200)), 'utf8'), 'long');
    await refusedWith([top, { name: `data/${'x/'.repeat(3000)}f`, data: 'deep' }], 'sandbox.volume_refused');
    await refusedWith([top, { name: `data/${'s'.repeat(300)}`, data: 'segment too long' }], 'sandbox.volume_refused');
  });

  it('refuses an invalid pax uid, and a top that is not a directory', async () => {
    await refusedWith([top, { name: 'data/f', data: 'x', pax: { uid: '-1' } }], 'sandbox.volume_refused');
    await refusedWith([{ name: 'data', data: 'x' }], 'sandbox.volume_refused');
  });

  it('refuses a destDir that is not empty, and bad options, touching nothing', async () => {
    const s = scene();
    writeFileSync(join(s.dest, 'old'), 'old');
    const archive = await tarOf([top, { name: 'data/f', data: 'x' }]);
    await assert.rejects(extractTree(Readable.from([archive]), s.dest, LIMITS), hasCode(SandboxError, 'sandbox.volume_failed'));
    const s2 = scene();
    await assert.rejects(
      extractTree(Readable.from([archive]), s2.dest, { ...LIMITS, top: '../data' }),
      hasCode(SandboxError, 'sandbox.volume_failed'),
    );
    assert.deepEqual(readdirSync(s2.dest), []);
  });

  it("takes Docker's `./` naming with top '.'", async () => {
    const s = scene();
    const archive = await tarOf([
      { name: './', type: 'directory' },
      { name: './a', data: 'a' },
      { name: './h', type: 'link', linkname: './a' },
    ]);
    const r = await extractTree(Readable.from([archive]), s.dest, { ...LIMITS, top: '.' });
    assert.equal(r.entries, 3);
    assert.equal(statSync(join(s.dest, 'h')).ino, statSync(join(s.dest, 'a')).ino);
  });
});
