/**
 * `aegis audit ...` end to end: the CLI contract (output formats checked exactly) and the tamper
 * tests of issue 5 — modify a byte, delete an entry, swap two, truncate the tail, replace the
 * store with a forgery signed by another key, roll back — each detected by `aegis audit verify`
 * with the position named.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { openAuditLog } from '../../src/audit/index.js';
import { hashLeaf, verifyConsistency, verifyInclusion } from '../../src/audit/merkle/index.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const AEGIS = join(REPO, 'bin', 'aegis.js');
const run = promisify(execFile);

async function aegis(
  home: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [AEGIS, ...args], {
      env: { PATH: process.env['PATH'] ?? '', AEGIS_HOME: home, ...env },
      maxBuffer: 64 << 20,
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const ev = (i: number) => ({
  actor: { agent: i % 2 === 0 ? 'alpha' : 'beta', execution: `run-${i % 3}` },
  action: i % 4 === 0 ? 'fs.read' : 'net.connect',
  decision: i % 5 === 0 ? ('deny' as const) : ('allow' as const),
  ...(i === 7 ? { subject: 'user:carol' } : {}),
  payload: { i, host: `h${i}.example` },
});

async function makeLog(home: string, n: number, from = 0): Promise<void> {
  const log = await openAuditLog({ home, env: {} });
  await Promise.all(Array.from({ length: n }, (_, k) => log.append(ev(from + k))));
  await log.close();
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

/** Byte ranges of the records in entries.dat (8-byte magic, then u32 len || hash || entry). */
function records(buf: Buffer): Array<{ start: number; end: number }> {
  const out = [];
  let off = 8;
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    out.push({ start: off, end: off + 36 + len });
    off += 36 + len;
  }
  return out;
}

async function tempHome(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'aegis-cli-'));
}

describe('aegis audit: CLI contract', () => {
  let home: string;
  before(async () => {
    home = await tempHome();
    await makeLog(home, 20);
  });
  after(() => rm(home, { recursive: true, force: true }));

  it('verify prints "ok: <n> entries, root <b64>" and exits 0', async () => {
    const r = await aegis(home, ['audit', 'verify']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok: 20 entries, root [A-Za-z0-9+/]{43}=\n$/u);
  });

  it('checkpoint prints the latest C2SP checkpoint, signed by the key of `aegis audit pubkey`', async () => {
    const r = await aegis(home, ['audit', 'checkpoint']);
    assert.equal(r.code, 0);
    assert.match(
      r.stdout,
      /^aegis\.local\/audit\/[0-9a-f]{16}\n20\n[A-Za-z0-9+/]{43}=\n\n\u2014 aegis\.local\/audit\/[0-9a-f]{16} [A-Za-z0-9+/]+=*\n$/u,
    );
    const pub = await aegis(home, ['audit', 'pubkey']);
    assert.match(pub.stdout, /^aegis\.local\/audit\/[0-9a-f]{16}\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}\n$/u);
    assert.equal(pub.stdout, await readFile(join(home, 'audit', 'log.pub'), 'utf8'));
    const { parseVerifierKey, openCheckpoint } = await import('../../src/audit/checkpoint/index.js');
    const v = parseVerifierKey(pub.stdout);
    assert.equal(openCheckpoint(r.stdout, v, v.name).size, 20);
  });

  it('proof prints {index, treeSize, leafHash, proof[], root} that verifies, also with --size', async () => {
    for (const args of [['5'], ['5', '--size', '9']]) {
      const r = await aegis(home, ['audit', 'proof', ...args]);
      assert.equal(r.code, 0, r.stderr);
      const p = JSON.parse(r.stdout) as { index: number; treeSize: number; leafHash: string; proof: string[]; root: string };
      assert.deepEqual(Object.keys(p), ['index', 'treeSize', 'leafHash', 'proof', 'root']);
      assert.equal(p.treeSize, args.length === 1 ? 20 : 9);
      verifyInclusion(p.index, p.treeSize, unb64(p.leafHash), p.proof.map(unb64), unb64(p.root));
    }
    const bad = await aegis(home, ['audit', 'proof', '20']);
    assert.equal(bad.code, 2);
  });

  it('consistency prints {size1, size2, root1, root2, proof[]} that verifies', async () => {
    const r = await aegis(home, ['audit', 'consistency', '6', '20']);
    assert.equal(r.code, 0, r.stderr);
    const c = JSON.parse(r.stdout) as { size1: number; size2: number; root1: string; root2: string; proof: string[] };
    assert.deepEqual(Object.keys(c), ['size1', 'size2', 'root1', 'root2', 'proof']);
    verifyConsistency(c.size1, c.size2, c.proof.map(unb64), unb64(c.root1), unb64(c.root2));
    const verify = await aegis(home, ['audit', 'verify']);
    assert.ok(verify.stdout.endsWith(`root ${c.root2}\n`));
  });

  it('export --format jsonl gives {index, leaf, event}: the leaf bytes hash to the proven leaf', async () => {
    const r = await aegis(home, ['audit', 'export']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { index: number; leaf: string; event: { payload: { i: number }; actor: { agent: string } } });
    assert.equal(lines.length, 20);
    assert.deepEqual(
      lines.map((l) => l.index),
      [...Array(20).keys()],
    );
    const proof = JSON.parse((await aegis(home, ['audit', 'proof', '3'])).stdout) as { leafHash: string };
    assert.equal(b64(hashLeaf(unb64(lines[3]!.leaf))), proof.leafHash);
    assert.equal(lines[3]!.event.payload.i, 3);
    const alpha = await aegis(home, ['audit', 'export', '--agent', 'alpha']);
    assert.equal(alpha.stdout.trimEnd().split('\n').length, 10);
    const future = await aegis(home, ['audit', 'export', '--since', '2999-01-01T00:00:00Z']);
    assert.equal(future.stdout, '');
  });

  it('export --format rfc5424 gives one syslog line per event with structured data and a JSON message', async () => {
    const r = await aegis(home, ['audit', 'export', '--format', 'rfc5424']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 20);
    // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG; deny -> severity 4 (PRI 108)
    const m =
      /^<108>1 (\S+) \S+ aegis - fs\.read \[aegis@32473 index="0" id="[0-9a-f-]{36}" agent="alpha" execution="run-0" action="fs\.read" decision="deny" leaf="[A-Za-z0-9+/=]+"\] (\{.*\})$/u.exec(
        lines[0]!,
      );
    assert.ok(m, lines[0]);
    assert.equal((JSON.parse(m[2]!) as { payload: { i: number } }).payload.i, 0);
    assert.match(lines[1]!, /^<110>1 /u);
  });

  it('query filters by agent, execution, action, decision and time', async () => {
    const idx = async (...args: string[]) =>
      (await aegis(home, ['audit', 'query', '--json', ...args])).stdout
        .trimEnd()
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { index: number }).index);
    assert.deepEqual(await idx('--agent', 'beta', '--decision', 'deny'), [5, 15]);
    assert.deepEqual(await idx('--execution', 'run-1', '--action', 'fs.read'), [4, 16]);
    assert.deepEqual((await idx('--action', 'net.*')).length, 15);
    assert.deepEqual(await idx('--until', '2000-01-01T00:00:00Z'), []);
    assert.equal((await idx('--since', '1h')).length, 20);
    const bad = await aegis(home, ['audit', 'query', '--decision', 'maybe']);
    assert.equal(bad.code, 2);
  });

  it('tail --json prints the last events as JSON lines', async () => {
    const r = await aegis(home, ['audit', 'tail', '--json', '-n', '3']);
    assert.deepEqual(
      r.stdout
        .trimEnd()
        .split('\n')
        .map((l) => (JSON.parse(l) as { index: number }).index),
      [17, 18, 19],
    );
  });

  it('tail and query print one readable line per event by default (regression: a 2 KB base64 leaf per line)', async () => {
    const tail = await aegis(home, ['audit', 'tail', '-n', '3']);
    assert.equal(tail.code, 0, tail.stderr);
    const lines = tail.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 3);
    const events = (await aegis(home, ['audit', 'tail', '--json', '-n', '3'])).stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { index: number; leaf: string; event: { time: string; action: string; decision: string } });
    lines.forEach((line, i) => {
      const e = events[i]!;
      assert.ok(line.startsWith(`${e.event.time} #${e.index} ${e.event.action} ${e.event.decision} `), line);
      assert.ok(!line.includes(e.leaf), 'no leaf in the readable line');
      assert.ok(line.length < 300, `short line: ${line.length}`);
    });
    const q = await aegis(home, ['audit', 'query', '--agent', 'beta', '--decision', 'deny']);
    assert.deepEqual(
      q.stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.split(' ').slice(1).join(' ')),
      ['#5 net.connect deny beta/run-2 - host=h5.example i=5', '#15 net.connect deny beta/run-0 - host=h15.example i=15'],
    );
  });

  it('verify, checkpoint and pubkey print JSON with --json', async () => {
    const v = JSON.parse((await aegis(home, ['audit', 'verify', '--json'])).stdout) as { ok: boolean; size: number; root: string };
    assert.equal(v.ok, true);
    assert.ok(v.size >= 20);
    assert.match(v.root, /^[A-Za-z0-9+/]{43}=$/u);
    const c = JSON.parse((await aegis(home, ['audit', 'checkpoint', '--json'])).stdout) as { checkpoint: string };
    assert.match(c.checkpoint, /^.+\n\d+\n/u);
    const k = JSON.parse((await aegis(home, ['audit', 'pubkey', '--json'])).stdout) as { pubkey: string };
    assert.equal(`${k.pubkey}\n`, (await aegis(home, ['audit', 'pubkey'])).stdout);
  });

  it('tail -f prints events appended later', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [AEGIS, 'audit', 'tail', '--json', '-n', '0', '-f'], {
      env: { PATH: process.env['PATH'] ?? '', AEGIS_HOME: home },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => setTimeout(r, 700));
    await makeLog(home, 2, 100);
    const deadline = Date.now() + 10_000;
    while (out.split('\n').length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGINT');
    await new Promise((r) => child.once('exit', r));
    assert.deepEqual(
      out
        .trimEnd()
        .split('\n')
        .map((l) => (JSON.parse(l) as { index: number }).index),
      [20, 21],
    );
  });

  it('forget --subject shreds the subject key, appends subject-erased, and the log still verifies', async () => {
    const before7 = JSON.parse((await aegis(home, ['audit', 'export'])).stdout.split('\n')[7]!) as { event: { subject?: string } };
    assert.equal(before7.event.subject, 'user:carol');
    const r = await aegis(home, ['audit', 'forget', '--subject', 'user:carol']);
    assert.equal(r.code, 0, r.stderr);
    const lines = (await aegis(home, ['audit', 'export'])).stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { keyDestroyed?: boolean; event: { action: string; payload: unknown } });
    assert.equal(lines[7]!.keyDestroyed, true);
    assert.equal(lines[7]!.event.payload, null);
    assert.equal(lines.at(-1)!.event.action, 'audit.subject-erased');
    assert.ok(!JSON.stringify(lines).includes('carol'));
    const v = await aegis(home, ['audit', 'verify']);
    assert.equal(v.code, 0, v.stdout);
  });

  it('reports bad arguments with exit 2 and a message, never an internal error', async () => {
    for (const args of [
      ['proof', 'abc'],
      ['consistency', '3', 'x'],
      ['verify', '--from-checkpoint', '/nonexistent'],
      ['export', '--format', 'xml'],
      ['query', '--since', 'yesterday'],
    ]) {
      const r = await aegis(home, ['audit', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^aegis audit: /u);
    }
  });

  it('read commands on an empty AEGIS_HOME fail with exit 1 and create nothing', async () => {
    const empty = await tempHome();
    const r = await aegis(empty, ['audit', 'checkpoint']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no audit log/u);
    await rm(empty, { recursive: true });
  });
});

describe('aegis audit verify: tamper detection', () => {
  /** A fresh log of 30 events (checkpoints stored and published); returns its home. */
  async function fresh(): Promise<string> {
    const home = await tempHome();
    await makeLog(home, 30);
    return home;
  }
  const ENTRIES = (home: string) => join(home, 'audit', 'entries.dat');

  async function expectFail(home: string, pattern: RegExp, args: string[] = []): Promise<void> {
    const r = await aegis(home, ['audit', 'verify', ...args]);
    assert.equal(r.code, 1, `verify should fail: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout, pattern);
    await rm(home, { recursive: true, force: true });
  }

  it('detects one modified byte of a stored entry, naming the entry', async () => {
    const home = await fresh();
    const buf = await readFile(ENTRIES(home));
    const rec = records(buf)[12]!;
    const at = rec.start + 36 + 10;
    buf[at] = (buf[at] as number) ^ 0x01;
    await writeFile(ENTRIES(home), buf);
    await expectFail(home, /^FAIL: entry 12: /u);
  });

  it('detects a modified entry whose stored hash was fixed up too, naming the checkpoint and range', async () => {
    const home = await fresh();
    const buf = await readFile(ENTRIES(home));
    const rec = records(buf)[12]!;
    const entry = Buffer.from(
      buf
        .subarray(rec.start + 36, rec.end)
        .toString()
        .replace('"agent":"alpha"', '"agent":"alphb"'),
    );
    const fixed = Buffer.concat([
      buf.subarray(0, rec.start),
      buf.subarray(rec.start, rec.start + 4),
      hashLeaf(entry),
      entry,
      buf.subarray(rec.end),
    ]);
    fixed.writeUInt32BE(entry.length, rec.start);
    await writeFile(ENTRIES(home), fixed);
    await expectFail(
      home,
      /^FAIL: checkpoint \d+: root for size 30 does not match the stored entries \(an entry in 0\.\.29 was changed\)/u,
    );
  });

  it('detects a deleted entry, naming its position', async () => {
    const home = await fresh();
    const buf = await readFile(ENTRIES(home));
    const rec = records(buf)[9]!;
    await writeFile(ENTRIES(home), Buffer.concat([buf.subarray(0, rec.start), buf.subarray(rec.end)]));
    await expectFail(home, /^FAIL: entry 9: it records index 10 \(entries deleted, inserted or reordered\)/u);
  });

  it('detects two swapped entries, naming the first', async () => {
    const home = await fresh();
    const buf = await readFile(ENTRIES(home));
    const [a, b] = [records(buf)[4]!, records(buf)[5]!];
    await writeFile(
      ENTRIES(home),
      Buffer.concat([buf.subarray(0, a.start), buf.subarray(b.start, b.end), buf.subarray(a.start, a.end), buf.subarray(b.end)]),
    );
    await expectFail(home, /^FAIL: entry 4: it records index 5/u);
  });

  it('detects a truncated tail, naming the checkpoint and the missing entries', async () => {
    const home = await fresh();
    const buf = await readFile(ENTRIES(home));
    await writeFile(ENTRIES(home), buf.subarray(0, records(buf)[25]!.start));
    await expectFail(home, /^FAIL: checkpoint \d+: size 30 but the log holds 25 entries \(entries 25\.\.29 missing/u);
  });

  it('detects the whole store replaced by a consistent forgery signed by another key', async () => {
    const home = await fresh();
    const forger = await tempHome();
    await makeLog(forger, 30);
    await rm(join(home, 'audit'), { recursive: true });
    await cp(join(forger, 'audit'), join(home, 'audit'), { recursive: true });
    await rm(forger, { recursive: true });
    // The forgery verifies on its own terms; the key pinned at publication does not sign it.
    await expectFail(home, /^FAIL: checkpoint 0: audit.checkpoint_signature: /u);
  });

  it('detects a forgery even when the published copy is gone, given the trusted key', async () => {
    const home = await fresh();
    const pub = (await aegis(home, ['audit', 'pubkey'])).stdout.trim();
    const forger = await tempHome();
    await makeLog(forger, 30);
    await rm(join(home, 'audit'), { recursive: true });
    await rm(join(home, 'audit-published'), { recursive: true });
    await cp(join(forger, 'audit'), join(home, 'audit'), { recursive: true });
    await rm(forger, { recursive: true });
    await expectFail(home, /^FAIL: checkpoint 0: audit.checkpoint_signature/u, ['--pubkey', pub]);
  });

  it('detects a rollback of the store to an earlier state, against the published checkpoints', async () => {
    const home = await fresh();
    const snapshot = await tempHome();
    await cp(join(home, 'audit'), join(snapshot, 'audit'), { recursive: true });
    await makeLog(home, 10, 30);
    await rm(join(home, 'audit'), { recursive: true });
    await cp(join(snapshot, 'audit'), join(home, 'audit'), { recursive: true });
    await rm(snapshot, { recursive: true });
    await expectFail(home, /^FAIL: published checkpoint \d+: size 40 but the log holds 30 entries/u);
  });

  it('detects a rollback against an older checkpoint kept by the user (--from-checkpoint)', async () => {
    const home = await fresh();
    const saved = join(home, 'saved-checkpoint');
    const snapshot = await tempHome();
    await cp(join(home, 'audit'), join(snapshot, 'audit'), { recursive: true });
    await makeLog(home, 5, 30);
    await writeFile(saved, (await aegis(home, ['audit', 'checkpoint'])).stdout);
    const ok = await aegis(home, ['audit', 'verify', '--from-checkpoint', saved]);
    assert.equal(ok.code, 0, ok.stdout);
    // Roll back store and publication together: only the saved checkpoint remembers size 35.
    await rm(join(home, 'audit'), { recursive: true });
    await rm(join(home, 'audit-published'), { recursive: true });
    await cp(join(snapshot, 'audit'), join(home, 'audit'), { recursive: true });
    await rm(snapshot, { recursive: true });
    await expectFail(home, /^FAIL: checkpoint file .*saved-checkpoint: size 35 but the log holds 30 entries/u, [
      '--from-checkpoint',
      saved,
    ]);
  });

  it('detects a stored checkpoint that was altered', async () => {
    const home = await fresh();
    const path = join(home, 'audit', 'checkpoints.jsonl');
    const text = await readFile(path, 'utf8');
    await writeFile(path, text.replace(/\\n30\\n/u, '\\n31\\n'));
    await expectFail(home, /^FAIL: checkpoint \d+: audit.checkpoint_signature/u);
  });
});

describe('aegis audit read commands: read-only access', () => {
  /** Every file and directory under `dir` with its mode and the SHA-256 of its bytes. */
  async function tree(dir: string): Promise<Map<string, string>> {
    const { createHash } = await import('node:crypto');
    const { readdir, stat } = await import('node:fs/promises');
    const out = new Map<string, string>();
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        const st = await stat(p);
        if (e.isDirectory()) {
          out.set(p, `dir ${st.mode.toString(8)}`);
          await walk(p);
        } else
          out.set(
            p,
            `${st.mode.toString(8)} ${createHash('sha256')
              .update(await readFile(p))
              .digest('hex')}`,
          );
      }
    };
    await walk(dir);
    return out;
  }

  /** Runs `aegis <args>` with AEGIS_HOME bind-mounted read-only on itself, in a private mount namespace. */
  async function aegisReadOnly(home: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const script = 'set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; shift; exec "$@"';
    try {
      const r = await run(
        'unshare',
        ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', home, process.execPath, AEGIS, ...args],
        {
          env: { PATH: process.env['PATH'] ?? '', AEGIS_HOME: home },
          maxBuffer: 64 << 20,
        },
      );
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  }

  let home: string;
  before(async () => {
    home = await tempHome();
    // Written 200 days ago: its data keys are past retention, so a writer opening it would destroy them.
    const then = Date.now() - 200 * 86_400_000;
    const log = await openAuditLog({ home, env: {}, clock: { now: () => then } });
    await Promise.all(Array.from({ length: 12 }, (_, k) => log.append(ev(k))));
    await log.close();
  });
  after(() => rm(home, { recursive: true, force: true }));

  const reads = [
    ['verify'],
    ['checkpoint'],
    ['proof', '4'],
    ['consistency', '3', '12'],
    ['export'],
    ['export', '--format', 'rfc5424'],
    ['tail', '-n', '2'],
    ['query', '--agent', 'alpha'],
    ['pubkey'],
  ];

  it('every read command works on a read-only AEGIS_HOME and reads the payloads retention would destroy', async () => {
    const before = await tree(home);
    for (const args of reads) {
      const r = await aegisReadOnly(home, ['audit', ...args]);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    }
    const exported = (await aegisReadOnly(home, ['audit', 'export'])).stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: { payload: { i: number } | null } });
    assert.deepEqual(
      exported.map((e) => e.event.payload?.i),
      [...Array(12).keys()],
    );
    // The mount is really read-only: a writer command cannot work there.
    const prune = await aegisReadOnly(home, ['audit', 'prune']);
    assert.notEqual(prune.code, 0, 'prune (a writer) must fail on a read-only home');
    assert.deepEqual(await tree(home), before, 'no byte under AEGIS_HOME changed');
  });

  it('every read command leaves every byte under a writable AEGIS_HOME unchanged', async () => {
    const before = await tree(home);
    for (const args of reads) {
      const r = await aegis(home, ['audit', ...args]);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    }
    assert.deepEqual(await tree(home), before);
  });
});
