/**
 * Host names and IP addresses: normalization of UNTRUSTED spellings, and parsing of the
 * manifest's `permissions.network.allow` entries into rules.
 *
 * Pure: no I/O. `node:url` is used only for its IDNA (UTS #46) mapping, which is computation.
 *
 * ARCHITECTURE NOTE: every host string an agent hands us (CONNECT target, SNI, Host header,
 * DNS question) goes through `classifyHost` before any comparison. A string is either an IP
 * address (in any spelling a C library would accept: inet_aton forms such as `2130706433`
 * or `0x7f.1`, IPv4-mapped IPv6, bracketed IPv6), a valid host name in canonical A-label
 * form, or invalid. Invalid is denied. A host name never matches an IP rule and vice versa.
 */
import ipaddr from 'ipaddr.js';
import { domainToASCII } from 'node:url';
import { getPublicSuffix } from 'tldts';
import type { NetRule, PortSpec } from './types.js';

/** An IP address in canonical form. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is reported as IPv4. */
export interface IpAddress {
  readonly family: 4 | 6;
  /** Canonical text: dotted quad, or RFC 5952 IPv6. */
  readonly address: string;
  readonly parsed: ipaddr.IPv4 | ipaddr.IPv6;
}

export type HostClass =
  | { readonly kind: 'ip'; readonly ip: IpAddress }
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'invalid'; readonly why: string };

const MAX_HOST_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;
/** Canonical A-label host name: LDH labels (underscore tolerated, as DNS allows it). */
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

/**
 * Characters we let reach the IDNA mapper. WHATWG host parsing (which domainToASCII applies)
 * also percent-decodes, cuts at `/` and parses IPv4 numbers: `a/b` would become `a`. So any
 * URL delimiter, `%`, whitespace or control character makes the host invalid up front.
 */
function hasOnlyHostCharacters(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ok =
      (c >= 0x61 && c <= 0x7a) || // a-z
      (c >= 0x41 && c <= 0x5a) || // A-Z
      (c >= 0x30 && c <= 0x39) || // 0-9
      c === 0x2d || // -
      c === 0x2e || // .
      c === 0x5f || // _
      (c >= 0xa0 && !(c >= 0xd800 && c <= 0xdfff && !isPairedSurrogate(s, i)) && c !== 0x3000 && c !== 0xfeff);
    if (!ok) return false;
  }
  return true;
}

function isPairedSurrogate(s: string, i: number): boolean {
  const c = s.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff) {
    const d = s.charCodeAt(i + 1);
    return d >= 0xdc00 && d <= 0xdfff;
  }
  const p = s.charCodeAt(i - 1);
  return p >= 0xd800 && p <= 0xdbff;
}

/** One inet_aton number part: decimal, octal (leading 0) or hex (0x). */
function parseIpv4Part(part: string): number | null {
  if (part === '') return null;
  let digits = part;
  let radix = 10;
  if (/^0[xX]/.test(part)) {
    digits = part.slice(2);
    radix = 16;
    if (digits === '') return 0; // "0x" alone is 0 for inet_aton and WHATWG alike
    if (!/^[0-9a-fA-F]+$/.test(digits)) return null;
  } else if (part.length > 1 && part.startsWith('0')) {
    digits = part.slice(1);
    radix = 8;
    if (!/^[0-7]+$/.test(digits)) return null;
  } else if (!/^[0-9]+$/.test(part)) {
    return null;
  }
  if (digits.length > 32) return null;
  const n = parseInt(digits, radix);
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * inet_aton / WHATWG IPv4 parsing: 1 to 4 parts, the last one filling the remaining bytes.
 * Returns the dotted quad, or null when `s` is not an IPv4 number form.
 */
export function parseLooseIpv4(s: string): string | null {
  const parts = s.split('.');
  if (parts.length > 4) return null;
  const nums: number[] = [];
  for (const p of parts) {
    const n = parseIpv4Part(p);
    if (n === null) return null;
    nums.push(n);
  }
  const last = nums.pop()!;
  for (const n of nums) if (n > 255) return null;
  if (last >= 256 ** (4 - nums.length)) return null;
  let value = last;
  for (let i = 0; i < nums.length; i++) value += nums[i]! * 256 ** (3 - i);
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

/** True when a host's last label is numeric, which makes it an IPv4 form (or nothing), per WHATWG. */
function looksNumeric(s: string): boolean {
  const labels = s.split('.');
  let last = labels[labels.length - 1]!;
  if (last === '' && labels.length > 1) last = labels[labels.length - 2]!;
  return /^(?:[0-9]+|0[xX][0-9a-fA-F]*)$/.test(last);
}

function ipFrom(parsed: ipaddr.IPv4 | ipaddr.IPv6): IpAddress {
  if (parsed.kind() === 'ipv6') {
    const v6 = parsed as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) return ipFrom(v6.toIPv4Address());
    return { family: 6, address: v6.toRFC5952String(), parsed: v6 };
  }
  return { family: 4, address: parsed.toString(), parsed };
}

/**
 * Classify an UNTRUSTED host string from the agent (no port). Accepts one trailing dot and
 * `[v6]` brackets; everything else that is not an IP or a valid host name is `invalid`.
 */
export function classifyHost(input: string): HostClass {
  if (typeof input !== 'string' || input.length === 0) return { kind: 'invalid', why: 'empty host' };
  if (input.length > MAX_HOST_LENGTH + 2) return { kind: 'invalid', why: 'host name too long' };
  let s = input;
  if (s.startsWith('[')) {
    if (!s.endsWith(']')) return { kind: 'invalid', why: 'unbalanced [ in host' };
    s = s.slice(1, -1);
    if (!s.includes(':') || s.includes('%') || !ipaddr.IPv6.isValid(s)) return { kind: 'invalid', why: 'not an IPv6 address' };
    return { kind: 'ip', ip: ipFrom(ipaddr.IPv6.parse(s)) };
  }
  if (s.includes(':')) {
    // Zone ids (fe80::1%eth0) are refused: they only name link-local scopes.
    if (s.includes('%') || !ipaddr.IPv6.isValid(s)) return { kind: 'invalid', why: 'not an IPv6 address' };
    return { kind: 'ip', ip: ipFrom(ipaddr.IPv6.parse(s)) };
  }
  if (s.endsWith('.')) s = s.slice(0, -1);
  if (s.length === 0 || s.endsWith('.')) return { kind: 'invalid', why: 'empty label' };
  if (!hasOnlyHostCharacters(s)) return { kind: 'invalid', why: 'character not allowed in a host name' };
  // IDNA-map first (fullwidth digits and dots become ASCII), then apply the WHATWG rule: a
  // host whose last label is numeric is an IPv4 address or nothing.
  // (control characters were refused above, so "printable ASCII" is "ASCII" here)
  const ascii = /^[ -~]*$/.test(s) ? s.toLowerCase() : domainToASCII(s);
  if (ascii === '') return { kind: 'invalid', why: 'not a valid international domain name' };
  if (looksNumeric(ascii)) {
    const v4 = parseLooseIpv4(ascii.endsWith('.') ? ascii.slice(0, -1) : ascii);
    if (v4 === null) return { kind: 'invalid', why: 'numeric host that is not an IPv4 address' };
    return { kind: 'ip', ip: ipFrom(ipaddr.IPv4.parse(v4)) };
  }
  if (ascii.length > MAX_HOST_LENGTH) return { kind: 'invalid', why: 'host name too long' };
  if (ascii.split('.').some((l) => l.startsWith('xn--')) && domainToASCII(ascii) !== ascii) {
    return { kind: 'invalid', why: 'not a valid international domain name' };
  }
  for (const label of ascii.split('.')) {
    if (label.length === 0 || label.length > MAX_LABEL_LENGTH || !LABEL.test(label)) {
      return { kind: 'invalid', why: `invalid label "${label}"` };
    }
  }
  return { kind: 'name', name: ascii };
}

/**
 * Special-purpose address blocks (IANA registries, RFC 6890 and successors) that are denied
 * unless a CIDR entry inside the same block names them. The documentation ranges
 * (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are deliberately NOT listed:
 * they are never routed on the internet, and the test "internet" uses them as public addresses.
 */
const SPECIAL_BLOCKS: ReadonlyArray<{ cidr: string; name: string }> = [
  { cidr: '0.0.0.0/8', name: 'this-network' },
  { cidr: '10.0.0.0/8', name: 'private' },
  { cidr: '100.64.0.0/10', name: 'shared address space (CGNAT; also cloud metadata on some providers)' },
  { cidr: '127.0.0.0/8', name: 'loopback' },
  { cidr: '169.254.0.0/16', name: 'link-local (cloud metadata)' },
  { cidr: '172.16.0.0/12', name: 'private' },
  { cidr: '192.0.0.0/24', name: 'IETF protocol assignments' },
  { cidr: '192.168.0.0/16', name: 'private' },
  { cidr: '198.18.0.0/15', name: 'benchmarking' },
  { cidr: '224.0.0.0/4', name: 'multicast' },
  { cidr: '240.0.0.0/4', name: 'reserved / broadcast' },
  { cidr: '::/127', name: 'unspecified / loopback' },
  { cidr: '::/96', name: 'IPv4-compatible (deprecated)' },
  { cidr: '64:ff9b::/96', name: 'NAT64 (embeds an IPv4 address)' },
  { cidr: '64:ff9b:1::/48', name: 'local NAT64' },
  { cidr: '100::/64', name: 'discard' },
  { cidr: '2001::/32', name: 'Teredo (embeds an IPv4 address)' },
  { cidr: '2002::/16', name: '6to4 (embeds an IPv4 address)' },
  { cidr: 'fc00::/7', name: 'unique local (private; cloud metadata on some providers)' },
  { cidr: 'fe80::/10', name: 'link-local' },
  { cidr: 'fec0::/10', name: 'site-local (deprecated)' },
  { cidr: 'ff00::/8', name: 'multicast' },
];

const PARSED_SPECIAL = SPECIAL_BLOCKS.map((b) => ({ range: ipaddr.parseCIDR(b.cidr), name: b.name, cidr: b.cidr }));

/** The special-purpose block `ip` lies in, or null for an ordinary (public) address. */
export function specialBlockOf(ip: IpAddress): { cidr: string; name: string } | null {
  for (const b of PARSED_SPECIAL) {
    if (b.range[0].kind() === ip.parsed.kind() && ip.parsed.match(b.range)) return { cidr: b.cidr, name: b.name };
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Manifest allow entries (validated author input).

export type AllowEntryResult =
  { readonly ok: true; readonly rule: NetRule; readonly warning?: string } | { readonly ok: false; readonly message: string };

/** Private-section suffixes of the Public Suffix List: allowed under a wildcard, with a warning. */
export function privateSuffixWarning(suffix: string): string | undefined {
  const withPrivate = getPublicSuffix(suffix, { allowPrivateDomains: true });
  if (withPrivate !== null && suffix === withPrivate) {
    return `"*.${suffix}" allows every tenant of a shared hosting domain (${suffix} is on the Public Suffix List's private section)`;
  }
  return undefined;
}

function parsePort(text: string): PortSpec | string {
  if (text === '*') return { kind: 'any' };
  if (!/^[0-9]{1,5}$/.test(text)) return `"${text}" is not a port (1-65535 or *)`;
  const port = Number(text);
  if (port < 1 || port > 65535) return `port ${port} is out of range (1-65535)`;
  return { kind: 'one', port };
}

function cidrRule(addrText: string, prefixText: string | null, ports: PortSpec, source: string): AllowEntryResult {
  const isV6 = addrText.includes(':');
  const valid = isV6 ? ipaddr.IPv6.isValid(addrText) && !addrText.includes('%') : ipaddr.IPv4.isValidFourPartDecimal(addrText);
  if (!valid) {
    const loose = isV6 ? null : parseLooseIpv4(addrText);
    return {
      ok: false,
      message: loose
        ? `"${addrText}" is an unusual spelling of ${loose}: write addresses as such (${loose})`
        : `"${addrText}" is not an IP address`,
    };
  }
  const ip = ipFrom(ipaddr.parse(addrText));
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (prefixText !== null) {
    if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) > max) {
      return { ok: false, message: `"/${prefixText}" is not a prefix length for IPv${ip.family} (0-${max})` };
    }
    prefix = Number(prefixText);
  }
  const minPrefix = ip.family === 4 ? 8 : 16;
  if (prefix < minPrefix) {
    return { ok: false, message: `"${source}" is too broad: a network must be /${minPrefix} or narrower` };
  }
  const network = ipFrom(
    ip.family === 4
      ? ipaddr.IPv4.networkAddressFromCIDR(`${ip.address}/${prefix}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${ip.address}/${prefix}`),
  );
  if (network.address !== ip.address) {
    return { ok: false, message: `"${addrText}/${prefix}" has host bits set: did you mean ${network.address}/${prefix}?` };
  }
  return { ok: true, rule: { kind: 'cidr', family: ip.family, address: ip.address, prefix, ports, source } };
}

/**
 * Parse one `permissions.network.allow` entry:
 * `host`, `host:port`, `host:*`, `*.suffix[:port|:*]`, `a.b.c.d[/n][:port|:*]`,
 * `[v6][/n]` or `[v6/n]` with optional `:port`, or a bare IPv6 address/network without a port.
 */
export function parseAllowEntry(source: string): AllowEntryResult {
  if (source.length === 0) return { ok: false, message: 'empty entry' };
  if (source.length > 300) return { ok: false, message: 'entry is too long' };
  if (/\s/.test(source)) return { ok: false, message: `"${source}" contains white space` };
  if (source === '*' || source.startsWith('*:')) return { ok: false, message: 'a bare "*" would allow every host; list the hosts' };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) {
    return { ok: false, message: `"${source}" is a URL: write the host name only (and :port if not 80/443)` };
  }

  let hostPart = source;
  let ports: PortSpec = { kind: 'default' };
  if (source.startsWith('[')) {
    const close = source.indexOf(']');
    if (close < 0) return { ok: false, message: `"${source}" has "[" without "]"` };
    hostPart = source.slice(1, close);
    const rest = source.slice(close + 1);
    if (rest.startsWith('/')) {
      const m = /^\/([0-9]{1,3})(?::(.*))?$/.exec(rest);
      if (!m) return { ok: false, message: `"${source}" is not [address]/prefix:port` };
      hostPart += `/${m[1]}`;
      if (m[2] !== undefined) {
        const p = parsePort(m[2]);
        if (typeof p === 'string') return { ok: false, message: p };
        ports = p;
      }
    } else if (rest.startsWith(':')) {
      const p = parsePort(rest.slice(1));
      if (typeof p === 'string') return { ok: false, message: p };
      ports = p;
    } else if (rest !== '') {
      return { ok: false, message: `"${source}": unexpected "${rest}" after "]"` };
    }
    const [addr, prefix] = hostPart.split('/', 2);
    if (!addr || !addr.includes(':')) return { ok: false, message: `"${source}": brackets are only for IPv6 addresses` };
    return cidrRule(addr, prefix ?? null, ports, source);
  }

  const colons = source.split(':').length - 1;
  if (colons > 1) {
    // A bare IPv6 address or network; a port needs brackets to be unambiguous.
    const [addr, prefix] = source.split('/', 2);
    return cidrRule(addr!, prefix ?? null, ports, source);
  }
  if (colons === 1) {
    const i = source.lastIndexOf(':');
    hostPart = source.slice(0, i);
    const p = parsePort(source.slice(i + 1));
    if (typeof p === 'string') return { ok: false, message: p };
    ports = p;
  }
  if (hostPart === '') return { ok: false, message: `"${source}" has no host` };

  if (hostPart.includes('/')) {
    const [addr, prefix, extra] = hostPart.split('/');
    if (extra !== undefined || addr === undefined) return { ok: false, message: `"${source}" is not address/prefix` };
    return cidrRule(addr, prefix ?? null, ports, source);
  }

  let wildcard = false;
  let name = hostPart;
  if (name.startsWith('*.')) {
    wildcard = true;
    name = name.slice(2);
  }
  if (name.includes('*')) {
    return { ok: false, message: `"${source}": "*" is only allowed as the whole first label ("*.example.com")` };
  }
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (looksNumeric(name)) {
    if (wildcard) return { ok: false, message: `"${source}": a wildcard cannot apply to an IP address` };
    return cidrRule(name, null, ports, source);
  }
  const cls = classifyHost(name);
  if (cls.kind !== 'name') {
    return { ok: false, message: `"${hostPart}" is not a valid host name${cls.kind === 'invalid' ? ` (${cls.why})` : ''}` };
  }
  if (!wildcard) return { ok: true, rule: { kind: 'exact', host: cls.name, ports, source } };

  // A wildcard directly over a public suffix (ICANN section) would allow whole TLDs.
  const icannSuffix = getPublicSuffix(cls.name, { allowPrivateDomains: false });
  if (icannSuffix === null || icannSuffix === cls.name) {
    return {
      ok: false,
      message: `"${source}" covers a whole public suffix (${cls.name}): name a registered domain, e.g. "*.example.${cls.name}"`,
    };
  }
  const warning = privateSuffixWarning(cls.name);
  const rule: NetRule = { kind: 'wildcard', suffix: cls.name, ports, source };
  return warning ? { ok: true, rule, warning } : { ok: true, rule };
}
