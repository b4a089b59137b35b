/**
 * `aegis run` start-up (issue 18), end to end through bin/aegis.js with crun: the CLI runs from
 * its bundle (dist/bundle/, scripts/bundle.ts), a run without network loads none of the
 * server-side packages (the HTTP server, PostgreSQL, SQLite, Docker, the MCP SDK, X.509), nor
 * zod and the gateway's configuration while every gateway slot on the host belongs to a live
 * owner (regression: the sweep of lost runs loaded them whenever any slot existed), and
 * `--timings` prints every phase and the total. Durations are not asserted (bench/sandbox.ts
 * measures them); only that they are there and add up.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import { processStartTime } from '../../src/host/pid-lock.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';

/** Packages a run of a crun agent without network must never load (lazy imports elsewhere). */
const SERVER_SIDE =
  /\/node_modules\/(fastify|@fastify\/[^/]+|pg|pg-pool|pg-protocol|better-sqlite3|dockerode|docker-modem|ssh2|@modelcontextprotocol\/sdk|@peculiar\/x509)\//;

/** Sources a run without network must not load (bundled, so found through dist/bundle/meta.json). */
const NOT_FOR_A_PLAIN_RUN = /(\/node_modules\/zod\/|^src\/gateway\/config\.ts$|^src\/server\/|^src\/manifest\/schema\.ts$)/;

/** A module hook (run by Node on its loader thread) that appends every resolved URL to a file. */
const HOOKS = `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.AEGIS_TEST_MODULE_LOG, r.url + '\\n');
  return r;
}
`;

interface Ran {
  code: number | null;
  err: string;
}

describe('aegis run start-up (bundle, lazy modules, --timings)', { timeout: 120_000 }, () => {
  let work = '';
  let unavailable: string | null = null;
  before(async () => {
    unavailable = await sandboxUnavailable();
    work = mkdtempSync('/var/tmp/aegis-startup-');
    chmodSync(work, 0o755);
    writeFileSync(join(work, 'hooks.mjs'), HOOKS);
    writeFileSync(
      join(work, 'register.mjs'),
      `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(work, 'hooks.mjs')).href)});\n`,
    );
    writeFileSync(
      join(work, 'agent.yaml'),
      'version: "1.0"\nagent:\n  name: startup-test\n  runtime: "python:3.11"\n  entrypoint: ["true"]\npermissions:\n  memory: 128MiB\n',
    );
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  function aegis(args: string[], moduleLog: string, extraEnv: Record<string, string> = {}): Promise<Ran> {
    const home = mkdtempSync(join(work, 'home-'));
    return new Promise((resolve) => {
      const child = spawn(process.execPath, ['--import', pathToFileURL(join(work, 'register.mjs')).href, AEGIS_BIN, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, AEGIS_HOME: home, AEGIS_MONITOR: 'off', AEGIS_TEST_MODULE_LOG: moduleLog, ...extraEnv },
      });
      let err = '';
      child.stdout.resume();
      child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, err });
      });
    });
  }

  it('a run without network loads the bundle and no server-side package; --timings lists every phase', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    // The first run of a manifest parses and compiles it (zod); the policy cache serves the next.
    const first = await aegis(['run', join(work, 'agent.yaml'), '--state-dir', join(work, 'state')], join(work, 'modules-first.log'));
    assert.equal(first.code, 0, first.err);
    assert.doesNotMatch(first.err, /timing/, 'nothing about timing without --timings');
    const log = join(work, 'modules.log');
    writeFileSync(log, '');
    // The gateway's state dir holds one slot lock, owned by this (live) test process.
    const gatewayState = mkdtempSync(join(work, 'gateway-'));
    mkdirSync(join(gatewayState, 'net-slots'));
    writeFileSync(join(gatewayState, 'net-slots', '3'), JSON.stringify({ pid: process.pid, start: processStartTime(process.pid) }));
    const r = await aegis(['run', join(work, 'agent.yaml'), '--state-dir', join(work, 'state'), '--timings'], log, {
      AEGIS_STATE_DIR: gatewayState,
    });
    assert.equal(r.code, 0, r.err);
    assert.ok(existsSync(join(gatewayState, 'net-slots', '3')), 'a live slot is left alone');

    const urls = readFileSync(log, 'utf8').split('\n').filter(Boolean);
    const repo = pathToFileURL(REPO_ROOT).href + '/';
    const ours = urls.filter((u) => u.startsWith(repo) && !u.includes('/node_modules/'));
    assert.ok(ours.includes(`${repo}dist/bundle/aegis.js`), `the bundle is what bin/aegis.js runs: ${ours.join(' ')}`);
    assert.deepEqual(
      ours.filter((u) => !u.startsWith(`${repo}dist/bundle/`) && u !== `${repo}bin/aegis.js`),
      [],
      'no module outside the bundle',
    );
    assert.deepEqual(
      urls.filter((u) => SERVER_SIDE.test(u)),
      [],
      'no server-side package loaded',
    );
    const meta = JSON.parse(readFileSync(join(REPO_ROOT, 'dist', 'bundle', 'meta.json'), 'utf8')) as {
      outputs: Record<string, { inputs: Record<string, unknown> }>;
    };
    const loadedSources = ours.flatMap((u) => Object.keys(meta.outputs[u.slice(repo.length)]?.inputs ?? {}));
    assert.ok(loadedSources.includes('src/sandbox/run.ts'), 'the metafile names the sources of the loaded chunks');
    assert.deepEqual(
      loadedSources.filter((src) => NOT_FOR_A_PLAIN_RUN.test(src)),
      [],
      'neither zod, the gateway configuration nor the server loaded',
    );

    const lines = r.err.split('\n').filter((l) => l.startsWith('aegis run: timing: '));
    const phases = lines.map((l) => {
      const m = /^aegis run: timing: (\S+) +(\d+\.\d) ms$/.exec(l);
      assert.ok(m, `timing line: ${l}`);
      return { name: m[1]!, ms: Number(m[2]) };
    });
    const names = phases.map((p) => p.name);
    for (const expected of [
      'node_and_cli_start',
      'load_manifest_and_image',
      'audit.open_wait',
      'services.start',
      'sandbox.spawn',
      'sandbox.runtime_and_agent',
      'sandbox.release',
      'services.close',
      'total',
    ])
      assert.ok(names.includes(expected), `phase ${expected} in ${names.join(' ')}`);
    assert.equal(names.at(-1), 'total');
    const total = phases.at(-1)!.ms;
    const sum = phases.slice(0, -1).reduce((s, p) => s + p.ms, 0);
    assert.ok(Math.abs(sum - total) <= 0.05 * phases.length + 0.1, `phases add up to the total (${sum} vs ${total})`);
  });
});
