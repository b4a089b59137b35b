/**
 * The normalized Policy: what a validated `agent.yaml` compiles to, in canonical units.
 *
 * Every enforcer (sandbox spec compiler, egress gateway, filesystem jail, audit) consumes this
 * type and never the raw manifest. Everything here is plain data (JSON-serializable) so a policy
 * can be printed (`aegis run --dry-run`), stored with a run record, and hashed for the audit log.
 */

/** Which OCI runtime runs the sandbox. */
export type Isolation = 'crun' | 'runc' | 'gvisor' | 'microvm';

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
  | { readonly kind: 'exact'; readonly host: string; readonly ports: PortSpec; readonly source: string }
  | { readonly kind: 'wildcard'; readonly suffix: string; readonly ports: PortSpec; readonly source: string }
  | {
      readonly kind: 'cidr';
      readonly family: 4 | 6;
      /** Canonical network address (IPv4 dotted quad, IPv6 RFC 5952 form). */
      readonly address: string;
      readonly prefix: number;
      readonly ports: PortSpec;
      readonly source: string;
    };

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
  | 'fs.allowed.device';

export type DenyReason =
  | 'net.denied.no_rules'
  | 'net.denied.not_in_allowlist'
  | 'net.denied.port'
  | 'net.denied.invalid_host'
  | 'net.denied.invalid_port'
  | 'net.denied.ip_literal'
  | 'net.denied.special_range'
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
  | 'fs.denied.kernel_readonly';

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
}
