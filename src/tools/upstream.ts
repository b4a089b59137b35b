/**
 * AEGIS as the MCP client of one declared remote tool server: connects (lazily, at the first
 * request, again after a lost connection) over Streamable HTTP, and bounds what it accepts.
 * (A local server runs in a sandbox of its own, started with the run: sandboxed-server.ts.)
 *
 * ARCHITECTURE NOTE: how the broker decides where it may connect. The manifest's `tools[].mcp.url`
 * is itself the allowance, for the broker only: the broker connects to that URL's host and port
 * and nowhere else (redirects are not followed), whatever `permissions.network.allow` says, and
 * the agent gets no route to that server from it (the agent's egress is its allowlist alone;
 * a server the agent should not reach directly is simply not in the allowlist). A host NAME is
 * resolved with the gateway's own upstream resolver (`AEGIS_UPSTREAM_DNS` / the gateway config,
 * by default the host's first nameserver: the resolver the agent's allowed names are resolved
 * with too), or the host's resolver when none is given (tests, bench), and refused when any
 * address is in a special-purpose range (loopback, private, link-local, ...:
 * `tools.address_refused`), the DNS-rebinding guard of the gateway. The connection then goes to
 * the address that was checked (pinned: the HTTP client does not resolve the name again), with
 * the name as TLS server name and Host. An IP literal written in the manifest is the operator's
 * explicit choice and is used as written. docs/tools.md.
 */
import { lookup, Resolver } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { specialBlockOf, classifyHost } from '../policy/host.js';
import type { ToolServerPolicy } from '../policy/types.js';
import { ToolsError } from './errors.js';

/** The credential sent to a remote server: one header, from the secrets store. Never logged. */
export interface ToolCredential {
  readonly header: string;
  readonly value: string;
}

/** A DNS server (IPv4 address and port). */
export interface ToolResolver {
  readonly host: string;
  readonly port: number;
}

export interface UpstreamOptions {
  readonly maxMessageBytes: number;
  readonly credential?: ToolCredential;
  /** Resolver for remote servers' host names (the gateway's upstream); default: the host's resolver. */
  readonly resolver?: ToolResolver;
}

interface Pinned {
  readonly address: string;
  readonly family: 4 | 6;
}

/**
 * A fetch over node:http(s) that connects to `pin` whatever the URL's name resolves to (the name
 * stays the TLS server name, verified against the certificate, and the Host header). Redirects
 * are not followed (a 3xx is an answer the SDK refuses). Request bodies: strings only (the SDK's).
 */
function pinnedFetch(pin: Pinned): typeof fetch {
  const pinned: LookupFunction = (_host, opts, cb) => {
    if (opts.all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [pin]);
    else cb(null, pin.address, pin.family);
  };
  return (input, init) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : input.toString());
      const body = init?.body;
      if (body !== undefined && body !== null && typeof body !== 'string')
        return reject(new ToolsError('tools.server_unavailable', 'unsupported request body'));
      const headers: Record<string, string> = {};
      new Headers(init?.headers).forEach((v, k) => (headers[k] = v));
      const onResponse = (res: IncomingMessage): void => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) for (const x of Array.isArray(v) ? v : [v]) h.append(k, x);
        const status = res.statusCode ?? 502;
        const noBody = status === 204 || status === 304 || init?.method === 'HEAD';
        if (noBody) res.resume();
        try {
          const stream = noBody ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
          resolve(new Response(stream, { status, statusText: res.statusMessage ?? '', headers: h }));
        } catch (err) {
          res.destroy();
          reject(err as Error);
        }
      };
      const opts = { method: init?.method ?? 'GET', headers, lookup: pinned, ...(init?.signal ? { signal: init.signal } : {}) };
      const req = url.protocol === 'https:' ? httpsRequest(url, opts, onResponse) : httpRequest(url, opts, onResponse);
      req.on('error', reject);
      req.end(body ?? undefined);
    });
}

/** A fetch that refuses redirects and bodies larger than `max` bytes (tools.message_too_large). */
function boundedFetch(max: number, base: typeof fetch): typeof fetch {
  return async (input, init) => {
    const res = await base(input, { ...init, redirect: 'error' });
    const declared = Number(res.headers.get('content-length') ?? '0');
    if (declared > max) {
      await res.body?.cancel();
      throw new ToolsError('tools.message_too_large', `the tool server sent ${declared} bytes (more than ${max})`);
    }
    if (res.body === null) return res;
    let seen = 0;
    const limited = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          seen += chunk.byteLength;
          if (seen > max) ctl.error(new ToolsError('tools.message_too_large', `the tool server sent more than ${max} bytes`));
          else ctl.enqueue(chunk);
        },
      }),
    );
    return new Response(limited, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/**
 * The address to connect to for a host name (null for an IP literal: used as written), checked
 * by the DNS-rebinding guard: every answer must lie outside the special-purpose ranges.
 */
async function resolveServer(host: string, resolver: ToolResolver | undefined): Promise<Pinned | null> {
  const c = classifyHost(host);
  if (c.kind !== 'name') return null;
  let addresses: string[];
  try {
    if (resolver !== undefined) {
      const r = new Resolver({ timeout: 3000, tries: 2 });
      r.setServers([`${resolver.host}:${resolver.port}`]);
      const v4 = await r.resolve4(host).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENODATA' || err.code === 'ENOTFOUND') return [] as string[];
        throw err;
      });
      addresses = v4.length > 0 ? v4 : await r.resolve6(host);
    } else {
      addresses = (await lookup(host, { all: true })).map((a) => a.address);
    }
  } catch (err) {
    throw new ToolsError('tools.server_unavailable', `cannot resolve ${host}: ${(err as Error).message}`);
  }
  if (addresses.length === 0) throw new ToolsError('tools.server_unavailable', `cannot resolve ${host}: no address`);
  for (const a of addresses) {
    const ip = classifyHost(a);
    const block = ip.kind === 'ip' ? specialBlockOf(ip.ip) : null;
    if (ip.kind !== 'ip' || block !== null)
      throw new ToolsError('tools.address_refused', `${host} resolves to ${a} (${block?.name ?? 'not an address'}): refused`);
  }
  const first = addresses[0]!;
  return { address: first, family: first.includes(':') ? 6 : 4 };
}

/** Connects a new MCP client to `server`. The caller keeps it and closes it. */
export async function connectUpstream(server: ToolServerPolicy, o: UpstreamOptions): Promise<Client> {
  const client = new Client({ name: 'aegis-tools-broker', version: '1.0.0' }, { capabilities: {} });
  const t = server.transport;
  if (t.kind !== 'http') throw new ToolsError('tools.start_failed', `tool server ${server.name} is not a remote server`);
  const pin = await resolveServer(t.host, o.resolver);
  const headers: Record<string, string> = {};
  if (o.credential) headers[o.credential.header] = o.credential.value;
  const transport = new StreamableHTTPClientTransport(new URL(t.url), {
    fetch: boundedFetch(o.maxMessageBytes, pin === null ? fetch : pinnedFetch(pin)),
    requestInit: { headers, redirect: 'error' },
  });
  await client.connect(transport, { timeout: server.timeoutMs });
  return client;
}
