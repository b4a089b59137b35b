/**
 * The normalized Policy: what a validated `agent.yaml` compiles to, in canonical units.
 *
 * Every enforcer (sandbox spec compiler, egress gateway, filesystem jail, audit) consumes this
 * type and never the raw manifest. Everything here is plain data (JSON-serializable) so a policy
 * can be printed (`aegis run --dry-run`), stored with a run record, and hashed for the audit log.
 */

/** Which OCI runtime (or container engine, or microVM) runs the sandbox. */
export type Isolation = 'crun' | 'runc' | 'gvisor' | 'docker' | 'microvm';

/** A parsed image reference: `name:tag`, optionally pinned with `@sha256:<64 hex>`. */
export interface ImageRef {
  readonly name: string;
  readonly tag: string;
  /** Lower-case hex sha256 digest when the manifest pins one; the image must then match it. */
  readonly digest: string | null;
  /** The reference exactly as normalized: `name:tag` or `name:tag@sha256:...`. */
  readonly ref: string;
}

/** Which destination ports a network rule opens. `default` means 80 and 443 only. */
export type PortSpec = { readonly kind: 'default' } | { readonly kind: 'any' } | { readonly kind: 'one'; readonly port: number };

/**
 * One compiled `permissions.network.allow` entry.
 * - `exact`: one host name (normalized: IDNA A-label, lower case, no trailing dot).
 * - `wildcard`: `*.suffix`: any name with one or more labels before `suffix`, never `suffix` itself.
 * - `cidr`: an IP address or network, written as such in the manifest (an address is a /32 or /128).
 */
export type NetRule =
  | { readonly kind: 'exact'; readonly host: string; readonly ports: PortSpec; readonly source: string; readonly http?: HttpRule }
  | { readonly kind: 'wildcard'; readonly suffix: string; readonly ports: PortSpec; readonly source: string; readonly http?: HttpRule }
  | {
      readonly kind: 'cidr';
      readonly family: 4 | 6;
      /** Canonical network address (IPv4 dotted quad, IPv6 RFC 5952 form). */
      readonly address: string;
      readonly prefix: number;
      readonly ports: PortSpec;
      readonly source: string;
    };

/**
 * HTTP method/path restrictions of a name rule (`{host, methods, paths}` in the manifest;
 * src/policy/http.ts). Absent: any request. A host with rules is TLS-terminated by the gateway.
 */
export interface HttpRule {
  /** Upper-case method names; null: any method. */
  readonly methods: readonly string[] | null;
  /** Path patterns (`/repos/acme/**`); null: any path. */
  readonly paths: readonly string[] | null;
}

export interface NetworkPolicy {
  /** Compiled allow rules. `[]` means no network at all (the default). */
  readonly rules: readonly NetRule[];
  /** Token bucket on new connections and requests: `perSecond` refill, `burst` capacity. */
  readonly rateLimit: { readonly perSecond: number; readonly burst: number };
  /** Total bytes (sent + received) the sandbox may move through the gateway; null: unlimited. */
  readonly byteQuota: number | null;
}

export interface FsPolicy {
  /** Normalized absolute sandbox paths granted read-only. `[]` means none (the default). */
  readonly read: readonly string[];
  /** Normalized absolute sandbox paths granted read-write (write implies read). */
  readonly write: readonly string[];
}

export interface ResourceLimits {
  /** Wall-clock limit enforced by the orchestrator, in milliseconds. */
  readonly timeoutMs: number;
  /** Hard memory limit (no swap), in bytes. */
  readonly memoryBytes: number;
  /** CFS bandwidth: `quotaUs` of CPU time per `periodUs`. quota/period = cores. */
  readonly cpu: { readonly quotaUs: number; readonly periodUs: number; readonly cores: number };
  /** Maximum number of tasks (processes + threads) in the sandbox's cgroup. */
  readonly pids: number;
}

export interface AgentSpec {
  readonly name: string;
  readonly runtime: ImageRef;
  readonly entrypoint: readonly string[];
  /** Plain environment values. Secret references are kept apart in `secretRefs`. */
  readonly env: Readonly<Record<string, string>>;
  /** Environment variables whose value is `secret:<name>`: variable -> secret name. */
  readonly secretRefs: Readonly<Record<string, string>>;
  /** Requested isolation, or null to let the operator (CLI flag / server default) choose. */
  readonly isolation: Isolation | null;
  /** Code directory relative to the manifest's folder ('.' = the manifest's folder). */
  readonly code: string;
}

export interface Policy {
  readonly version: '1.0';
  readonly agent: AgentSpec;
  readonly network: NetworkPolicy;
  readonly fs: FsPolicy;
  readonly limits: ResourceLimits;
  /** Extra system calls to deny on top of the default seccomp profile (never fewer). */
  readonly syscalls: { readonly deny: readonly string[] };
  /** MCP tool servers brokered by AEGIS (manifest `tools:`). Absent or `servers: []`: no tools, no broker. */
  readonly tools?: ToolsPolicy;
}

/**
 * How AEGIS reaches a tool server (it is the MCP client; the agent never is):
 * - `http`: a remote server speaking Streamable HTTP at `url` (`https://`, or `http://` for a
 *   server on a trusted network; a bound secret is never sent over `http://`);
 * - `sandbox`: a local server speaking MCP over stdio, run by AEGIS in an AEGIS sandbox of its
 *   own for the agent's run: `manifest` is the path of its manifest as written (relative to the
 *   agent's manifest folder), `volumes` the host folders given to it (`HOST:SANDBOX[:ro|rw]`).
 */
export type ToolTransport =
  | {
      readonly kind: 'http';
      readonly url: string;
      /** Normalized host name or IP literal of `url`. */
      readonly host: string;
      readonly port: number;
      /** Name of the secret sent as the server's credential (`secret:<name>` in the manifest), or null. */
      readonly secret: string | null;
    }
  | { readonly kind: 'sandbox'; readonly manifest: string; readonly volumes: readonly string[] };

export interface ToolServerPolicy {
  /** The server's name: the path segment of `$AEGIS_TOOLS_URL/<name>/mcp`, a lower-case DNS label. */
  readonly name: string;
  readonly transport: ToolTransport;
  /** Tool names the agent may list and call, sorted; `["*"]` means every tool; `[]` means none. */
  readonly allow: readonly string[];
  /** How long one call may take before the broker answers the agent with a timeout error (ms). */
  readonly timeoutMs: number;
}

export interface ToolsPolicy {
  readonly servers: readonly ToolServerPolicy[];
}

/**
 * Machine-readable reasons carried by every decision, recorded in the audit log and sent to
 * agents in denial responses. Part of the API: add codes, never repurpose them.
 */
export type AllowReason =
  | 'net.allowed.exact'
  | 'net.allowed.wildcard'
  | 'net.allowed.cidr'
  /** A resolved address of an allowed name that lies in no special-purpose block. */
  | 'net.allowed.public_address'
  /** An HTTP request that a `{host, methods, paths}` entry allows. */
  | 'net.allowed.http_rule'
  | 'fs.allowed.read'
  | 'fs.allowed.write'
  /** Sandbox view (src/sandbox/spec/view.ts): a scratch tmpfs (/tmp, /dev/shm), writable, gone after the run. */
  | 'fs.allowed.tmpfs'
  /** Sandbox view: the agent's code at /agent, read-only. */
  | 'fs.allowed.code'
  /** Sandbox view: the image root, read-only (readable if the image has the file). */
  | 'fs.allowed.image'
  /** Sandbox view: the sandbox's own /proc, /sys, /dev, readable. */
  | 'fs.allowed.kernel'
  /** Sandbox view: a standard device node (/dev/null, ...), writable. */
  | 'fs.allowed.device'
  /** A tool the server's `allow` list names. */
  | 'tool.allowed.name'
  /** A server whose `allow` is `["*"]`. */
  | 'tool.allowed.any';

export type DenyReason =
  | 'net.denied.no_rules'
  | 'net.denied.not_in_allowlist'
  | 'net.denied.port'
  | 'net.denied.invalid_host'
  | 'net.denied.invalid_port'
  | 'net.denied.ip_literal'
  | 'net.denied.special_range'
  /** The host's entries restrict HTTP methods and this one is not listed. */
  | 'net.denied.http_method'
  /** The host's entries restrict HTTP paths and this path matches none of them. */
  | 'net.denied.http_path'
  /** A request path that cannot be matched safely (`..`, encoded "/", backslash). */
  | 'net.denied.http_target'
  | 'fs.denied.invalid_path'
  | 'fs.denied.not_granted'
  | 'fs.denied.read_only'
  /** Sandbox view: the code mount is read-only. */
  | 'fs.denied.code_readonly'
  /** Sandbox view: the image root is read-only. */
  | 'fs.denied.image_readonly'
  /** Sandbox view: a masked kernel path (/proc/kcore, ...). */
  | 'fs.denied.masked'
  /** Sandbox view: /proc, /sys, /dev are read-only to the agent. */
  | 'fs.denied.kernel_readonly'
  /** A tool the server's `allow` list does not name. */
  | 'tool.denied.not_allowed'
  /** A server the manifest's `tools:` does not declare. */
  | 'tool.denied.unknown_server'
  /** A tool name that is not a string of 1-128 printable characters. */
  | 'tool.denied.invalid_name';

export type Decision =
  | { readonly allow: true; readonly reason: AllowReason; /** the manifest entry that allowed it */ readonly rule: string }
  | { readonly allow: false; readonly reason: DenyReason; /** human-readable explanation */ readonly detail: string };

/**
 * The compiled network matcher the egress gateway asks. Built once per sandbox by
 * `compileEgress(policy.network)` (src/policy/net.ts); every method is pure and fast
 * (hash lookups, no RegExp over untrusted input).
 *
 * All inputs are UNTRUSTED strings from the agent: any spelling of a host or address is
 * accepted and normalized (IDNA, case, one trailing dot, inet_aton IPv4 forms, IPv4-mapped
 * IPv6) before it is compared; anything that does not parse is denied.
 */
export interface EgressMatcher {
  /** A connection or request to `host` (name or IP literal, any spelling) on `port`. */
  decide(host: string, port: number): Decision;
  /** A DNS query for `name`: allowed when some rule allows the name on some port. */
  decideName(name: string): Decision;
  /**
   * An address that an allowed name resolved to (DNS answer, or the address the gateway is
   * about to connect to). Loopback, link-local, private and other special ranges are denied
   * unless a CIDR entry names them (DNS-rebinding guard).
   */
  decideResolvedAddress(address: string): Decision;
  /**
   * One HTTP request (`method`, `path` as sent, query included) to `host:port`: `decide`, then
   * the method/path rules of the host's entries (an entry without rules allows any request).
   */
  decideHttp(host: string, port: number, method: string, path: string): Decision;
  /** Whether requests to `host:port` are subject to method/path rules (the gateway must see them). */
  inspectsHttp(host: string, port: number): boolean;
}
