/**
 * `agent.yaml` v1: the single source of truth for the manifest's shape, its defaults, and its
 * validation. The JSON Schema in schema/agent.schema.json is generated from this file
 * (`npm run schema`), so editors complete and check manifests with the same rules.
 *
 * Fail secure: every object is strict (unknown keys are errors), every value is checked, and
 * every default is the restrictive choice:
 *   network        none (allow: [])            fs            nothing beyond the read-only code
 *   execution_time 60s                         memory        256MiB
 *   cpu_quota      0.5 of one core             processes     128 tasks
 *   rate_limit     20/s new connections        byte_quota    unlimited (bounded by time and rate)
 */
import * as z from 'zod';
import { parseAllowEntry } from '../policy/host.js';
import { MAX_HTTP_METHODS, MAX_HTTP_PATHS, methodProblem, pathPatternProblem } from '../policy/http.js';
import { parseImageRef } from '../policy/image-ref.js';
import { ENV_NAME, RESERVED_ENV, SECRET_REF } from '../policy/env.js';
import { normalizeSandboxPath } from '../policy/paths.js';
import { isKnownSyscall } from '../policy/syscalls.js';
import { classifyHost } from '../policy/host.js';
import { ANY_TOOL, TOOL_NAME } from '../policy/tools.js';
import type { ImageRef, Isolation, NetRule, ToolTransport } from '../policy/types.js';

export { parseImageRef };
import { formatBytes, parseDuration, parseRate, parseSize } from './units.js';

export const DEFAULTS = {
  executionTime: '60s',
  memory: '256MiB',
  cpuQuota: 0.5,
  processes: 128,
  rateLimit: '20/s',
} as const;

export const LIMITS = {
  minTimeoutMs: 1_000,
  maxTimeoutMs: 24 * 3_600_000,
  minMemoryBytes: 16 * 1024 ** 2,
  maxMemoryBytes: 256 * 1024 ** 3,
  maxCpuQuota: 64,
  minCpuQuota: 0.01,
  maxProcesses: 65_536,
  maxRatePerSecond: 100_000,
} as const;

/**
 * Sandbox paths nobody may grant: the root itself, the kernel's virtual filesystems, and
 * /agent, where the agent's own code is mounted read-only.
 */
const RESERVED_PATHS = ['/', '/proc', '/sys', '/dev', '/agent'];

function unit<T>(parse: (s: string) => { ok: true; value: number } | { ok: false; message: string }, check: (v: number) => string | null) {
  return (text: string, ctx: z.RefinementCtx): number => {
    const r = parse(text);
    if (!r.ok) {
      ctx.addIssue({ code: 'custom', message: r.message, input: text });
      return z.NEVER;
    }
    const problem = check(r.value);
    if (problem !== null) {
      ctx.addIssue({ code: 'custom', message: `"${text}" ${problem}`, input: text });
      return z.NEVER;
    }
    return r.value as number & T;
  };
}

const sandboxPath = z
  .string()
  .describe('An absolute path inside the sandbox; no "..". Granted with everything below it.')
  .transform((text, ctx) => {
    if (!text.startsWith('/')) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is relative: sandbox paths must be absolute`, input: text });
      return z.NEVER;
    }
    if (text.split('/').includes('..')) {
      ctx.addIssue({ code: 'custom', message: `"${text}" contains "..": write the path it means`, input: text });
      return z.NEVER;
    }
    const p = normalizeSandboxPath(text);
    if (p === null) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a valid path`, input: text });
      return z.NEVER;
    }
    const reserved = RESERVED_PATHS.find((r) => p === r || (r !== '/' && p.startsWith(r + '/')));
    if (reserved !== undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `"${text}" is reserved (${reserved === '/' ? 'the whole root' : reserved}) and cannot be granted`,
        input: text,
      });
      return z.NEVER;
    }
    return p;
  });

const allowHostEntry = z
  .string()
  .describe('host, host:port, host:*, *.domain, an IP address or a CIDR network (optionally :port). Without a port: 80 and 443.')
  .transform((text, ctx): NetRule => {
    const r = parseAllowEntry(text);
    if (!r.ok) {
      ctx.addIssue({ continue: true, code: 'custom', message: r.message, input: text });
      return z.NEVER;
    }
    return r.rule;
  });

const allowRuleEntry = z
  .strictObject({
    host: z.string().describe('host, host:port or *.domain (names only: the gateway terminates TLS for it to see each request)'),
    methods: z
      .array(z.string().transform((m) => m.toUpperCase()))
      .min(1)
      .max(MAX_HTTP_METHODS)
      .optional()
      .describe('HTTP methods allowed (GET, POST, ...). Absent: any.'),
    paths: z
      .array(z.string())
      .min(1)
      .max(MAX_HTTP_PATHS)
      .optional()
      .describe('Path patterns allowed: "*" within a segment, "**" any number of segments (/repos/acme/**). Absent: any.'),
  })
  .describe('A host with HTTP method/path rules, enforced on every request (the gateway terminates TLS for it).')
  .transform((e, ctx): NetRule => {
    const r = parseAllowEntry(e.host);
    if (!r.ok) {
      ctx.addIssue({ continue: true, code: 'custom', message: r.message, input: e.host, path: ['host'] });
      return z.NEVER;
    }
    if (r.rule.kind === 'cidr') {
      ctx.addIssue({
        continue: true,
        code: 'custom',
        message: `"${e.host}": method/path rules need a host name, not an address`,
        input: e.host,
        path: ['host'],
      });
      return z.NEVER;
    }
    if (e.methods === undefined && e.paths === undefined) {
      ctx.addIssue({
        continue: true,
        code: 'custom',
        message: 'give methods, paths or both (or write the host as a plain string)',
        input: e,
      });
      return z.NEVER;
    }
    let bad = false;
    (e.methods ?? []).forEach((m, i) => {
      const why = methodProblem(m);
      if (why !== null) {
        bad = true;
        ctx.addIssue({ continue: true, code: 'custom', message: why, input: m, path: ['methods', i] });
      }
    });
    (e.paths ?? []).forEach((p, i) => {
      const why = pathPatternProblem(p);
      if (why !== null) {
        bad = true;
        ctx.addIssue({ continue: true, code: 'custom', message: why, input: p, path: ['paths', i] });
      }
    });
    if (bad) return z.NEVER;
    return { ...r.rule, http: { methods: e.methods ? [...new Set(e.methods)] : null, paths: e.paths ?? null } };
  });

const allowEntry = z.union([allowHostEntry, allowRuleEntry]);

const agentSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, { error: 'must be a lower-case DNS label (a-z, 0-9, "-", at most 63 characters)' })
      .describe('Agent name: a lower-case DNS label.'),
    runtime: z
      .string()
      .describe('Runtime image: name:tag, optionally pinned with @sha256:<64 hex>.')
      .transform((text, ctx): ImageRef => {
        const r = parseImageRef(text);
        if (typeof r === 'string') {
          ctx.addIssue({ code: 'custom', message: r, input: text });
          return z.NEVER;
        }
        return r;
      }),
    entrypoint: z
      .array(
        z
          .string()
          .min(1, { error: 'must not be empty' })
          .max(4096)
          .refine((s) => !s.includes('\0'), { error: 'must not contain a NUL byte' }),
      )
      .min(1, { error: 'must name a program to run' })
      .max(256)
      .describe('argv of the agent, run in its code directory (/agent).'),
    env: z
      .record(
        z
          .string()
          .regex(ENV_NAME, { error: (iss) => `"${String(iss.input)}" is not an environment variable name` })
          .refine((k) => !RESERVED_ENV.has(k.toUpperCase()), {
            error: (iss) => `${String(iss.input)} is set by AEGIS (egress gateway) and cannot be overridden`,
          }),
        z
          .string({ error: (iss) => (iss.code === 'invalid_type' ? 'environment values must be strings (quote it)' : undefined) })
          .max(65_536)
          .refine((v) => !v.includes('\0'), { error: 'must not contain a NUL byte' })
          .refine((v) => !v.startsWith('secret:') || SECRET_REF.test(v), {
            error: (iss) => `"${String(iss.input)}" is not a secret reference (secret:<name>, lower case)`,
          }),
      )
      .default({})
      .describe('Plain environment values. "secret:<name>" values are references for the secrets broker.'),
    code: z
      .string()
      .default('.')
      .describe("The agent's code directory, relative to this file's folder; mounted read-only at /agent.")
      .superRefine((p, ctx) => {
        if (p.startsWith('/')) ctx.addIssue({ code: 'custom', message: `"${p}" is absolute: give a folder relative to agent.yaml` });
        else if (p.split('/').includes('..')) ctx.addIssue({ code: 'custom', message: `"${p}" leaves the manifest's folder ("..")` });
        else if (p.includes('\0') || p === '') ctx.addIssue({ code: 'custom', message: 'is not a valid folder' });
      }),
    isolation: z
      .enum(['crun', 'runc', 'gvisor', 'docker', 'microvm'], { error: 'must be one of crun, runc, gvisor, docker, microvm' })
      .optional()
      .describe('Sandbox runtime. Absent: the operator chooses (crun by default).'),
  })
  .describe('What to run.');

const networkSchema = z
  .strictObject({
    allow: z
      .array(allowEntry)
      .max(1024)
      .default([])
      .describe('Destinations the agent may reach. [] (the default) means no network at all.'),
    rate_limit: z
      .string()
      .default(DEFAULTS.rateLimit)
      .describe('New connections and requests per time unit, e.g. 20/s.')
      .transform(
        unit(parseRate, (v) =>
          v <= 0 ? 'must be greater than zero' : v > LIMITS.maxRatePerSecond ? `exceeds ${LIMITS.maxRatePerSecond}/s` : null,
        ),
      ),
    byte_quota: z
      .string()
      .optional()
      .describe('Total bytes the agent may move through the gateway, e.g. 100MB. Absent: unlimited.')
      .transform((v, ctx) => (v === undefined ? null : unit(parseSize, (n) => (n < 1 ? 'must be at least 1 byte' : null))(v, ctx))),
  })
  .describe('Egress policy, enforced by the AEGIS gateway.');

const fsSchema = z
  .strictObject({
    read: z.array(sandboxPath).max(256).default([]).describe('Sandbox paths granted read-only.'),
    write: z.array(sandboxPath).max(256).default([]).describe('Sandbox paths granted read-write (write implies read).'),
  })
  .describe('Filesystem grants. Everything not listed is invisible or read-only.');

const permissionsSchema = z
  .strictObject({
    network: networkSchema.prefault({}),
    fs: fsSchema.prefault({}),
    execution_time: z
      .string({ error: (iss) => (iss.code === 'invalid_type' ? 'must be a duration with a unit, e.g. 300s' : undefined) })
      .default(DEFAULTS.executionTime)
      .describe('Wall-clock limit: s, m or h, e.g. 300s. Default 60s.')
      .transform(
        unit(parseDuration, (ms) =>
          ms < LIMITS.minTimeoutMs ? 'is shorter than 1s' : ms > LIMITS.maxTimeoutMs ? 'is longer than 24h' : null,
        ),
      ),
    memory: z
      .string({ error: (iss) => (iss.code === 'invalid_type' ? 'must be a size with a unit, e.g. 512MB' : undefined) })
      .default(DEFAULTS.memory)
      .describe('Hard memory limit (no swap): KB/MB/GB (decimal) or KiB/MiB/GiB (binary). Default 256MiB.')
      .transform(
        unit(parseSize, (b) =>
          b < LIMITS.minMemoryBytes
            ? `is less than the minimum of ${formatBytes(LIMITS.minMemoryBytes)}`
            : b > LIMITS.maxMemoryBytes
              ? `is more than the maximum of ${formatBytes(LIMITS.maxMemoryBytes)}`
              : null,
        ),
      ),
    cpu_quota: z
      .number({ error: (iss) => (iss.code === 'invalid_type' ? 'must be a number of cores, e.g. 0.5' : undefined) })
      .min(LIMITS.minCpuQuota, { error: `must be greater than 0 (at least ${LIMITS.minCpuQuota})` })
      .max(LIMITS.maxCpuQuota, { error: `must be at most ${LIMITS.maxCpuQuota}` })
      .default(DEFAULTS.cpuQuota)
      .describe('CPU as a fraction of one core (> 0). Default 0.5.'),
    processes: z
      .int({ error: 'must be a whole number' })
      .min(1, { error: 'must be at least 1' })
      .max(LIMITS.maxProcesses, { error: `must be at most ${LIMITS.maxProcesses}` })
      .default(DEFAULTS.processes)
      .describe('Maximum tasks (processes and threads). Default 128.'),
    syscalls: z
      .strictObject({
        deny: z
          .array(z.string().refine((s) => isKnownSyscall(s), { error: (iss) => `"${String(iss.input)}" is not a Linux system call name` }))
          .max(512)
          .default([])
          .describe('System calls to deny in addition to the default seccomp profile.'),
      })
      .prefault({})
      .describe('Seccomp additions. The default profile can only be tightened.'),
  })
  .describe('What the agent may do. Everything absent takes the restrictive default.');

/** Default and bounds of a tool call's time limit (`tools[].timeout`). */
export const TOOL_TIMEOUT = { default: '30s', minMs: 1_000, maxMs: 600_000 } as const;

const toolServerName = z
  .string()
  .regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, { error: 'must be a lower-case DNS label (a-z, 0-9, "-", at most 63 characters)' })
  .describe("The server's name: the agent reaches it at $AEGIS_TOOLS_URL/<name>/mcp.");

/** `HOST:SANDBOX[:ro|rw[,size=N]]`, the syntax of `aegis run --volume` (parsed again, with its checks, when the run starts). */
const TOOL_VOLUME = /^[^:\0]+:\/[^:\0]*(?::(?:ro|rw(?:,size=[0-9A-Za-z.]+)?))?$/;

/**
 * Where a tool server is: exactly one of `url` (remote, Streamable HTTP) or `manifest` (local:
 * an MCP server over stdio that AEGIS runs in an AEGIS sandbox of its own, described by that
 * manifest). ARCHITECTURE NOTE: a local server has a manifest of its own, in the same schema as
 * an agent's (image, code, entrypoint = the server's command, fs, limits, syscalls), rather than
 * an inline block: one grammar and one validator for every sandbox AEGIS runs, `aegis validate`
 * and `aegis policy show` work on it alone, and its grants are reviewed apart from the agent's.
 * The bare `command` of earlier versions (a process confined by namespaces only) is refused.
 */
const mcpSchema = z
  .strictObject({
    url: z
      .string()
      .max(2048)
      .optional()
      .describe('Streamable HTTP endpoint of a remote MCP server: https:// (or http:// for a server on a trusted network).'),
    secret: z
      .string()
      .optional()
      .describe('With url: "secret:<name>", a secret from the AEGIS store sent to the server as its credential (never over http://).'),
    manifest: z
      .string()
      .min(1, { error: 'must name a manifest file' })
      .max(4096)
      .refine((s) => !s.includes('\0'), { error: 'must not contain a NUL byte' })
      .optional()
      .describe(
        "A local MCP server (stdio): the path (relative to this manifest's folder) of its own AEGIS manifest; AEGIS runs its entrypoint in a sandbox of its own for the agent's run.",
      ),
    volumes: z
      .array(
        z.string().regex(TOOL_VOLUME, {
          error: (iss) =>
            `"${String(iss.input)}" is not HOST:SANDBOX[:ro|rw[,size=N]] (a relative HOST is taken from this manifest's folder)`,
        }),
      )
      .max(32)
      .optional()
      .describe("With manifest: host folders given to the server's sandbox (as `aegis run --volume`); its manifest must allow the paths."),
    command: z.unknown().optional().describe('Refused: a local server runs in its own AEGIS sandbox (give manifest).'),
  })
  .describe(
    'Where the server is: { url: "https://..." } (remote) or { manifest: "./server.yaml" } (local, stdio, in a sandbox of its own).',
  )
  .transform((v, ctx): ToolTransport => {
    if (v.command !== undefined) {
      ctx.addIssue({
        code: 'custom',
        message:
          'a local tool server runs in an AEGIS sandbox of its own: give manifest: "<its manifest>" (whose agent.entrypoint is the server\'s command) instead of command',
        path: ['command'],
      });
      return z.NEVER;
    }
    if ((v.url === undefined) === (v.manifest === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of url (a remote server) or manifest (a local one, sandboxed)' });
      return z.NEVER;
    }
    if (v.manifest !== undefined) {
      if (v.secret !== undefined) {
        ctx.addIssue({ code: 'custom', message: 'a secret is only sent to a remote (url) server', path: ['secret'] });
        return z.NEVER;
      }
      return { kind: 'sandbox', manifest: v.manifest, volumes: [...(v.volumes ?? [])] };
    }
    if (v.volumes !== undefined) {
      ctx.addIssue({ code: 'custom', message: 'volumes are given to a local (manifest) server only', path: ['volumes'] });
      return z.NEVER;
    }
    const url = v.url!;
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      ctx.addIssue({ code: 'custom', message: `"${url}" is not a URL`, input: url, path: ['url'] });
      return z.NEVER;
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') {
      ctx.addIssue({ code: 'custom', message: `"${url}": only https:// and http:// servers are supported`, input: url, path: ['url'] });
      return z.NEVER;
    }
    if (u.username !== '' || u.password !== '') {
      ctx.addIssue({
        code: 'custom',
        message: 'credentials in the URL are refused: bind a secret (secret: "secret:<name>")',
        path: ['url'],
      });
      return z.NEVER;
    }
    const host = classifyHost(u.hostname);
    if (host.kind === 'invalid') {
      ctx.addIssue({ code: 'custom', message: `"${u.hostname}" is not a valid host (${host.why})`, input: url, path: ['url'] });
      return z.NEVER;
    }
    let secret: string | null = null;
    if (v.secret !== undefined) {
      const m = SECRET_REF.exec(v.secret);
      if (!m) {
        ctx.addIssue({ code: 'custom', message: `"${v.secret}" is not a secret reference (secret:<name>, lower case)`, path: ['secret'] });
        return z.NEVER;
      }
      if (u.protocol !== 'https:') {
        ctx.addIssue({ code: 'custom', message: 'a secret is only sent over https://', path: ['secret'] });
        return z.NEVER;
      }
      secret = m[1]!;
    }
    return {
      kind: 'http',
      url: u.href,
      host: host.kind === 'ip' ? host.ip.address : host.name,
      port: u.port !== '' ? Number(u.port) : u.protocol === 'https:' ? 443 : 80,
      secret,
    };
  });

const toolServerSchema = z
  .strictObject({
    name: toolServerName,
    mcp: mcpSchema,
    allow: z
      .array(
        z
          .string()
          .regex(TOOL_NAME, { error: (iss) => `"${String(iss.input)}" is not a tool name (1-128 printable characters, no spaces)` })
          .refine((t) => t === ANY_TOOL || !t.includes('*'), {
            error: (iss) => `"${String(iss.input)}": "*" alone allows every tool; names are not patterns`,
          }),
      )
      .max(1024)
      .default([])
      .describe('Tools the agent may list and call; ["*"]: all; [] (the default): none.'),
    timeout: z
      .string()
      .default(TOOL_TIMEOUT.default)
      .describe('How long one tool call may take, e.g. 30s (default). 1s to 10m.')
      .transform(
        unit(parseDuration, (ms) =>
          ms < TOOL_TIMEOUT.minMs ? 'is shorter than 1s' : ms > TOOL_TIMEOUT.maxMs ? 'is longer than 10m' : null,
        ),
      ),
  })
  .describe('An MCP tool server brokered by AEGIS.');

const toolsSchema = z
  .array(toolServerSchema)
  .max(64)
  .superRefine((servers, ctx) => {
    const seen = new Set<string>();
    servers.forEach((s, i) => {
      if (seen.has(s.name)) ctx.addIssue({ code: 'custom', message: `tool server "${s.name}" is declared twice`, path: [i, 'name'] });
      seen.add(s.name);
      if (s.allow.includes(ANY_TOOL) && s.allow.length > 1)
        ctx.addIssue({ code: 'custom', message: '"*" allows every tool: list names or "*" alone', path: [i, 'allow'] });
    });
  })
  .default([])
  .describe('MCP tool servers the agent may use through AEGIS, and which of their tools. [] (the default): none.');

export const manifestSchema = z
  .strictObject({
    version: z.literal('1.0', {
      error: (iss) => (typeof iss.input === 'number' ? 'must be the string "1.0" (quote it: version: "1.0")' : 'must be "1.0"'),
    }),
    agent: agentSchema,
    permissions: permissionsSchema.prefault({}),
    tools: toolsSchema,
  })
  .describe('AEGIS agent manifest, version 1.0');

/** A validated manifest, with units parsed and network entries compiled (see compilePolicy). */
export type Manifest = z.output<typeof manifestSchema>;
export type ManifestInput = z.input<typeof manifestSchema>;
export type { Isolation };
