/**
 * Real MCP servers for tests and benchmarks, built with the official SDK: the same tools over
 * Streamable HTTP (in this process) and over stdio (a script the broker's unit tests run as a
 * plain process; under `aegis run` a local server runs in its own sandbox, see
 * test/integration/run-tools.test.ts).
 *
 * Tools: `echo` (returns its text), `whoami` (uid and gid of the server process; over stdio also the
 * names in its environment), `send_email` (the one manifests refuse), `fail` (a result with isError),
 * `slow` (answers after `ms`), `big` (a result of `bytes` bytes), `garbage` (stdio only: writes
 * a line that is not JSON-RPC, then answers).
 */
import { writeFileSync, chmodSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import * as z from 'zod';
import { REPO_ROOT } from './repo.js';

/** Every call the test server received: tool name and arguments. */
export interface SeenCall {
  readonly tool: string;
  readonly args: unknown;
}

function buildServer(seen: SeenCall[]): McpServer {
  const s = new McpServer({ name: 'aegis-test-tools', version: '1.0.0' });
  const text = (t: string) => ({ content: [{ type: 'text' as const, text: t }] });
  s.registerTool('echo', { description: 'echo', inputSchema: { text: z.string() } }, ({ text: t }) => {
    seen.push({ tool: 'echo', args: { text: t } });
    return text(t);
  });
  s.registerTool('send_email', { description: 'send', inputSchema: { to: z.string(), body: z.string() } }, (a) => {
    seen.push({ tool: 'send_email', args: a });
    return text('sent');
  });
  s.registerTool('whoami', { description: 'who runs the server' }, () => {
    seen.push({ tool: 'whoami', args: {} });
    return text(JSON.stringify({ uid: process.getuid?.(), gid: process.getgid?.() }));
  });
  s.registerTool('fail', { description: 'isError' }, () => ({ ...text('it failed'), isError: true }));
  s.registerTool('slow', { description: 'slow', inputSchema: { ms: z.number() } }, async ({ ms }) => {
    await new Promise((r) => setTimeout(r, ms));
    return text('late');
  });
  s.registerTool('big', { description: 'big', inputSchema: { bytes: z.number() } }, ({ bytes }) => text('x'.repeat(bytes)));
  return s;
}

export interface HttpMcpServer {
  readonly url: string;
  readonly server: HttpServer;
  readonly port: number;
  readonly seen: SeenCall[];
  close(): Promise<void>;
}

/** Streamable HTTP at `http://<host>:<port>/mcp`, or `https://` with `tls` (stateless, JSON responses). */
export async function startHttpMcpServer(
  host = '127.0.0.1',
  port = 0,
  tls?: { readonly cert: string; readonly key: string },
): Promise<HttpMcpServer> {
  const seen: SeenCall[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const mcp = buildServer(seen);
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
      res.on('close', () => void transport.close().then(() => mcp.close()));
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString()) as unknown) : undefined;
      void mcp.connect(transport).then(() => transport.handleRequest(req, res, body));
    });
  };
  const http: HttpServer = tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createServer(handler);
  await new Promise<void>((r) => http.listen(port, host, () => r()));
  const p = (http.address() as { port: number }).port;
  return {
    url: `${tls ? 'https' : 'http'}://${host}:${p}/mcp`,
    server: http,
    port: p,
    seen,
    close: () =>
      new Promise<void>((r) => {
        http.close(() => r());
        http.closeAllConnections();
      }),
  };
}

/**
 * Writes the stdio server script into `dir` (world-readable) and returns its argv
 * (`/usr/bin/node <script>`, or this node).
 */
export function writeStdioMcpServer(dir: string): string[] {
  const sdk = (p: string): string => JSON.stringify(join(REPO_ROOT, 'node_modules', '@modelcontextprotocol', 'sdk', 'dist', 'esm', p));
  const zod = JSON.stringify(join(REPO_ROOT, 'node_modules', 'zod', 'index.js'));
  const script = `import { readFileSync } from 'node:fs';
import { McpServer } from ${sdk('server/mcp.js')};
import { StdioServerTransport } from ${sdk('server/stdio.js')};
import * as z from ${zod};
const s = new McpServer({ name: 'aegis-test-stdio', version: '1.0.0' });
const text = (t) => ({ content: [{ type: 'text', text: t }] });
s.registerTool('echo', { inputSchema: { text: z.string() } }, ({ text: t }) => text(t));
s.registerTool('send_email', { inputSchema: { to: z.string(), body: z.string() } }, () => text('sent'));
// The environment as the kernel gave it to the process (names only).
const envNames = () => readFileSync('/proc/self/environ', 'utf8').split('\\0').filter(Boolean).map((kv) => kv.split('=')[0]).sort();
s.registerTool('whoami', {}, () => text(JSON.stringify({ uid: process.getuid(), gid: process.getgid(), env: envNames() })));
s.registerTool('slow', { inputSchema: { ms: z.number() } }, async ({ ms }) => { await new Promise((r) => setTimeout(r, ms)); return text('late'); });
s.registerTool('big', { inputSchema: { bytes: z.number() } }, ({ bytes }) => text('x'.repeat(bytes)));
s.registerTool('garbage', {}, () => { process.stdout.write('this is not json-rpc\\n'); return text('after garbage'); });
await s.connect(new StdioServerTransport());
`;
  const file = join(dir, 'stdio-mcp-server.mjs');
  writeFileSync(file, script);
  chmodSync(file, 0o644);
  chmodSync(dir, 0o755);
  return [process.execPath, file];
}
