/**
 * A local MCP tool server (`tools[].mcp.manifest`) run in an AEGIS sandbox of its own, for the
 * length of the agent's run: started before the agent (its MCP `initialize` must have been
 * answered), stopped and removed after it. The broker is its only MCP client, over the sandbox's
 * stdin and stdout (AEGIS's own pipes, src/sandbox/stdio.ts).
 *
 * ARCHITECTURE NOTE: what confines the server is what confines an agent, from its own manifest:
 *  - runSandbox (src/sandbox/run.ts), the same path as the agent's, on the same runtime (the
 *    run's isolation, default crun): its image, its code folder (inside its manifest's folder),
 *    user namespaces, read-only root, the default seccomp profile plus its manifest's
 *    `syscalls.deny`, cgroup limits from its manifest (memory, CPU, pids) and its
 *    `execution_time` (it is killed at that time even if the agent still runs);
 *  - its filesystem view is its image, its code, and the `mcp.volumes` the agent's manifest gives
 *    it, each of which its own manifest's fs.read / fs.write must allow (sandbox.volume_refused);
 *  - no network at all: a network namespace with loopback only (a manifest with
 *    `network.allow` entries is refused, tools.server_manifest_invalid: a tool that needs the
 *    network is a remote server); nothing listens for the agent, which lives in another network
 *    namespace and reaches the server only through the broker;
 *  - no secrets (a manifest whose env references secrets is refused) and no AEGIS environment.
 *  - Cleanup: its run record names this AEGIS process as owner, so when AEGIS is killed the next
 *    AEGIS start sweeps it like any run (run.lost, with the server's sandbox id).
 * Its lifecycle events are the sandbox's own (`run.spawn`, `run.start`, `run.exit`,
 * `resource.usage`, ...) renamed `tool.server.<verb>` (`resource.usage` -> `tool.server.usage`)
 * and attributed to the agent's execution, with `server`, `sandbox` (its own id) and
 * `serverAgent` (its manifest's agent name) in the payload: distinguishable from the agent's
 * lifecycle, which alerting, the baseline and the orchestrator read.
 * LIMITATION: the runtime monitor is not attached to it; a server that dies (or breaks the
 * framing) is not restarted: its later calls fail as `unavailable`.
 */
import { PassThrough } from 'node:stream';
import { dirname } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import type { Isolation, Policy, ToolServerPolicy } from '../policy/types.js';
import type { MicrovmSettings } from '../sandbox/drivers/index.js';
import { runSandbox, type RunResult, type VolumeRequest } from '../sandbox/run.js';
import { ToolsError } from './errors.js';
import { PipeTransport } from './stdio-transport.js';

/** A local server's sandbox, as loadRun prepared it (src/run/execute.ts). */
export interface ToolSandboxSpec {
  /** The tool server's name in the agent's manifest. */
  readonly name: string;
  /** Its manifest (absolute path). */
  readonly file: string;
  readonly policy: Policy;
  readonly imageRootfs: string;
  /** `mcp.volumes`, parsed, host paths absolute. */
  readonly volumes: readonly VolumeRequest[];
  /** Added to its `tool.server.spawn` event: its manifest and image digests. */
  readonly provenance: Readonly<Record<string, unknown>>;
}

export interface StartToolSandboxOptions {
  readonly spec: ToolSandboxSpec;
  /** The server as the agent's policy declares it (its timeout bounds the start's initialize). */
  readonly server: ToolServerPolicy;
  /** The agent's execution and name: the server's events are attributed to them. */
  readonly executionId: string;
  readonly agent: string;
  readonly audit: AuditSink;
  readonly stateDir?: string;
  /** The run's isolation (default: the server manifest's, else crun); a stronger one in the server's manifest wins. */
  readonly isolation?: Isolation;
  readonly maxMessageBytes: number;
  readonly microvm?: MicrovmSettings;
}

export interface SandboxedToolServer {
  /** The broker's MCP client to it, initialized. */
  readonly client: Client;
  /** The server's own sandbox id (run directory, container and cgroup name). */
  readonly sandboxId: string;
  /** Stops the server (TERM, KILL after 1 s) and waits until everything of its sandbox is removed. */
  close(): Promise<RunResult>;
}

/** The server's sandbox id: the agent's execution id, then `.tool-<name>` (a run id the sweep knows). */
export function toolSandboxId(executionId: string, name: string): string {
  return `${executionId}.tool-${name}`;
}

/** The sandbox's lifecycle events as the server's: renamed, attributed to the agent's execution. Pure. */
export function serverEvent(
  e: AuditEventInput,
  o: {
    readonly agent: string;
    readonly executionId: string;
    readonly server: string;
    readonly sandboxId: string;
    readonly serverAgent: string;
  },
): AuditEventInput {
  const verb = e.action === 'resource.usage' ? 'usage' : e.action.startsWith('run.') ? e.action.slice('run.'.length) : e.action;
  return {
    ...e,
    actor: { agent: o.agent, execution: o.executionId },
    action: `tool.server.${verb}`,
    payload: { ...e.payload, server: o.server, sandbox: o.sandboxId, serverAgent: o.serverAgent },
  };
}

/** How long a server may take to exit after its stdin closed before it is stopped. */
const EXIT_GRACE_MS = 1000;

/** Bytes of the server's stderr kept to explain a failed start (the rest is discarded). */
const STDERR_TAIL = 2048;

/**
 * Starts the server's sandbox and connects the broker's client to it. Throws
 * `tools.server_start_failed` (and leaves nothing behind) when the sandbox does not start or the
 * server does not answer `initialize` within its timeout: the agent must then not start.
 */
export async function startToolSandbox(o: StartToolSandboxOptions): Promise<SandboxedToolServer> {
  const { spec } = o;
  const sandboxId = toolSandboxId(o.executionId, spec.name);
  const relabel = { agent: o.agent, executionId: o.executionId, server: spec.name, sandboxId, serverAgent: spec.policy.agent.name };
  const audit: AuditSink = { append: (e) => o.audit.append(serverEvent(e, relabel)) };
  const abort = new AbortController();
  const input = new PassThrough();
  let stderr = '';
  // Closing the connection ends the server's stdin; a server that does not exit on its own
  // within EXIT_GRACE_MS is stopped (TERM, then KILL), as the MCP stdio transport prescribes.
  let stopTimer: NodeJS.Timeout | undefined;
  const transport = new PipeTransport({
    input,
    maxMessageBytes: o.maxMessageBytes,
    onClose: () => void (stopTimer ??= setTimeout(() => abort.abort(), EXIT_GRACE_MS)),
  });
  const running = runSandbox({
    policy: spec.policy,
    manifestDir: dirname(spec.file),
    imageRootfs: spec.imageRootfs,
    executionId: sandboxId,
    volumes: spec.volumes,
    isolation: serverIsolation(spec.policy.agent.isolation, o.isolation),
    ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}),
    ...(o.microvm !== undefined ? { microvm: o.microvm } : {}),
    network: { kind: 'none' },
    stdin: input,
    stdout: (chunk) => transport.receive(chunk),
    stderr: (chunk) => void (stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_TAIL)),
    signal: abort.signal,
    graceMs: 1000,
    audit,
    provenance: { ...spec.provenance, toolServer: spec.name },
  }).then((r) => {
    clearTimeout(stopTimer);
    transport.end();
    return r;
  });
  const client = new Client({ name: 'aegis-tools-broker', version: '1.0.0' }, { capabilities: {} });
  try {
    await Promise.race([
      client.connect(transport, { timeout: o.server.timeoutMs }),
      running.then((r) => {
        throw new Error(r.error?.message ?? `it ended (${r.status}, exit code ${r.exitCode}) before answering initialize`);
      }),
    ]);
  } catch (err) {
    abort.abort();
    const r = await running;
    const why = r.error?.message ?? (err as Error).message;
    const tail = stderr.trim();
    throw new ToolsError(
      'tools.server_start_failed',
      `tool server ${spec.name} (${spec.file}) did not start: ${why}${tail !== '' ? `; its stderr ends with: ${tail.slice(-512)}` : ''}`,
      { cause: err },
    );
  }
  let closing: Promise<RunResult> | null = null;
  return {
    client,
    sandboxId,
    close: () =>
      (closing ??= (async () => {
        await client.close().catch(() => undefined);
        return running;
      })()),
  };
}

/** How strong a boundary each isolation is: the host kernel's namespaces < gVisor's Sentry < a guest kernel. */
const STRENGTH: Record<Isolation, number> = { crun: 0, runc: 0, docker: 0, gvisor: 1, microvm: 2 };

/**
 * The server's isolation: the run's (its --isolation, or the agent's), unless the server's own
 * manifest asks for a stronger one, which then holds (a run never weakens what the server's
 * author declared; review finding). Default crun.
 */
export function serverIsolation(declared: Isolation | null, run: Isolation | undefined): Isolation {
  if (run === undefined) return declared ?? 'crun';
  if (declared !== null && STRENGTH[declared] > STRENGTH[run]) return declared;
  return run;
}
