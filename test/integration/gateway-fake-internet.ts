/**
 * A "fake internet" for gateway tests and benchmarks, built in a network namespace on this
 * machine: an authoritative-style DNS server and HTTP/HTTPS servers (certificates from a test
 * CA made with the openssl CLI) for api.openai.com, storage.googleapis.com, attacker.com, ...
 * on TEST-NET-2 addresses (198.51.100.0/24). No traffic leaves the machine.
 *
 * ADDRESS NOTE: the host-side veth gets 198.51.100.1/24, so while the fake internet exists the
 * host routes all of 198.51.100.0/24 into it. Never move it to a range the host really uses:
 * on these machines the npm registry and the Debian mirror resolve to 203.0.113.80 (TEST-NET-3),
 * and a fake internet there broke apt, debootstrap and npm while tests ran. `startFakeInternet`
 * refuses to start when anything else on the host routes into FAKE_INET_PREFIX, removes what a
 * crashed run left behind first, and `close()` checks that the link is really gone.
 *
 * The same file is the server program: run with FAKE_INET_MAIN=1 inside the namespace.
 * (Imported by `node --test`, it does nothing.)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer } from 'node:net';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import * as packet from 'dns-packet';
import { makeServerPki } from '../../src/test-support/tls.js';

export const INET_NS = 'aegt-inet';
const HOST_IF = 'agtinet0h';
const NS_IF = 'agtinet0n';
/** TEST-NET-2 (RFC 5737): reserved for documentation, routed nowhere real. */
export const FAKE_INET_PREFIX = '198.51.100.0/24';
export const INET_GW = '198.51.100.1';
export const UPSTREAM_DNS = '198.51.100.53';

/** The fake internet's zone: name -> A address, or CNAME target. */
export const ZONE: Record<string, { a?: string; cname?: string }> = {
  'api.openai.com': { a: '198.51.100.10' },
  'storage.googleapis.com': { cname: 'storage.l.googleusercontent.com' },
  'storage.l.googleusercontent.com': { a: '198.51.100.11' },
  'attacker.com': { a: '198.51.100.66' },
  // DNS rebinding: an allowed name that resolves to a private or metadata address.
  'rebind.allowed.test': { a: '10.0.0.5' },
  'metadata.allowed.test': { a: '169.254.169.254' },
  'bench.test': { a: '198.51.100.20' },
  // Real servers for the generic TCP path (started on request, see FakeInternetOptions).
  'db.internal': { a: '198.51.100.30' },
  'git.example.com': { a: '198.51.100.31' },
  // A name the test certificate does not cover (upstream verification by the TLS terminator).
  'wrongname.example.net': { a: '198.51.100.10' },
  // A tool server the tools broker reaches by name (run-tools.test.ts): the host-side address, where the test's own servers listen.
  'mcp.tools.test': { a: '198.51.100.1' },
};

/** The API key /v1/whoami accepts (`Authorization: Bearer <key>`): the secrets broker's tests. */
export const FAKE_API_KEY = 'sk-live-fakeinet-7f3a9c1e5d';
export const DB_ADDRESS = '198.51.100.30';
export const SSH_ADDRESS = '198.51.100.31';
/** Raw TCP on bench.test: 9000 sends as many bytes as the decimal line the client sends; 9001 echoes. */
export const RAW_SOURCE_PORT = 9000;
export const RAW_ECHO_PORT = 9001;
/** Every *.attacker.com name resolves too (the tunnel-by-subdomain target). */
const WILDCARD_ATTACKER = '198.51.100.66';
const ADDRESSES = [
  '198.51.100.2',
  '198.51.100.10',
  '198.51.100.11',
  '198.51.100.20',
  '198.51.100.30',
  '198.51.100.31',
  '198.51.100.53',
  '198.51.100.66',
];
export const CERT_NAMES = [
  'api.openai.com',
  'storage.googleapis.com',
  'attacker.com',
  '*.attacker.com',
  'bench.test',
  'git.example.com',
  'db.internal',
];

export interface FakeInternetOptions {
  /**
   * A real PostgreSQL 15 server (Debian's, run as the postgres user on a throw-away data dir)
   * at db.internal:5432: database `app`, role `agent` (password `agent-pw`), a table `items`.
   */
  readonly postgres?: boolean;
  /** A real SSH server (Debian's dropbear-bin, no host sshd) at git.example.com:22. */
  readonly ssh?: boolean;
}

export interface FakeInternet {
  readonly caFile: string;
  readonly dir: string;
  /** JSON lines the servers logged: one per request they received. */
  requestsSeen(): Array<{ host: string; path: string; tls: boolean; authorization?: string | null }>;
  close(): Promise<void>;
}

function sh(cmd: string, args: readonly string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
}
function shQuiet(cmd: string, args: readonly string[]): void {
  try {
    sh(cmd, args);
  } catch {
    /* already gone */
  }
}

/** Test CA and one server certificate for every name in CERT_NAMES (openssl CLI). */
export function makeTestPki(dir: string): { caFile: string; certFile: string; keyFile: string } {
  return makeServerPki(
    dir,
    'fake internet',
    CERT_NAMES.map((n) => `DNS:${n}`),
  );
}

function linkExists(name: string): boolean {
  try {
    sh('ip', ['link', 'show', 'dev', name]);
    return true;
  } catch {
    return false;
  }
}

/** Host routes (any table) inside FAKE_INET_PREFIX, as `ip -o` lines. */
function routesInPrefix(): string[] {
  return sh('ip', ['-4', '-o', 'route', 'show', 'table', 'all', 'root', FAKE_INET_PREFIX]).split('\n').filter(Boolean);
}

/**
 * Remove the fake internet, including one left behind by a crashed or killed run: the server
 * processes still inside the namespace (they would keep it, and its veth, alive), the host-side
 * link (which takes its peer and the route with it) and the namespace. Throws when the link or
 * a route into FAKE_INET_PREFIX is still there afterwards.
 */
export function removeFakeInternet(): void {
  let pids: string[] = [];
  try {
    pids = sh('ip', ['netns', 'pids', INET_NS])
      .split('\n')
      .filter((l) => /^[0-9]+$/.test(l));
  } catch {
    pids = []; // no such namespace
  }
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  shQuiet('ip', ['link', 'del', HOST_IF]);
  shQuiet('ip', ['netns', 'del', INET_NS]);
  if (linkExists(HOST_IF)) throw new Error(`fake internet: ${HOST_IF} could not be removed`);
  const left = routesInPrefix().filter((r) => r.includes(` dev ${HOST_IF} `));
  if (left.length > 0) throw new Error(`fake internet: routes still point into ${HOST_IF}: ${left.join('; ')}`);
}

/** Synchronous best-effort removal on the way out of a test process (normal exit or a signal). */
let exitHooks = false;
function removeOnExit(): void {
  if (exitHooks) return;
  exitHooks = true;
  process.once('exit', () => {
    try {
      removeFakeInternet();
    } catch (err) {
      process.stderr.write(`${String(err)}\n`);
    }
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      try {
        removeFakeInternet();
      } finally {
        process.kill(process.pid, sig); // the handler was `once`: this time the default action ends the process
      }
    });
  }
}

/** Build the namespace, start the servers inside it, wait until they are ready. */
export async function startFakeInternet(opts: FakeInternetOptions = {}): Promise<FakeInternet> {
  removeFakeInternet();
  // Never shadow something the host really routes into the test prefix (see ADDRESS NOTE).
  const foreign = routesInPrefix();
  if (foreign.length > 0)
    throw new Error(`fake internet: the host already routes into ${FAKE_INET_PREFIX} (${foreign.join('; ')}); refusing to shadow it`);
  removeOnExit();
  const dir = mkdtempSync(`${tmpdir()}/aegis-fake-inet-`);
  chmodSync(dir, 0o755); // sandboxed agents (mapped uids) read ca.pem from here
  let child: ChildProcess | null = null;
  try {
    const pki = makeTestPki(dir);
    sh('ip', ['netns', 'add', INET_NS]);
    sh('ip', ['link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF, 'netns', INET_NS]);
    sh('ip', ['addr', 'add', `${INET_GW}/24`, 'dev', HOST_IF]);
    sh('ip', ['link', 'set', HOST_IF, 'up']);
    const inNs = (args: string[]): string => sh('ip', ['netns', 'exec', INET_NS, ...args]);
    for (const a of ADDRESSES) inNs(['ip', 'addr', 'add', `${a}/24`, 'dev', NS_IF]);
    inNs(['ip', 'link', 'set', 'lo', 'up']);
    inNs(['ip', 'link', 'set', NS_IF, 'up']);
    inNs(['ip', 'route', 'add', 'default', 'via', INET_GW]);
    const log = `${dir}/requests.jsonl`;
    writeFileSync(log, '');
    // stdin is a pipe the server watches: if this process dies, the server exits too.
    const c = spawn('ip', ['netns', 'exec', INET_NS, process.execPath, fileURLToPath(import.meta.url)], {
      env: { ...process.env, FAKE_INET_MAIN: '1', FAKE_INET_CERT: pki.certFile, FAKE_INET_KEY: pki.keyFile, FAKE_INET_LOG: log },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    child = c;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('fake internet did not start in 15 s')), 15_000);
      c.once('exit', (code) => reject(new Error(`fake internet exited early (${code})`)));
      c.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    // Real servers run as children of `ip netns exec` inside the namespace: removeFakeInternet
    // kills every process there, so a crashed run leaves none behind.
    if (opts.postgres) await startPostgres(dir);
    if (opts.ssh) await startSsh(dir);
    return {
      caFile: pki.caFile,
      dir,
      requestsSeen: () =>
        readFileSync(log, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { host: string; path: string; tls: boolean; authorization?: string | null }),
      close: async () => {
        // PostgreSQL stopped by its own tool (a SIGKILLed postmaster would leave its shared memory).
        if (opts.postgres)
          shQuiet('ip', [
            'netns',
            'exec',
            INET_NS,
            'runuser',
            '-u',
            'postgres',
            '--',
            `${postgresBin()}/pg_ctl`,
            '-D',
            `${dir}/pg`,
            '-m',
            'immediate',
            '-w',
            'stop',
          ]);
        await stopServer(c);
        removeFakeInternet();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (child) await stopServer(child);
    removeFakeInternet();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The newest PostgreSQL server binaries Debian installed (/usr/lib/postgresql/<v>/bin). */
function postgresBin(): string {
  const versions = sh('ls', ['/usr/lib/postgresql'])
    .split('\n')
    .filter((v) => /^[0-9]+$/.test(v));
  if (versions.length === 0) throw new Error('fake internet: no PostgreSQL server (Debian package postgresql)');
  return `/usr/lib/postgresql/${versions.sort((a, b) => Number(a) - Number(b)).at(-1)!}/bin`;
}

/** Wait until `probe` succeeds (every 100 ms, at most `ms`). */
async function waitFor(what: string, probe: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`fake internet: ${what} did not start in ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function detached(args: readonly string[]): void {
  const c = spawn('ip', ['netns', 'exec', INET_NS, ...args], { stdio: 'ignore', detached: true });
  c.unref();
}

async function startPostgres(dir: string): Promise<void> {
  const bin = postgresBin();
  const data = `${dir}/pg`;
  mkdirSync(data, { mode: 0o700 });
  sh('chown', ['postgres:postgres', data]);
  const pw = `${dir}/pg.pw`;
  writeFileSync(pw, 'postgres-pw\n');
  sh('chown', ['postgres', pw]);
  sh('runuser', [
    '-u',
    'postgres',
    '--',
    `${bin}/initdb`,
    '-D',
    data,
    '-U',
    'postgres',
    '-A',
    'scram-sha-256',
    `--pwfile=${pw}`,
    '--no-sync',
    '-E',
    'UTF8',
  ]);
  // Clients come from the host end of the fake internet's veth (the gateway connects from there).
  writeFileSync(`${data}/pg_hba.conf`, 'local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n');
  detached([
    'runuser',
    '-u',
    'postgres',
    '--',
    `${bin}/postgres`,
    '-D',
    data,
    '-k',
    data,
    '-c',
    `listen_addresses=${DB_ADDRESS}`,
    '-p',
    '5432',
    '-c',
    'fsync=off',
  ]);
  const psql = (sql: string, db = 'postgres'): string =>
    sh('ip', [
      'netns',
      'exec',
      INET_NS,
      'runuser',
      '-u',
      'postgres',
      '--',
      'psql',
      '-h',
      data,
      '-p',
      '5432',
      '-d',
      db,
      '-v',
      'ON_ERROR_STOP=1',
      '-Atqc',
      sql,
    ]);
  await waitFor('PostgreSQL', () => {
    try {
      return psql('select 1').trim() === '1';
    } catch {
      return false;
    }
  });
  psql("create role agent login password 'agent-pw'");
  psql('create database app owner agent');
  psql(
    "create table items (id int primary key, name text); insert into items values (1, 'first'), (2, 'second'); alter table items owner to agent",
    'app',
  );
}

async function startSsh(dir: string): Promise<void> {
  const key = `${dir}/ssh_host_ed25519`;
  sh('dropbearkey', ['-t', 'ed25519', '-f', key]);
  // -F foreground, -E log to stderr, -s no password logins, -R no other keys generated.
  detached(['dropbear', '-F', '-E', '-s', '-r', key, '-p', `${SSH_ADDRESS}:22`, '-P', `${dir}/dropbear.pid`]);
  await waitFor('dropbear', () => {
    try {
      sh('ip', ['netns', 'exec', INET_NS, 'bash', '-c', `exec 3<>/dev/tcp/${SSH_ADDRESS}/22`]);
      return true;
    } catch {
      return false;
    }
  });
}

/** SIGTERM the server and wait (at most 2 s) for it to exit; SIGKILL after that. */
async function stopServer(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGTERM');
  const timer = setTimeout(() => c.kill('SIGKILL'), 2_000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// The server program (runs inside the namespace).

function lookup(name: string): { a?: string; cname?: string } | undefined {
  const n = name.toLowerCase();
  if (ZONE[n]) return ZONE[n];
  if (n.endsWith('.attacker.com')) return { a: WILDCARD_ATTACKER };
  return undefined;
}

function serveDns(): void {
  const udp = createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    let q: packet.Packet;
    try {
      q = packet.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (!question) return;
    const answers: packet.Answer[] = [];
    let name = question.name;
    let rec = lookup(name);
    const rcode = rec ? 0 : 3;
    if (question.type === 'TXT' && rec)
      answers.push({ type: 'TXT', name, ttl: 60, class: 'IN', data: 'exfil-channel-open' } as packet.Answer);
    while (rec && (question.type === 'A' || question.type === 'AAAA')) {
      if (rec.cname) {
        answers.push({ type: 'CNAME', name, ttl: 120, class: 'IN', data: rec.cname } as packet.Answer);
        name = rec.cname;
        rec = lookup(name);
        continue;
      }
      if (rec.a && question.type === 'A') answers.push({ type: 'A', name, ttl: 300, class: 'IN', data: rec.a } as packet.Answer);
      if (question.type === 'AAAA') answers.push({ type: 'AAAA', name, ttl: 300, class: 'IN', data: '2001:db8::66' } as packet.Answer);
      break;
    }
    const reply = packet.encode({ type: 'response', id: q.id, flags: packet.RECURSION_AVAILABLE | rcode, questions: q.questions, answers });
    udp.send(reply, rinfo.port, rinfo.address);
  });
  udp.bind(53, UPSTREAM_DNS);
}

function handler(tls: boolean, logFile: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    if (host !== 'bench.test')
      writeFileSync(logFile, `${JSON.stringify({ host, path: req.url, tls, authorization: req.headers.authorization ?? null })}\n`, {
        flag: 'a',
      });
    if (req.url?.startsWith('/bucket/')) {
      // Storage for the secrets broker's tests: never echoes the request (its query holds a key).
      req.resume();
      const body = JSON.stringify({ stored: true, method: req.method });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
      return;
    }
    if (req.url?.startsWith('/v1/whoami')) {
      // 200 only with the real key (the secrets broker's swap); the body never echoes a credential.
      req.resume();
      const ok = req.headers.authorization === `Bearer ${FAKE_API_KEY}`;
      const body = JSON.stringify({ ok, method: req.method });
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
      return;
    }
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (m) {
      // Bulk download for the benchmark: stream n bytes in 64 KiB chunks.
      let left = Number(m[1]);
      const chunk = Buffer.alloc(65536, 0x61);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) });
      const pump = (): void => {
        while (left > 0) {
          const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= c.length;
          if (!res.write(c)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    if (req.url?.startsWith('/repo.git/info/refs')) {
      // Git smart HTTP (protocol v0): the ref advertisement is all `git ls-remote` needs.
      req.resume();
      const pkt = (line: string): string => `${(line.length + 4).toString(16).padStart(4, '0')}${line}`;
      const sha = 'a'.repeat(40);
      const body = `${pkt('# service=git-upload-pack\n')}0000${pkt(`${sha} HEAD\0symref=HEAD:refs/heads/main agent=fake-internet\n`)}${pkt(`${sha} refs/heads/main\n`)}0000`;
      res.writeHead(200, {
        'content-type': 'application/x-git-upload-pack-advertisement',
        'cache-control': 'no-cache',
        'content-length': String(Buffer.byteLength(body)),
      });
      res.end(body);
      return;
    }
    req.resume();
    const body = JSON.stringify({ host, path: req.url, method: req.method, tls });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  };
}

function main(): void {
  const log = process.env.FAKE_INET_LOG!;
  serveDns();
  const https = createHttpsServer(
    { cert: readFileSync(process.env.FAKE_INET_CERT!), key: readFileSync(process.env.FAKE_INET_KEY!), keepAliveTimeout: 30_000 },
    handler(true, log),
  );
  const http = createHttpServer({ keepAliveTimeout: 30_000 }, handler(false, log));
  let ready = 0;
  const up = (): void => {
    if (++ready === 4) process.stdout.write('ready\n');
  };
  https.listen(443, '0.0.0.0', up);
  http.listen(80, '0.0.0.0', up);
  // Raw TCP for the generic path's benchmark: a source (send the number of bytes asked for on
  // the first line) and an echo.
  const source = createTcpServer((s) => {
    s.setNoDelay(true);
    s.on('error', () => s.destroy());
    let line = '';
    const onData = (d: Buffer): void => {
      line += d.toString('latin1');
      const nl = line.indexOf('\n');
      if (nl < 0) return;
      s.off('data', onData);
      let left = Math.min(Number(line.slice(0, nl)) || 0, 2 ** 31);
      const chunk = Buffer.alloc(65536, 0x62);
      const pump = (): void => {
        while (left > 0) {
          const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= c.length;
          if (!s.write(c)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    };
    s.on('data', onData);
  });
  const echo = createTcpServer((s) => {
    s.setNoDelay(true);
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  source.listen(RAW_SOURCE_PORT, '0.0.0.0', up);
  echo.listen(RAW_ECHO_PORT, '0.0.0.0', up);
  process.on('SIGTERM', () => process.exit(0));
  // The test process holds the other end of stdin: when it goes away (even by SIGKILL), so do we.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

if (process.env.FAKE_INET_MAIN === '1') main();
