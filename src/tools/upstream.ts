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
 * resolved by the host's resolver and refused when any address is in a special-purpose range
 * (loopback, private, link-local, ...: `tools.address_refused`), the DNS-rebinding guard of the
 * gateway; an IP literal written in the manifest is the operator's explicit choice and is used
 * as written. LIMITATION: the check resolves the name once before connecting, and fetch resolves
 * it again (a rebinding between the two is not caught). docs/tools.md.
 */
import { lookup } from 'node:dns/promises';
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

export interface UpstreamOptions {
  readonly maxMessageBytes: number;
  readonly credential?: ToolCredential;
}

/** A fetch that refuses redirects and bodies larger than `max` bytes (tools.message_too_large). */
function boundedFetch(max: number): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, { ...init, redirect: 'error' });
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

async function checkAddress(host: string): Promise<void> {
  const c = classifyHost(host);
  if (c.kind !== 'name') return; // an IP literal written in the manifest is used as written
  let addresses: { address: string }[];
  try {
    addresses = await lookup(host, { all: true });
  } catch (err) {
    throw new ToolsError('tools.server_unavailable', `cannot resolve ${host}: ${(err as Error).message}`);
  }
  for (const a of addresses) {
    const ip = classifyHost(a.address);
    const block = ip.kind === 'ip' ? specialBlockOf(ip.ip) : null;
    if (ip.kind !== 'ip' || block !== null)
      throw new ToolsError('tools.address_refused', `${host} resolves to ${a.address} (${block?.name ?? 'not an address'}): refused`);
  }
}

/** Connects a new MCP client to `server`. The caller keeps it and closes it. */
export async function connectUpstream(server: ToolServerPolicy, o: UpstreamOptions): Promise<Client> {
  const client = new Client({ name: 'aegis-tools-broker', version: '1.0.0' }, { capabilities: {} });
  const t = server.transport;
  if (t.kind !== 'http') throw new ToolsError('tools.start_failed', `tool server ${server.name} is not a remote server`);
  await checkAddress(t.host);
  const headers: Record<string, string> = {};
  if (o.credential) headers[o.credential.header] = o.credential.value;
  const transport = new StreamableHTTPClientTransport(new URL(t.url), {
    fetch: boundedFetch(o.maxMessageBytes),
    requestInit: { headers, redirect: 'error' },
  });
  await client.connect(transport, { timeout: server.timeoutMs });
  return client;
}
