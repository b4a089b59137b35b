/**
 * The tools broker: serves each declared MCP server to the agent at `<url>/<name>/mcp` (MCP
 * Streamable HTTP, stateless, JSON responses) and forwards what the policy allows to the real
 * server, as its MCP client (upstream.ts). Both sides are the official MCP TypeScript SDK.
 *
 *   const broker = await startToolsBroker({ tools: policy.tools, network: policy.network, audit, actor, host: gw });
 *   // the agent gets AEGIS_TOOLS_URL=<broker.url as the sandbox sees it>
 *   await broker.close();
 *
 * ARCHITECTURE NOTE: what is enforced here.
 *  - `tools/list` answers only the tools `decideToolOn` allows (the model is never offered the
 *    rest); `tool.list` audits what was hidden.
 *  - `tools/call` is decided BEFORE anything is forwarded: a refused tool gets JSON-RPC error
 *    -32602 (what MCP specifies for an unknown tool) with `data.reason`, and a `tool.denied`
 *    event; the server never sees the call.
 *  - Every forwarded call is a `tool.call` event (server, tool, arguments bounded with their size,
 *    the hosts they name and those outside the agent's allowlist, duration, outcome).
 *  - Only `initialize`, `ping`, `tools/list` and `tools/call` are served; anything else (resources,
 *    prompts, sampling) is "method not found": the broker exposes tools, nothing more.
 *  - Hostile input from either side ends that request with an error, audited, never the broker:
 *    bodies over `maxMessageBytes` (413), bytes that are not JSON (-32700), JSON that is not
 *    JSON-RPC (-32600), a server that does not answer within `timeout` (-32001),
 *    a server that is down or breaks the protocol (-32603).
 *  - The listener binds the gateway's address: only the sandbox's namespace can reach it (the
 *    gateway's host table admits the sandbox to it and to nothing else, src/gateway/netns/plan.ts).
 */
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CallToolRequestSchema,
  ErrorCode,
  JSONRPCMessageSchema,
  ListToolsRequestSchema,
  McpError,
  type CallToolResult,
} from '@modelcontextprotocol/sdk/types.js';
import type { AuditActor, AuditEventInput, AuditSink } from '../audit/event.js';
import { isAegisError } from '../errors.js';
import { compileEgress } from '../policy/net.js';
import { decideToolOn } from '../policy/tools.js';
import type { EgressMatcher, NetworkPolicy, ToolServerPolicy, ToolsPolicy } from '../policy/types.js';
import { ToolsError } from './errors.js';
import { toolCallEvent, toolDeniedEvent, toolListEvent, type ToolOutcome } from './events.js';
import { connectUpstream, type ToolCredential, type ToolResolver } from './upstream.js';

/** Largest message accepted from the agent or from a server (bytes). */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Concurrent connections from the agent (beyond: refused by the kernel-accepted close). */
export const MAX_AGENT_CONNECTIONS = 64;

export interface ToolsBrokerOptions {
  readonly tools: ToolsPolicy;
  /** The agent's own network policy: `hostsOutsideAllowlist` in `tool.call` events is computed against it. */
  readonly network: NetworkPolicy;
  readonly audit: AuditSink;
  readonly actor: AuditActor;
  /** Address to listen on (the gateway's address on the sandbox's veth; 127.0.0.1 in tests). */
  readonly host: string;
  /** Port to listen on; default 0 (any). */
  readonly port?: number;
  readonly maxMessageBytes?: number;
  /** Credentials of remote servers, by server name (from the secrets store; never logged). */
  readonly credentials?: ReadonlyMap<string, ToolCredential>;
  /** Resolver for remote servers' host names: the gateway's upstream (AEGIS_UPSTREAM_DNS); default: the host's. */
  readonly resolver?: ToolResolver;
  /**
   * The broker's clients of the local servers, by server name, connected before the agent starts
   * (sandboxed-server.ts). Owned by the caller: the broker never closes them.
   */
  readonly localServers?: ReadonlyMap<string, Client>;
}

export interface ToolsBroker {
  /** `http://<host>:<port>` as bound. */
  readonly url: string;
  readonly port: number;
  readonly server: HttpServer;
  /** Stops listening, closes every remote server's client (local servers are their owner's). Idempotent. */
  close(): Promise<void>;
}

/** One upstream client per declared server, connected at first use and again after a failure. */
class Upstreams {
  private readonly clients = new Map<string, Promise<Client>>();
  private closed = false;
  constructor(
    private readonly o: ToolsBrokerOptions,
    private readonly maxBytes: number,
  ) {}

  get(server: ToolServerPolicy): Promise<Client> {
    if (this.closed) return Promise.reject(new ToolsError('tools.server_unavailable', 'the broker is closing'));
    if (server.transport.kind === 'sandbox') {
      // Started with the run and never again: a local server that died stays unavailable.
      const local = this.o.localServers?.get(server.name);
      return local !== undefined
        ? Promise.resolve(local)
        : Promise.reject(new ToolsError('tools.server_unavailable', `the local server ${server.name} is not running`));
    }
    let p = this.clients.get(server.name);
    if (p === undefined) {
      p = connectUpstream(server, {
        maxMessageBytes: this.maxBytes,
        ...(this.o.resolver !== undefined ? { resolver: this.o.resolver } : {}),
        ...(this.o.credentials?.get(server.name) ? { credential: this.o.credentials.get(server.name)! } : {}),
      }).then((client) => {
        // A lost connection (a local server that exited, a broken stream): reconnect next time.
        const prev = client.onclose;
        client.onclose = () => {
          prev?.();
          if (this.clients.get(server.name) === p) this.clients.delete(server.name);
        };
        return client;
      });
      const mine = p;
      p.catch(() => {
        if (this.clients.get(server.name) === mine) this.clients.delete(server.name);
      });
      this.clients.set(server.name, p);
    }
    return p;
  }

  /** Drops a client whose connection failed (so the next call connects again). */
  drop(server: ToolServerPolicy, client: Client): void {
    if (server.transport.kind === 'sandbox') return; // its owner stops it with the run
    void this.clients.get(server.name)?.then((c) => {
      if (c === client) {
        this.clients.delete(server.name);
        void client.close().catch(() => undefined);
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(all.map((p) => p.then((c) => c.close()).catch(() => undefined)));
  }
}

/**
 * A JSON-RPC error for the agent. The SDK sends a handler's `code`, `message` and `data` as they
 * are; McpError would prefix "MCP error <code>:" to the message, so the broker uses its own class.
 */
class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
  }
}

/** The outcome and the JSON-RPC error the agent gets for a failed upstream request. */
function classify(err: unknown): { outcome: ToolOutcome; error: RpcError; reason?: string } {
  if (err instanceof McpError) {
    if (err.code === (ErrorCode.RequestTimeout as number))
      return {
        outcome: 'timeout',
        error: new RpcError(ErrorCode.RequestTimeout, 'the tool server did not answer in time'),
        reason: 'tool.timeout',
      };
    if (err.code === (ErrorCode.ConnectionClosed as number))
      return {
        outcome: 'unavailable',
        error: new RpcError(ErrorCode.InternalError, 'the tool server closed the connection'),
        reason: 'tools.server_unavailable',
      };
    return {
      outcome: 'protocol_error',
      error: new RpcError(err.code, err.message.replace(/^MCP error -?\d+: /, '')),
      reason: 'tool.protocol_error',
    };
  }
  if (isAegisError(err)) {
    const outcome: ToolOutcome = err.code === 'tools.message_too_large' ? 'protocol_error' : 'unavailable';
    return { outcome, error: new RpcError(ErrorCode.InternalError, `${err.code}: ${err.message}`), reason: err.code };
  }
  const inner = (err as { cause?: { code?: string } } | null)?.cause?.code;
  if (inner === 'tools.message_too_large' || /maximum size|too large/i.test(String((err as Error)?.message)))
    return {
      outcome: 'protocol_error',
      error: new RpcError(ErrorCode.InternalError, 'tools.message_too_large: the tool server sent too much'),
      reason: 'tools.message_too_large',
    };
  return {
    outcome: 'unavailable',
    error: new RpcError(ErrorCode.InternalError, `tools.server_unavailable: ${String((err as Error)?.message ?? err).slice(0, 200)}`),
    reason: 'tools.server_unavailable',
  };
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer | 'too_large'> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > max) {
      req.resume();
      return resolve('too_large');
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > max) {
        over = true;
        chunks.length = 0;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(over ? 'too_large' : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function jsonRpcError(res: ServerResponse, status: number, code: number, message: string, id: unknown = null): void {
  if (res.headersSent) return void res.end();
  const body = JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
}

export async function startToolsBroker(o: ToolsBrokerOptions): Promise<ToolsBroker> {
  const maxBytes = o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  // Fail early: a local server that was not started refuses the start, rather than every call of
  // the run failing later.
  for (const s of o.tools.servers)
    if (s.transport.kind === 'sandbox' && !o.localServers?.has(s.name))
      throw new ToolsError('tools.start_failed', `the local tool server ${s.name} was not started`);
  const egress: EgressMatcher = compileEgress(o.network);
  const upstreams = new Upstreams(o, maxBytes);
  const servers = new Map(o.tools.servers.map((s) => [s.name, s]));
  const emit = (e: AuditEventInput): void => {
    try {
      const r = o.audit.append(e);
      if (r instanceof Promise) r.catch((err: unknown) => process.stderr.write(`aegis tools: audit sink failed: ${String(err)}\n`));
    } catch (err) {
      process.stderr.write(`aegis tools: audit sink failed: ${String(err)}\n`);
    }
  };

  /** The MCP server the agent talks to for one request (stateless: one per request, as the SDK shows). */
  const agentFacing = (spec: ToolServerPolicy): Server => {
    const mcp = new Server({ name: `aegis-tools/${spec.name}`, version: '1.0.0' }, { capabilities: { tools: {} } });
    mcp.setRequestHandler(ListToolsRequestSchema, async (req) => {
      let client: Client;
      try {
        client = await upstreams.get(spec);
        const r = await client.listTools(req.params, { timeout: spec.timeoutMs });
        const tools = r.tools.filter((t) => decideToolOn(spec, t.name).allow);
        const hidden = r.tools.filter((t) => !decideToolOn(spec, t.name).allow).map((t) => t.name);
        emit(toolListEvent(o.actor, spec.name, tools.length, hidden));
        return { ...r, tools };
      } catch (err) {
        const c = classify(err);
        emit({
          actor: o.actor,
          action: 'tool.list',
          decision: 'error',
          reason: c.reason ?? `tool.${c.outcome}`,
          payload: { server: spec.name, outcome: c.outcome, error: { code: c.error.code, message: c.error.message.slice(0, 512) } },
        });
        throw c.error;
      }
    });
    mcp.setRequestHandler(CallToolRequestSchema, async (req): Promise<CallToolResult> => {
      const { name, arguments: args } = req.params;
      const d = decideToolOn(spec, name);
      if (!d.allow) {
        emit(toolDeniedEvent(o.actor, { server: spec.name, tool: name, args, reason: d.reason, detail: d.detail }));
        throw new RpcError(ErrorCode.InvalidParams, `AEGIS refused the tool "${String(name).slice(0, 128)}": ${d.detail}`, {
          reason: d.reason,
        });
      }
      const started = performance.now();
      let client: Client | undefined;
      try {
        client = await upstreams.get(spec);
        const r = (await client.callTool(req.params, undefined, { timeout: spec.timeoutMs })) as CallToolResult;
        const resultBytes = Buffer.byteLength(JSON.stringify(r));
        emit(
          toolCallEvent(
            o.actor,
            {
              server: spec.name,
              tool: name,
              args,
              durationMs: performance.now() - started,
              outcome: r.isError === true ? 'is_error' : 'result',
              resultBytes,
              rule: d.reason,
            },
            egress,
          ),
        );
        return r;
      } catch (err) {
        const c = classify(err);
        if (client !== undefined && (c.outcome === 'unavailable' || c.reason === 'tools.message_too_large')) upstreams.drop(spec, client);
        emit(
          toolCallEvent(
            o.actor,
            {
              server: spec.name,
              tool: name,
              args,
              durationMs: performance.now() - started,
              outcome: c.outcome,
              error: { code: c.error.code, message: c.error.message },
              ...(c.reason !== undefined ? { reason: c.reason } : {}),
            },
            egress,
          ),
        );
        throw c.error;
      }
    });
    return mcp;
  };

  /** A request the broker cannot hand to the SDK: answered and audited here. */
  const refuseRequest = (res: ServerResponse, server: string, status: number, code: number, reason: string, message: string): void => {
    emit({
      actor: o.actor,
      action: 'tool.call',
      decision: 'error',
      reason,
      payload: {
        server,
        tool: null,
        arguments: '',
        argumentsBytes: 0,
        argumentsTruncated: false,
        durationMs: 0,
        outcome: 'protocol_error',
        error: { code, message },
      },
    });
    jsonRpcError(res, status, code, message);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const m = /^\/([a-z0-9-]{1,63})\/mcp\/?(?:\?.*)?$/.exec(req.url ?? '');
    const spec = m ? servers.get(m[1]!) : undefined;
    if (!m || spec === undefined) {
      const name = m?.[1] ?? String(req.url ?? '').slice(0, 128);
      emit(
        toolDeniedEvent(o.actor, {
          server: name,
          tool: null,
          args: null,
          reason: 'tool.denied.unknown_server',
          detail: `no tool server "${name}" is declared in the manifest's tools:`,
        }),
      );
      req.resume();
      return jsonRpcError(
        res,
        404,
        ErrorCode.InvalidRequest,
        `AEGIS: no tool server at ${String(req.url).slice(0, 128)} (see $AEGIS_TOOLS_URL/<name>/mcp)`,
      );
    }
    if (req.method !== 'POST') {
      // Stateless: no server-to-agent stream (GET) and no session to end (DELETE).
      req.resume();
      res.setHeader('allow', 'POST');
      return jsonRpcError(res, 405, ErrorCode.ConnectionClosed, 'only POST is served by the AEGIS tools broker');
    }
    const body = await readBody(req, maxBytes);
    if (body === 'too_large')
      return refuseRequest(
        res,
        spec.name,
        413,
        ErrorCode.InvalidRequest,
        'tools.message_too_large',
        `message larger than ${maxBytes} bytes`,
      );
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      return refuseRequest(res, spec.name, 400, ErrorCode.ParseError, 'tool.protocol_error', 'the request is not JSON');
    }
    // JSON that is not JSON-RPC (one message or a batch): refused and audited here (the SDK would
    // refuse it too, without an event).
    const messages: unknown[] = Array.isArray(parsed) ? parsed : [parsed];
    if (messages.length === 0 || !messages.every((m) => JSONRPCMessageSchema.safeParse(m).success))
      return refuseRequest(res, spec.name, 400, ErrorCode.InvalidRequest, 'tool.protocol_error', 'the request is not a JSON-RPC message');
    const mcp = agentFacing(spec);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close().catch(() => undefined);
      void mcp.close().catch(() => undefined);
    });
    await mcp.connect(transport);
    await transport.handleRequest(req, res, parsed);
  };

  const http = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      process.stderr.write(`aegis tools: request failed: ${String(err)}\n`);
      jsonRpcError(res, 500, ErrorCode.InternalError, 'the AEGIS tools broker failed on this request');
    });
  });
  http.maxConnections = MAX_AGENT_CONNECTIONS;
  http.headersTimeout = 10_000;
  http.requestTimeout = 660_000; // longer than the longest tool timeout (10 min)
  http.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    http.once('error', (err) => reject(new ToolsError('tools.start_failed', `cannot listen on ${o.host}: ${err.message}`)));
    http.listen(o.port ?? 0, o.host, () => resolve());
  });
  const port = (http.address() as { port: number }).port;
  let closing: Promise<void> | null = null;
  return {
    url: `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`,
    port,
    server: http,
    close: () =>
      (closing ??= (async () => {
        await new Promise<void>((r) => {
          http.close(() => r());
          http.closeAllConnections();
        });
        await upstreams.close();
      })()),
  };
}
