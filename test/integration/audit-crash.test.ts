/**
 * Durability under kill -9: a writer process appends as fast as it can (256 events in flight)
 * and prints each event's sequence number once append() has resolved (acknowledged). The test
 * kills it with SIGKILL at a random moment, starts a new writer on the same store, repeats (also
 * with two writers at once, killed at different moments), and finally checks that every acknowledged event is in the log and that the log verifies.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const AEGIS = join(REPO, 'bin', 'aegis.js');
const AUDIT = pathToFileURL(join(REPO, 'dist', 'src', 'audit', 'index.js')).href;

const WRITER = `
const { openAuditLog } = await import(process.env.AUDIT_MODULE);
const log = await openAuditLog({ home: process.env.AEGIS_HOME, env: {} });
const round = process.env.ROUND;
let i = 0;
const inflight = new Set();
process.stdout.write('open\\n');
for (;;) {
  while (inflight.size < 256) {
    const seq = round + '-' + i++;
    const p = log.append({ actor: { agent: 'crash' }, action: 'test.append', decision: 'info', payload: { seq, pad: 'x'.repeat(200) } })
      .then(() => { inflight.delete(p); process.stdout.write(seq + '\\n'); });
    inflight.add(p);
  }
  await Promise.race(inflight);
}
`;

async function writeUntilKilled(home: string, round: number, killAfterMs: number): Promise<string[]> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', WRITER], {
    env: { PATH: process.env['PATH'] ?? '', AEGIS_HOME: home, AUDIT_MODULE: AUDIT, ROUND: String(round) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  // Wait until the writer has opened the log, then let it run and kill it mid-stream.
  const deadline = Date.now() + 20_000;
  while (!out.startsWith('open\n') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 10));
  assert.ok(out.startsWith('open\n'), `writer ${round} did not open the log: ${err}`);
  await new Promise((r) => setTimeout(r, killAfterMs));
  child.kill('SIGKILL');
  await exited;
  assert.equal(child.signalCode, 'SIGKILL', `writer ${round} died on its own: ${err}`);
  const lines = out.split('\n');
  lines.pop(); // a line cut by the kill was not a complete acknowledgement
  return lines.slice(1);
}

describe('audit log durability under kill -9', () => {
  it('keeps every acknowledged event through repeated kills during heavy appends, and still verifies', async (t) => {
    const home = await mkdtemp(join(tmpdir(), 'aegis-crash-'));
    try {
      // Regression: `acked.push(...lines)` overflowed the call stack on a machine fast enough to
      // acknowledge more than ~120,000 events in one round (spread arguments live on the stack).
      let acked: string[] = [];
      const delays = [150, 400, 1300, 90, 700, 2100, 250, 1100];
      for (const [round, ms] of delays.entries()) acked = acked.concat(await writeUntilKilled(home, round, ms));
      // Then two writers at once, killed at different moments (one may die holding writer.lock).
      for (const [round, [ms1, ms2]] of [
        [300, 120],
        [80, 900],
        [650, 640],
      ].entries()) {
        const both = await Promise.all([
          writeUntilKilled(home, 100 + 2 * round, ms1 as number),
          writeUntilKilled(home, 101 + 2 * round, ms2 as number),
        ]);
        acked = acked.concat(...both);
      }
      assert.ok(acked.length > 1000, `only ${acked.length} events acknowledged`);

      const run = promisify(execFile);
      const env = { PATH: process.env['PATH'] ?? '', AEGIS_HOME: home };
      const verify = await run(process.execPath, [AEGIS, 'audit', 'verify'], { env, maxBuffer: 1 << 20 }).catch(
        (e: { stdout: string; stderr: string }) => e,
      );
      assert.match(verify.stdout, /^ok: \d+ entries, root /u, `${verify.stdout}${verify.stderr}`);

      const exported = await run(process.execPath, [AEGIS, 'audit', 'export'], { env, maxBuffer: 1 << 30 });
      const present = new Set(
        exported.stdout
          .trimEnd()
          .split('\n')
          .map((l) => (JSON.parse(l) as { event: { payload: { seq: string } } }).event.payload.seq),
      );
      const missing = acked.filter((s) => !present.has(s));
      assert.deepEqual(missing.slice(0, 10), [], `${missing.length} acknowledged events missing`);
      t.diagnostic(`${delays.length + 6} kills, ${acked.length} events acknowledged, ${present.size} in the log`);
      assert.equal(present.size, Number(/^ok: (\d+)/u.exec(verify.stdout)?.[1]), 'no duplicate events');
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});
