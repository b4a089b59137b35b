/**
 * Unit tests of the SDK's own parts: the transport (TCP and unix socket) against a small local
 * HTTP server that answers as the contract says, error typing, the SSE parser, the code archive
 * and the outputs unpacker. End-to-end tests against a real `aegis serve` are in
 * test/integration/server-sdk.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { Transport } from './http.js';
import { Aegis, AegisApiError, AegisClientError, Execution, packCodeDir, parseSse, unpackOutputs } from './index.js';

const tmp = mkdtempSync(join(tmpdir(), 'aegis-sdk-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

async function serve(handler: Handler, listenOn: number | string = 0): Promise<Server> {
  const srv = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, Buffer.concat(chunks), res));
  });
  await new Promise<void>((resolve) =>
    typeof listenOn === 'string' ? srv.listen(listenOn, resolve) : srv.listen(listenOn, '127.0.0.1', resolve),
  );
  return srv;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

describe('the transport', () => {
  let srv: Server;
  let sockSrv: Server;
  const seen: { method: string; url: string; auth: string | undefined; type: string | undefined; body: Buffer }[] = [];
  const sock = join(tmp, 'aegis.sock');
  const handler: Handler = (req, body, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization, type: req.headers['content-type'], body });
    if (req.headers.authorization !== 'Bearer good') return send(res, 401, { error: { code: 'unauthorized', message: 'bad key' } });
    if (req.url === '/v1/agents' && req.method === 'POST')
      return send(res, 201, { name: 'hello', version: 3, manifestDigest: 'sha256:aa', codeDigest: 'sha256:bb' });
    if (req.url === '/v1/agents/bad')
      return send(res, 200, { name: 'bad', version: 1, manifestDigest: 'sha256:aa', codeDigest: 'sha256:bb' });
    if (req.url === '/v1/agents/bad/executions') return send(res, 403, { error: { code: 'forbidden', message: 'needs role operator' } });
    if (req.url === '/v1/agents/hello/executions') return send(res, 201, { id: 'ex_1', status: 'queued' });
    if (req.url === '/v1/executions?agent=hello&status=running')
      return send(res, 200, { executions: [{ id: 'ex_1', agent: 'hello', status: 'running', exitCode: null, durationMs: null }] });
    if (req.url === '/v1/agents/broken')
      return send(res, 400, {
        error: { code: 'manifest_invalid', message: 'bad', issues: [{ line: 3, column: 9, path: 'agent.name', message: 'no' }] },
      });
    if (req.url === '/v1/agents/proxy') return res.writeHead(502).end('<html>bad gateway</html>');
    return send(res, 404, { error: { code: 'not_found', message: `no ${req.url}` } });
  };
  before(async () => {
    srv = await serve(handler);
    sockSrv = await serve(handler, sock);
  });
  after(() => {
    srv.close();
    sockSrv.close();
  });
  const url = (): string => `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;

  it('deploys as multipart with a manifest part and a gzip code part, with the bearer key', async () => {
    const code = join(tmp, 'code1');
    mkdirSync(code);
    writeFileSync(join(code, 'main.py'), 'print(1)\n');
    const aegis = new Aegis({ url: url(), apiKey: 'good' });
    const agent = await aegis.agents.deploy({ manifest: 'version: "1.0"\n', codeDir: code });
    assert.deepEqual(agent.info, { name: 'hello', version: 3, manifestDigest: 'sha256:aa', codeDigest: 'sha256:bb' });
    const req = seen.at(-1)!;
    assert.equal(req.auth, 'Bearer good');
    assert.match(req.type ?? '', /^multipart\/form-data; boundary=/);
    const text = req.body.toString('latin1');
    assert.match(text, /name="manifest"\r\ncontent-type: text\/plain; charset=utf-8\r\n\r\nversion: "1.0"\n\r\n/);
    assert.ok(
      text.includes('name="code"; filename="code.tar.gz"\r\ncontent-type: application/gzip\r\n\r\n\u001f\u008b'),
      'a gzip code part',
    );
    const run = await agent.execute({ args: ['a', 'b'], stdin: 'in' });
    assert.equal(run.id, 'ex_1');
    assert.deepEqual(JSON.parse(seen.at(-1)!.body.toString()), { args: ['a', 'b'], stdin: 'in' });
  });

  it('works over a unix socket, by unix: URL or socketPath', async () => {
    for (const opts of [{ url: `unix:${sock}` }, { url: 'http://localhost', socketPath: sock }]) {
      const aegis = new Aegis({ ...opts, apiKey: 'good' });
      const list = await aegis.executions.list({ agent: 'hello', status: 'running' });
      assert.equal(list[0]?.id, 'ex_1');
    }
  });

  it('types errors by the code of the body, with the status', async () => {
    const bad = new Aegis({ url: url(), apiKey: 'wrong' });
    await assert.rejects(bad.agents.list(), (e: unknown) => e instanceof AegisApiError && e.code === 'unauthorized' && e.status === 401);
    const aegis = new Aegis({ url: url(), apiKey: 'good' });
    await assert.rejects(
      aegis.agents.get('bad').then((a) => a.execute()),
      (e: unknown) => e instanceof AegisApiError && e.code === 'forbidden' && e.status === 403,
    );
    await assert.rejects(
      aegis.agents.get('broken'),
      (e: unknown) => e instanceof AegisApiError && e.code === 'manifest_invalid' && e.issues[0]?.line === 3,
    );
    await assert.rejects(
      aegis.executions.info('nope'),
      (e: unknown) => e instanceof AegisApiError && e.code === 'not_found' && e.status === 404,
    );
    await assert.rejects(
      aegis.agents.get('proxy'),
      (e: unknown) => e instanceof AegisApiError && e.code === 'internal' && e.status === 502,
    );
  });

  it('says the server is unreachable (refused port, missing socket)', async () => {
    const closed = await serve(() => undefined);
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await assert.rejects(
      new Aegis({ url: `http://127.0.0.1:${port}` }).agents.list(),
      (e: unknown) => e instanceof AegisClientError && e.code === 'unreachable',
    );
    await assert.rejects(
      new Aegis({ url: `unix:${join(tmp, 'none.sock')}` }).agents.list(),
      (e: unknown) => e instanceof AegisClientError && e.code === 'unreachable',
    );
  });

  it('refuses a URL that is not http(s) or unix:', () => {
    for (const u of ['ftp://x', 'not a url', 'unix:relative.sock']) {
      assert.throws(
        () => new Aegis({ url: u }),
        (e: unknown) => e instanceof AegisClientError && e.code === 'invalid_options',
        u,
      );
    }
  });
});

describe('Execution.stream', () => {
  it('yields stdout, stderr, audit and exit events and ends after exit', async () => {
    const srv = await serve((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': hello\n\nevent: stdout\ndata: {"data":"line 1\\n"}\n\n');
      res.write('event: stderr\r\ndata: {"data":"oops"}\r\n\r\nevent: audit\ndata: {"action":"net.connect"}\n\n');
      res.write('event: exit\ndata: {"status":"exited","exitCode":3}\n\nevent: stdout\ndata: {"data":"never"}\n\n');
      // Left open: the client must stop at `exit` on its own.
    });
    try {
      const run = new Execution(new Transport({ url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}` }), 'x', 'running');
      const events = [];
      for await (const ev of run.stream()) events.push(ev);
      assert.deepEqual(events, [
        { type: 'stdout', data: 'line 1\n' },
        { type: 'stderr', data: 'oops' },
        { type: 'audit', event: { action: 'net.connect' } },
        { type: 'exit', status: 'exited', exitCode: 3 },
      ]);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });
});

describe('Execution.stream when the connection is cut', () => {
  it('resumes after the last event seen (?after=<id>): nothing lost, nothing repeated', async () => {
    const urls: string[] = [];
    const srv = await serve((req, _b, res) => {
      urls.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (urls.length === 1) {
        res.write('event: stdout\nid: 1\ndata: {"data":"a"}\n\n');
        setTimeout(() => res.socket?.destroy(), 50); // cut mid-stream
      } else if (urls.length === 2) {
        res.end('event: stdout\nid: 2\ndata: {"data":"b"}\n\n'); // ends cleanly, still no exit
      } else {
        res.end('event: exit\nid: 3\ndata: {"status":"exited","exitCode":0}\n\n');
      }
    });
    try {
      const run = new Execution(new Transport({ url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}` }), 'x', 'running');
      const events = [];
      for await (const ev of run.stream()) events.push(ev);
      assert.deepEqual(events, [
        { type: 'stdout', data: 'a' },
        { type: 'stdout', data: 'b' },
        { type: 'exit', status: 'exited', exitCode: 0 },
      ]);
      assert.deepEqual(urls, ['/v1/executions/x/stream', '/v1/executions/x/stream?after=1', '/v1/executions/x/stream?after=2']);
    } finally {
      srv.close();
    }
  });
  it('gives up after maxReconnects with bad_response', async () => {
    let n = 0;
    const srv = await serve((_req, _b, res) => {
      n++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(': nothing\n\n');
    });
    try {
      const run = new Execution(new Transport({ url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}` }), 'x', 'running');
      await assert.rejects(
        (async () => {
          for await (const ev of run.stream({ maxReconnects: 2 })) void ev;
        })(),
        (e: unknown) => e instanceof AegisClientError && e.code === 'bad_response',
      );
      assert.equal(n, 3);
    } finally {
      srv.close();
    }
  });
});

describe('parseSse', () => {
  it('parses events split anywhere, with LF, CRLF and CR line ends and multi-line data', async () => {
    const text = 'event: a\r\ndata: 1\r\ndata: 2\r\n\r\n:comment\n\ndata:x\r\rid: 7\nevent: b\ndata: {"k":"é"}\n\n';
    const whole = [];
    for await (const m of parseSse([Buffer.from(text)])) whole.push(m);
    assert.deepEqual(whole, [
      { event: 'a', data: '1\n2' },
      { event: 'message', data: 'x' },
      { event: 'b', data: '{"k":"é"}', id: '7' },
    ]);
    const bytes = Buffer.from(text);
    for (let cut = 1; cut < bytes.length; cut++) {
      const got = [];
      for await (const m of parseSse([bytes.subarray(0, cut), bytes.subarray(cut)])) got.push(m);
      assert.deepEqual(got, whole, `cut at ${cut}`);
    }
  });
});

async function tarEntries(archive: Buffer): Promise<{ name: string; type: string; mode: number; data: string }[]> {
  const ex = tar.extract();
  const out = [];
  Readable.from([gunzipSync(archive)]).pipe(ex as unknown as NodeJS.WritableStream);
  for await (const e of ex) {
    const chunks: Buffer[] = [];
    for await (const c of e as AsyncIterable<Buffer>) chunks.push(c);
    out.push({ name: e.header.name, type: e.header.type, mode: e.header.mode, data: Buffer.concat(chunks).toString() });
  }
  return out;
}

describe('packCodeDir', () => {
  it('packs files and folders sorted, with normalised modes, reproducibly, leaving .git out', async () => {
    const dir = join(tmp, 'pack1');
    mkdirSync(join(dir, 'lib', 'sub'), { recursive: true });
    mkdirSync(join(dir, '.git'));
    writeFileSync(join(dir, '.git', 'HEAD'), 'ref');
    writeFileSync(join(dir, 'run.sh'), '#!/bin/sh\n');
    chmodSync(join(dir, 'run.sh'), 0o4775);
    writeFileSync(join(dir, 'lib', 'a.py'), 'a');
    chmodSync(join(dir, 'lib', 'a.py'), 0o666);
    const a = await packCodeDir(dir);
    const b = await packCodeDir(dir);
    assert.deepEqual(a, b, 'the same folder gives the same bytes');
    assert.deepEqual(await tarEntries(a), [
      { name: 'lib/', type: 'directory', mode: 0o755, data: '' },
      { name: 'lib/a.py', type: 'file', mode: 0o644, data: 'a' },
      { name: 'lib/sub/', type: 'directory', mode: 0o755, data: '' },
      { name: 'run.sh', type: 'file', mode: 0o755, data: '#!/bin/sh\n' },
    ]);
  });
  it('refuses a folder with a symlink, and a missing folder', async () => {
    const dir = join(tmp, 'pack2');
    mkdirSync(dir);
    symlinkSync('/etc/passwd', join(dir, 'link'));
    await assert.rejects(packCodeDir(dir), (e: unknown) => e instanceof AegisClientError && e.code === 'code_dir_invalid');
    await assert.rejects(packCodeDir(join(tmp, 'missing')), (e: unknown) => e instanceof AegisClientError && e.code === 'code_dir_invalid');
  });
});

async function tarOf(
  entries: { name: string; type?: 'file' | 'directory' | 'symlink'; data?: string; linkname?: string }[],
): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (e.data !== undefined) p.entry({ name: e.name, size: Buffer.byteLength(e.data) }, e.data, cb);
      else p.entry({ name: e.name, type: e.type ?? 'file', linkname: e.linkname ?? '' }, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

describe('unpackOutputs', () => {
  it('writes files and folders, and skips symlinks', async () => {
    const dir = join(tmp, 'out1');
    const r = await unpackOutputs(
      Readable.from([
        await tarOf([
          { name: 'data/outputs/', type: 'directory' },
          { name: 'data/outputs/r.txt', data: 'result' },
          { name: 'l', type: 'symlink', linkname: '/etc' },
        ]),
      ]),
      dir,
    );
    assert.deepEqual(r, { files: 1, bytes: 6, skipped: 1 });
    assert.equal(readFileSync(join(dir, 'data/outputs/r.txt'), 'utf8'), 'result');
    assert.equal(existsSync(join(dir, 'l')), false);
  });
  it('refuses an entry that climbs out, and a destination that is not empty', async () => {
    const dir = join(tmp, 'out2', 'inner');
    await assert.rejects(
      unpackOutputs(Readable.from([await tarOf([{ name: '../escape.txt', data: 'x' }])]), dir),
      (e: unknown) => e instanceof AegisClientError && e.code === 'outputs_failed',
    );
    assert.equal(existsSync(join(tmp, 'out2', 'escape.txt')), false);
    assert.deepEqual(readdirSync(dir), []);
    writeFileSync(join(dir, 'x'), '');
    await assert.rejects(
      unpackOutputs(Readable.from([await tarOf([])]), dir),
      (e: unknown) => e instanceof AegisClientError && e.code === 'outputs_failed',
    );
  });
});

describe('the package', () => {
  it('imports nothing of the server: only node:, tar-stream and its own modules', async () => {
    const { fileURLToPath } = await import('node:url');
    const { dirname } = await import('node:path');
    // dist/sdk/src/sdk.test.js (root build) -> <repo>/sdk/src
    const src = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'sdk', 'src');
    const files = readdirSync(src).filter((f) => f.endsWith('.ts'));
    assert.ok(files.length >= 6);
    for (const f of files) {
      const text = readFileSync(join(src, f), 'utf8');
      for (const m of text.matchAll(/^(?:import|export)\s[^;]*?from\s+'([^']+)'|\bimport\(\s*'([^']+)'\s*\)/gms)) {
        const spec = (m[1] ?? m[2])!;
        assert.ok(spec.startsWith('node:') || spec === 'tar-stream' || /^\.\/[a-z-]+\.js$/.test(spec), `${f} imports ${spec}`);
      }
    }
  });
});
