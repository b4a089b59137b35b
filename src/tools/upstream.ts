/**
 * AEGIS as the MCP client of one declared tool server: connects (lazily, at the first request,
 * again after a lost connection) over Streamable HTTP for a remote server or over stdio for a
 * local one, and bounds what it accepts.
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
import { accessSync, constants, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { findExecutable } from '../host/exec.js';
import { specialBlockOf, classifyHost } from '../policy/host.js';
import type { ToolServerPolicy } from '../policy/types.js';
import { ToolsError } from './errors.js';
import { UnprivilegedStdioTransport } from './stdio-transport.js';

/** The credential sent to a remote server: one header, from the secrets store. Never logged. */
export interface ToolCredential {
  readonly header: string;
  readonly value: string;
}

export interface UpstreamOptions {
  readonly maxMessageBytes: number;
  /** Local servers run as this user and group (default 65534, nobody). */
  readonly uid?: number;
  readonly gid?: number;
  /** Working directory of local servers (default `/`). */
  readonly cwd?: string;
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

/** Resolves a local server's program: an absolute path (must be an executable file), a bare name in the system directories only. */
export function resolveCommand(command: readonly string[]): string[] {
  const prog = command[0]!;
  if (isAbsolute(prog)) {
    try {
      accessSync(prog, constants.X_OK);
      if (!statSync(prog).isFile()) throw new Error('not a file');
    } catch {
      throw new ToolsError('tools.command_not_found', `"${prog}" is not an executable file`);
    }
    return [...command];
  }
  if (prog.includes('/')) throw new ToolsError('tools.command_not_found', `"${prog}": give an absolute path or a bare program name`);
  const found = findExecutable(prog);
  if (found === null) throw new ToolsError('tools.command_not_found', `"${prog}" is not in the system directories`);
  return [found, ...command.slice(1)];
}

/** Connects a new MCP client to `server`. The caller keeps it and closes it. */
export async function connectUpstream(server: ToolServerPolicy, o: UpstreamOptions): Promise<Client> {
  const client = new Client({ name: 'aegis-tools-broker', version: '1.0.0' }, { capabilities: {} });
  const t = server.transport;
  if (t.kind === 'http') {
    await checkAddress(t.host);
    const headers: Record<string, string> = {};
    if (o.credential) headers[o.credential.header] = o.credential.value;
    const transport = new StreamableHTTPClientTransport(new URL(t.url), {
      fetch: boundedFetch(o.maxMessageBytes),
      requestInit: { headers, redirect: 'error' },
    });
    await client.connect(transport, { timeout: server.timeoutMs });
  } else {
    const transport = new UnprivilegedStdioTransport({
      argv: resolveCommand(t.command),
      uid: o.uid ?? 65534,
      gid: o.gid ?? 65534,
      maxMessageBytes: o.maxMessageBytes,
      ...(o.cwd !== undefined ? { cwd: o.cwd } : {}),
    });
    await client.connect(transport, { timeout: server.timeoutMs });
  }
  return client;
}
