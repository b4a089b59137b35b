/**
 * The egress decision core: compiles `Policy.network` once into an `EgressMatcher` that the
 * gateway asks for every DNS question, connection and request.
 *
 * Pure: no I/O. Decisions are hash lookups over normalized names (no RegExp is ever built
 * from manifest or agent strings). There is no deny list in manifest v1, so "deny before
 * allow" means: invalid input and special-purpose addresses are refused before any rule is
 * consulted.
 */
import ipaddr from 'ipaddr.js';
import { classifyHost, specialBlockOf, type IpAddress } from './host.js';
import { describeHttpRule, httpRuleVerdict, pathTargetProblem } from './http.js';
import type { Decision, EgressMatcher, NetRule, NetworkPolicy, PortSpec } from './types.js';

type CidrRule = Extract<NetRule, { kind: 'cidr' }>;
type NameRule = Exclude<NetRule, { kind: 'cidr' }>;

function portAllowed(spec: PortSpec, port: number): boolean {
  switch (spec.kind) {
    case 'any':
      return true;
    case 'default':
      return port === 80 || port === 443;
    case 'one':
      return port === spec.port;
  }
}

function describePorts(rules: readonly NetRule[]): string {
  const parts = new Set<string>();
  for (const r of rules) {
    if (r.ports.kind === 'default') parts.add('80, 443');
    else if (r.ports.kind === 'one') parts.add(String(r.ports.port));
    else parts.add('any');
  }
  return [...parts].join(', ');
}

function deny(reason: Extract<Decision, { allow: false }>['reason'], detail: string): Decision {
  return { allow: false, reason, detail };
}

/** Compile the network policy into a matcher. Called once per sandbox. */
export function compileEgress(network: NetworkPolicy): EgressMatcher {
  const exact = new Map<string, NetRule[]>();
  const wildcard = new Map<string, NetRule[]>();
  const cidrs: Array<{ rule: CidrRule; range: [ipaddr.IPv4 | ipaddr.IPv6, number]; special: string | null }> = [];
  for (const rule of network.rules) {
    switch (rule.kind) {
      case 'exact':
        exact.set(rule.host, [...(exact.get(rule.host) ?? []), rule]);
        break;
      case 'wildcard':
        wildcard.set(rule.suffix, [...(wildcard.get(rule.suffix) ?? []), rule]);
        break;
      case 'cidr': {
        const parsed = ipaddr.parse(rule.address);
        // A rule names a special block only when it lies entirely inside it (its prefix is at
        // least the block's): `::/16` starts in ::/127 but does not name loopback.
        const special = specialBlockOf({ family: rule.family, address: rule.address, parsed });
        const inside = special !== null && rule.prefix >= Number(special.cidr.split('/')[1]);
        cidrs.push({ rule, range: [parsed, rule.prefix], special: inside ? special.cidr : null });
        break;
      }
    }
  }
  const empty = network.rules.length === 0;

  /** Rules whose host pattern matches `name`: exact first, then wildcards from the longest suffix. */
  function nameRules(name: string): NetRule[] {
    const out: NetRule[] = [...(exact.get(name) ?? [])];
    // Walk every proper suffix after a dot: "a.b.example.com" -> "b.example.com", "example.com", "com".
    for (let i = name.indexOf('.'); i >= 0; i = name.indexOf('.', i + 1)) {
      const rules = wildcard.get(name.slice(i + 1));
      if (rules) out.push(...rules);
    }
    return out;
  }

  /** CIDR rules containing `ip`, honouring the special-range rule. */
  function ipRules(ip: IpAddress): { rules: CidrRule[]; special: { cidr: string; name: string } | null } {
    const special = specialBlockOf(ip);
    const rules: CidrRule[] = [];
    for (const c of cidrs) {
      if (c.range[0].kind() !== ip.parsed.kind() || !ip.parsed.match(c.range)) continue;
      // A special-purpose address is allowed only by a rule that itself lies in that block,
      // i.e. one that names it (10.1.2.0/24 names private space; 8.0.0.0/7 never does).
      if (special !== null && c.special !== special.cidr) continue;
      rules.push(c.rule);
    }
    return { rules, special };
  }

  function allowed(rule: NetRule): Decision {
    const reason = rule.kind === 'exact' ? 'net.allowed.exact' : rule.kind === 'wildcard' ? 'net.allowed.wildcard' : 'net.allowed.cidr';
    return { allow: true, reason, rule: rule.source };
  }

  function decideIp(ip: IpAddress, port: number | null): Decision {
    const { rules, special } = ipRules(ip);
    if (rules.length === 0) {
      if (special !== null)
        return deny('net.denied.special_range', `${ip.address} is in ${special.cidr} (${special.name}), which no allow entry names`);
      return deny('net.denied.ip_literal', `${ip.address} is an IP address that no allow entry lists (host names never match addresses)`);
    }
    if (port === null) return allowed(rules[0]!);
    const hit = rules.find((r) => portAllowed(r.ports, port));
    if (hit) return allowed(hit);
    return deny('net.denied.port', `port ${port} of ${ip.address} is not allowed (allowed: ${describePorts(rules)})`);
  }

  /** The name rules for (host, port), or null when `host` is no name. */
  function portNameRules(host: string, port: number): NameRule[] | null {
    const cls = classifyHost(host);
    if (cls.kind !== 'name') return null;
    return nameRules(cls.name).filter((r): r is NameRule => r.kind !== 'cidr' && portAllowed(r.ports, port));
  }

  const matcher: EgressMatcher = {
    decide(host: string, port: number): Decision {
      if (!Number.isInteger(port) || port < 1 || port > 65535) return deny('net.denied.invalid_port', `"${String(port)}" is not a port`);
      const cls = classifyHost(host);
      if (cls.kind === 'invalid') return deny('net.denied.invalid_host', cls.why);
      if (empty) return deny('net.denied.no_rules', 'the manifest allows no network access');
      if (cls.kind === 'ip') return decideIp(cls.ip, port);
      const rules = nameRules(cls.name);
      if (rules.length === 0) return deny('net.denied.not_in_allowlist', `${cls.name} is not in permissions.network.allow`);
      const hit = rules.find((r) => portAllowed(r.ports, port));
      if (hit) return allowed(hit);
      return deny('net.denied.port', `port ${port} of ${cls.name} is not allowed (allowed: ${describePorts(rules)})`);
    },

    decideName(name: string): Decision {
      const cls = classifyHost(name);
      if (cls.kind === 'invalid') return deny('net.denied.invalid_host', cls.why);
      if (empty) return deny('net.denied.no_rules', 'the manifest allows no network access');
      if (cls.kind === 'ip') return deny('net.denied.ip_literal', `${cls.ip.address} is an address, not a name to resolve`);
      const rules = nameRules(cls.name);
      if (rules.length === 0) return deny('net.denied.not_in_allowlist', `${cls.name} is not in permissions.network.allow`);
      return allowed(rules[0]!);
    },

    decideResolvedAddress(address: string): Decision {
      const cls = classifyHost(address);
      if (cls.kind !== 'ip') return deny('net.denied.invalid_host', `"${address}" is not an IP address`);
      const special = specialBlockOf(cls.ip);
      if (special === null) return { allow: true, reason: 'net.allowed.public_address', rule: cls.ip.address };
      return decideIp(cls.ip, null);
    },

    decideHttp(host: string, port: number, method: string, path: string): Decision {
      const base = matcher.decide(host, port);
      if (!base.allow) return base;
      const rules = portNameRules(host, port);
      // Address rules and entries without method/path rules allow any request.
      if (rules === null || rules.length === 0) return base;
      const open = rules.find((r) => r.http === undefined);
      if (open) return allowed(open);
      const target = pathTargetProblem(path);
      if (target !== null) return deny('net.denied.http_target', `${target}: ${host} has method/path rules`);
      let methodOnly: NameRule | null = null;
      for (const r of rules) {
        const v = httpRuleVerdict(r.http!, method, path);
        if (v === 'allow') return { allow: true, reason: 'net.allowed.http_rule', rule: describeHttpRule(r.source, r.http!) };
        if (v === 'method') methodOnly ??= r;
      }
      const shown = rules.map((r) => describeHttpRule(r.source, r.http!)).join('; ');
      if (methodOnly) return deny('net.denied.http_method', `${method} is not allowed on ${host}${pathOnlyText(path)} (${shown})`);
      return deny('net.denied.http_path', `${pathOnlyText(path) || '/'} matches no path allowed on ${host} (${shown})`);
    },

    inspectsHttp(host: string, port: number): boolean {
      const rules = portNameRules(host, port);
      return rules !== null && rules.length > 0 && rules.every((r) => r.http !== undefined);
    },
  };
  return matcher;
}

function pathOnlyText(path: string): string {
  const q = path.search(/[?#]/);
  const p = q < 0 ? path : path.slice(0, q);
  return p.length > 200 ? `${p.slice(0, 200)}…` : p;
}
