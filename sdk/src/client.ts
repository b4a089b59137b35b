/**
 * The client: `new Aegis({ url, apiKey })`, then handles for agents and executions, in the shape
 * sandbox SDKs use (a handle per running thing, with wait / stream / cancel).
 *
 *   const aegis = new Aegis({ url: 'http://127.0.0.1:8080', apiKey });
 *   const agent = await aegis.agents.deploy({ manifest, codeDir });
 *   const run = await agent.execute({ args: ['--fast'] });
 *   for await (const ev of run.stream()) if (ev.type === 'stdout') process.stdout.write(ev.data);
 *   const info = await run.wait();
 *   await run.outputs.download('./out');
 */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { AegisClientError } from './errors.js';
import { readBody, Transport, type TransportOptions } from './http.js';
import { parseSse } from './sse.js';
import { packCodeDir, type PackOptions, unpackOutputs, type UnpackResult } from './tar.js';
import {
  type AgentInfo,
  type CreatedExecution,
  type CreatedKey,
  type DeployedAgent,
  type ExecutionEvent,
  type ExecutionFilter,
  type ExecutionInfo,
  type ExecutionInput,
  type ExecutionStatus,
  isFinalStatus,
  type KeyInfo,
  type PoolInfo,
  type Role,
} from './types.js';

export type AegisOptions = TransportOptions;

const enc = encodeURIComponent;

export interface DeployOptions {
  /** The manifest's YAML text (or give `manifestPath`). */
  readonly manifest?: string;
  /** A path to agent.yaml, read as the manifest when `manifest` is not given. */
  readonly manifestPath?: string;
  /** The agent's code folder, packed as a `.tar.gz`. */
  readonly codeDir?: string;
  /** An already-packed `.tar.gz` of the code (instead of `codeDir`). */
  readonly codeArchive?: Buffer;
  readonly pack?: PackOptions;
}

export interface WaitOptions {
  /** Give up after this long (ms): AegisClientError `timeout`. Default: no limit. */
  readonly timeoutMs?: number;
  /** Longest pause between two status checks (ms, default 500). */
  readonly maxPollMs?: number;
}

/** A multipart/form-data body (RFC 7578) with text and file parts. */
function multipart(parts: readonly { name: string; filename?: string; type: string; data: Buffer }[]): { body: Buffer; type: string } {
  const boundary = `aegis-${randomBytes(12).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disp = `form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    chunks.push(
      Buffer.from(`--${boundary}\r\ncontent-disposition: ${disp}\r\ncontent-type: ${p.type}\r\n\r\n`),
      p.data,
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

function jsonBody(v: unknown): { body: Buffer; headers: { 'content-type': string } } {
  return { body: Buffer.from(JSON.stringify(v)), headers: { 'content-type': 'application/json' } };
}

export interface StreamOptions {
  /** Reconnections (from the last event seen) when the stream is cut before its exit event. Default 5. */
  readonly maxReconnects?: number;
}

/** True for the errors of a connection that was cut (reset, aborted), not for answers. */
function isConnectionError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (
    code === 'ECONNRESET' ||
    code === 'EPIPE' ||
    code === 'ECONNABORTED' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE' ||
    (err as Error)?.message === 'aborted'
  );
}

/** One SSE message as an ExecutionEvent; undefined for an event type this SDK does not know. */
function toEvent(id: string, event: string, text: string): ExecutionEvent | undefined {
  if (event !== 'stdout' && event !== 'stderr' && event !== 'audit' && event !== 'exit') return undefined;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new AegisClientError('bad_response', `the event stream of ${id} has an event that is not JSON`, { cause: err });
  }
  const o = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
  if (event === 'stdout' || event === 'stderr') return { type: event, data: typeof o['data'] === 'string' ? o['data'] : '' };
  if (event === 'audit') return { type: 'audit', event: o };
  return { ...o, type: 'exit', status: o['status'] as ExecutionStatus, exitCode: typeof o['exitCode'] === 'number' ? o['exitCode'] : null };
}

/** An execution: its id, and how to follow, wait for, cancel it and fetch its outputs. */
export class Execution {
  readonly outputs: {
    /** Unpacks the outputs folder into `dir` (created; must be empty). */
    download(dir: string): Promise<UnpackResult>;
  };
  constructor(
    private readonly t: Transport,
    readonly id: string,
    /** The status when the handle was made. */
    readonly status: ExecutionStatus,
  ) {
    this.outputs = {
      download: async (dir: string) =>
        unpackOutputs(await this.t.send({ method: 'GET', path: `/v1/executions/${enc(id)}/outputs`, stream: true }), dir),
    };
  }

  /** The execution's record now. */
  info(): Promise<ExecutionInfo> {
    return this.t.json<ExecutionInfo>({ method: 'GET', path: `/v1/executions/${enc(this.id)}` });
  }

  /**
   * Its output and audit events as they come (Server-Sent Events), ending after the `exit` event.
   * Unknown event types are skipped; the stream's data is the server's JSON. A stream cut before
   * its exit is resumed after the last event seen (`?after=<id>`), so no event is lost or repeated.
   */
  async *stream(opts: StreamOptions = {}): AsyncGenerator<ExecutionEvent> {
    const maxReconnects = opts.maxReconnects ?? 5;
    let after: string | undefined;
    let failures = 0;
    for (;;) {
      let cut: unknown;
      try {
        const res = await this.t.send({
          method: 'GET',
          path: `/v1/executions/${enc(this.id)}/stream${after !== undefined ? `?after=${after}` : ''}`,
          headers: { accept: 'text/event-stream' },
          stream: true,
        });
        try {
          for await (const m of parseSse(res as AsyncIterable<Buffer>)) {
            failures = 0;
            // The server numbers its events; a reconnection asks for what follows the last one seen.
            if (m.id !== undefined && /^\d{1,15}$/.test(m.id)) after = m.id;
            const ev = toEvent(this.id, m.event, m.data);
            if (ev === undefined) continue;
            yield ev;
            if (ev.type === 'exit') return;
          }
        } finally {
          res.destroy();
        }
      } catch (err) {
        // A cut connection or a server that is restarting: reconnect; anything else is final.
        if (!(err instanceof AegisClientError && err.code === 'unreachable') && !isConnectionError(err)) throw err;
        cut = err;
      }
      if (++failures > maxReconnects) {
        throw new AegisClientError(
          'bad_response',
          `the event stream of ${this.id} ended ${maxReconnects + 1} times before its exit event`,
          {
            cause: cut,
          },
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** failures, 2000)));
    }
  }

  /** Waits until the execution ended (polling its record) and returns it. */
  async wait(opts: WaitOptions = {}): Promise<ExecutionInfo> {
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let pause = 25;
    for (;;) {
      const info = await this.info();
      if (isFinalStatus(info.status)) return info;
      if (Date.now() + pause > deadline)
        throw new AegisClientError('timeout', `execution ${this.id} has not ended after ${opts.timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, opts.maxPollMs ?? 500);
    }
  }

  /** Asks the server to stop it (TERM, grace, KILL; recorded as `killed`). */
  async cancel(): Promise<void> {
    await this.t.json<unknown>({ method: 'DELETE', path: `/v1/executions/${enc(this.id)}` });
  }
}

/** A deployed agent (its latest version when the handle was made). */
export class Agent {
  constructor(
    private readonly t: Transport,
    readonly info: DeployedAgent,
  ) {}
  get name(): string {
    return this.info.name;
  }
  get version(): number {
    return this.info.version;
  }

  /** Starts an execution of this agent (the server's latest version of it). */
  async execute(input: ExecutionInput = {}): Promise<Execution> {
    const { body, headers } = jsonBody(input);
    const c = await this.t.json<CreatedExecution>({ method: 'POST', path: `/v1/agents/${enc(this.name)}/executions`, body, headers });
    return new Execution(this.t, c.id, c.status);
  }

  /** Keeps `warm` prepared sandboxes of this agent (0: none). */
  async setPool(warm: number): Promise<PoolInfo> {
    const { body, headers } = jsonBody({ warm });
    return this.t.json<PoolInfo>({ method: 'PUT', path: `/v1/agents/${enc(this.name)}/pool`, body, headers });
  }

  async delete(): Promise<void> {
    await this.t.json<unknown>({ method: 'DELETE', path: `/v1/agents/${enc(this.name)}` });
  }
}

export class Aegis {
  private readonly t: Transport;

  readonly agents: {
    /** Deploys a manifest and its code (a new version when the name exists). AegisApiError `manifest_invalid` carries `issues`. */
    deploy(opts: DeployOptions): Promise<Agent>;
    list(): Promise<AgentInfo[]>;
    get(name: string): Promise<Agent>;
    delete(name: string): Promise<void>;
    setPool(name: string, warm: number): Promise<PoolInfo>;
  };

  readonly executions: {
    get(id: string): Promise<Execution>;
    info(id: string): Promise<ExecutionInfo>;
    list(filter?: ExecutionFilter): Promise<ExecutionInfo[]>;
    cancel(id: string): Promise<void>;
  };

  readonly keys: {
    create(opts: { role: Role; expires?: string }): Promise<CreatedKey>;
    list(): Promise<KeyInfo[]>;
    revoke(id: string): Promise<void>;
  };

  constructor(opts: AegisOptions) {
    const t = (this.t = new Transport(opts));
    this.agents = {
      deploy: async (o) => {
        const text = o.manifest ?? (o.manifestPath !== undefined ? readFileSync(o.manifestPath, 'utf8') : undefined);
        if (text === undefined) throw new AegisClientError('invalid_options', 'deploy needs `manifest` (its text) or `manifestPath`');
        const archive = o.codeArchive ?? (o.codeDir !== undefined ? await packCodeDir(o.codeDir, o.pack) : undefined);
        if (archive === undefined) throw new AegisClientError('invalid_options', 'deploy needs `codeDir` or `codeArchive`');
        const { body, type } = multipart([
          { name: 'manifest', type: 'text/plain; charset=utf-8', data: Buffer.from(text, 'utf8') },
          { name: 'code', filename: 'code.tar.gz', type: 'application/gzip', data: archive },
        ]);
        const d = await t.json<DeployedAgent>({ method: 'POST', path: '/v1/agents', body, headers: { 'content-type': type } });
        return new Agent(t, d);
      },
      list: async () => unwrapList<AgentInfo>(await t.json<unknown>({ method: 'GET', path: '/v1/agents' }), 'agents'),
      get: async (name) => new Agent(t, await t.json<AgentInfo>({ method: 'GET', path: `/v1/agents/${enc(name)}` })),
      delete: async (name) => void (await t.json<unknown>({ method: 'DELETE', path: `/v1/agents/${enc(name)}` })),
      setPool: async (name, warm) => {
        const { body, headers } = jsonBody({ warm });
        return t.json<PoolInfo>({ method: 'PUT', path: `/v1/agents/${enc(name)}/pool`, body, headers });
      },
    };
    this.executions = {
      get: async (id) => {
        const info = await t.json<ExecutionInfo>({ method: 'GET', path: `/v1/executions/${enc(id)}` });
        return new Execution(t, info.id, info.status);
      },
      info: (id) => t.json<ExecutionInfo>({ method: 'GET', path: `/v1/executions/${enc(id)}` }),
      list: async (filter = {}) => {
        const q = new URLSearchParams();
        for (const [k, v] of Object.entries(filter)) if (v !== undefined) q.set(k, v instanceof Date ? v.toISOString() : String(v));
        const qs = q.toString();
        return unwrapList<ExecutionInfo>(
          await t.json<unknown>({ method: 'GET', path: `/v1/executions${qs ? `?${qs}` : ''}` }),
          'executions',
        );
      },
      cancel: async (id) => void (await t.json<unknown>({ method: 'DELETE', path: `/v1/executions/${enc(id)}` })),
    };
    this.keys = {
      create: async (o) => {
        const { body, headers } = jsonBody(o);
        return t.json<CreatedKey>({ method: 'POST', path: '/v1/keys', body, headers });
      },
      list: async () => unwrapList<KeyInfo>(await t.json<unknown>({ method: 'GET', path: '/v1/keys' }), 'keys'),
      revoke: async (id) => void (await t.json<unknown>({ method: 'DELETE', path: `/v1/keys/${enc(id)}` })),
    };
  }

  /** Where the client sends requests (for messages). */
  get where(): string {
    return this.t.where;
  }

  /** `GET /healthz`: true when the server answers 2xx. */
  async health(): Promise<boolean> {
    const res = await this.t.send({ method: 'GET', path: '/healthz' });
    await readBody(res, 64 * 1024);
    return true;
  }
}

/** A list answer: a JSON array, or an object holding it under `key` (or `items`). */
function unwrapList<T>(v: unknown, key: string): T[] {
  if (Array.isArray(v)) return v as T[];
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    const inner = o[key] ?? o['items'];
    if (Array.isArray(inner)) return inner as T[];
  }
  throw new AegisClientError('bad_response', `the server's list of ${key} is not a list`);
}
