/**
 * Benchmark client (runs on the host for "direct", inside the sandbox namespace for the
 * gateway paths). Prints one JSON object on stdout.
 *
 *   node gateway-client.js <mode> <address> <ca.pem> [proxy host:port]
 *   mode: latency | newconn | throughput (HTTPS on 443)
 *         tcp-latency | tcp-newconn | tcp-throughput (raw TCP: echo on 9001, source on 9000)
 */
import { request as httpsRequest, Agent } from 'node:https';
import { request as httpRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { connect as tcpConnect } from 'node:net';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

const [mode, address, caFile, proxy] = process.argv.slice(2);
const ca = readFileSync(caFile!);
const HOST = 'bench.test';
const TCP_SOURCE_PORT = 9000;
const TCP_ECHO_PORT = 9001;

function openTcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: address, port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Write `msg` and wait until as many bytes came back (the echo server). */
function roundTrip(s: Socket, msg: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (c: Buffer): void => {
      got += c.length;
      if (got >= msg.length) {
        s.off('data', onData);
        s.off('error', reject);
        resolve();
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(msg);
  });
}

/** A TLS socket to bench.test, through an HTTP CONNECT proxy when one is given. */
function openTls(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const viaTcp = (raw?: Duplex): void => {
      const s = tlsConnect({ host: address, port: 443, servername: HOST, ca, socket: raw as Socket | undefined }, () => resolve(s));
      s.once('error', reject);
    };
    if (!proxy) return viaTcp();
    const [ph, pp] = proxy.split(':');
    const req = httpRequest({ host: ph, port: Number(pp), method: 'CONNECT', path: `${HOST}:443`, headers: { host: `${HOST}:443` } });
    req.once('connect', (res, sock) => (res.statusCode === 200 ? viaTcp(sock) : reject(new Error(`CONNECT ${res.statusCode}`))));
    req.once('error', reject);
    req.end();
  });
}

function get(agent: Agent, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: address, port: 443, servername: HOST, headers: { host: HOST }, path, agent, ca }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => (n += c.length));
      res.on('end', () => resolve(n));
      res.on('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  if (mode === 'latency') {
    // Sequential small requests on one kept-alive TLS connection.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    (agent as unknown as { createConnection: unknown }).createConnection = (_o: unknown, cb: (e: Error | null, s?: Socket) => void) => {
      openTls().then(
        (s) => cb(null, s),
        (e: Error) => cb(e),
      );
      return undefined;
    };
    for (let i = 0; i < 200; i++) await get(agent, '/warm'); // warm-up
    const times: number[] = [];
    for (let i = 0; i < 3000; i++) {
      const t = process.hrtime.bigint();
      await get(agent, '/small');
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    agent.destroy();
    console.log(JSON.stringify({ p50: pct(times, 50), p99: pct(times, 99) }));
  } else if (mode === 'newconn') {
    // New TLS connection + one request + close, sequentially, for a fixed time.
    const times: number[] = [];
    const end = Date.now() + 3000;
    while (Date.now() < end) {
      const t = process.hrtime.bigint();
      const s = await openTls();
      await new Promise<void>((resolve, reject) => {
        let buf = '';
        s.on('data', (c: Buffer) => {
          buf += c.toString('latin1');
          if (buf.includes('\r\n\r\n') && buf.endsWith('}')) resolve();
        });
        s.once('error', reject);
        s.write(`GET /conn HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
      });
      s.destroy();
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    console.log(JSON.stringify({ perSecond: times.length / 3, p50: pct(times, 50), p99: pct(times, 99) }));
  } else if (mode === 'throughput') {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    (agent as unknown as { createConnection: unknown }).createConnection = (_o: unknown, cb: (e: Error | null, s?: Socket) => void) => {
      openTls().then(
        (s) => cb(null, s),
        (e: Error) => cb(e),
      );
      return undefined;
    };
    await get(agent, '/bytes/1048576'); // warm-up
    const size = 100 * 1024 * 1024;
    const c0 = process.cpuUsage();
    const t = process.hrtime.bigint();
    const n = await get(agent, `/bytes/${size}`);
    const secs = Number(process.hrtime.bigint() - t) / 1e9;
    const cpu = process.cpuUsage(c0);
    agent.destroy();
    if (n !== size) throw new Error(`downloaded ${n} of ${size} bytes`);
    console.log(JSON.stringify({ mbPerSecond: size / 1e6 / secs, seconds: secs, clientCpuMs: (cpu.user + cpu.system) / 1000 }));
  } else if (mode === 'tcp-latency') {
    // Sequential 64-byte round trips on one connection to the echo server.
    const s = await openTcp(TCP_ECHO_PORT);
    const msg = Buffer.alloc(64, 0x41);
    for (let i = 0; i < 200; i++) await roundTrip(s, msg);
    const times: number[] = [];
    for (let i = 0; i < 3000; i++) {
      const t = process.hrtime.bigint();
      await roundTrip(s, msg);
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    s.destroy();
    console.log(JSON.stringify({ p50: pct(times, 50), p99: pct(times, 99) }));
  } else if (mode === 'tcp-newconn') {
    // New TCP connection + one round trip + close, sequentially, for a fixed time.
    const times: number[] = [];
    const msg = Buffer.alloc(64, 0x41);
    const end = Date.now() + 3000;
    while (Date.now() < end) {
      const t = process.hrtime.bigint();
      const s = await openTcp(TCP_ECHO_PORT);
      await roundTrip(s, msg);
      s.destroy();
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    console.log(JSON.stringify({ perSecond: times.length / 3, p50: pct(times, 50), p99: pct(times, 99) }));
  } else if (mode === 'tcp-throughput') {
    const size = 100 * 1024 * 1024;
    const s = await openTcp(TCP_SOURCE_PORT);
    const t = process.hrtime.bigint();
    const n = await new Promise<number>((resolve, reject) => {
      let got = 0;
      s.on('data', (c: Buffer) => (got += c.length));
      s.once('end', () => resolve(got));
      s.once('error', reject);
      s.write(`${size}\n`);
    });
    const secs = Number(process.hrtime.bigint() - t) / 1e9;
    s.destroy();
    if (n !== size) throw new Error(`received ${n} of ${size} bytes`);
    console.log(JSON.stringify({ mbPerSecond: size / 1e6 / secs, seconds: secs }));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

main().catch((err: unknown) => {
  console.error(String(err));
  process.exit(1);
});
