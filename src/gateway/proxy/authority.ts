/**
 * Parsing of hosts and ports the agent names: CONNECT request-targets (RFC 9110 §9.3.6,
 * authority-form `host:port`), Host header values (RFC 9110 §7.2), absolute-form URLs.
 *
 * HOSTILE INPUT: returns a coded GatewayError('gateway.http_malformed') for anything else. The host
 * is returned as written (minus IPv6 brackets and one trailing dot, lower-cased); whether it
 * is a name or an address in some spelling is for the policy matcher to decide.
 */
import { GatewayError } from '../errors.js';

export interface Authority {
  readonly host: string;
  readonly port: number;
}

const MAX_HOST = 255;
// Characters that may appear in a host or IP literal; anything else (spaces, '@', '/', '%', ...) is refused.
const HOST_CHARS = /^[A-Za-z0-9._\-:]+$/;

function bad(why: string): never {
  throw new GatewayError('gateway.http_malformed', why);
}

function parsePort(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) bad(`"${text.slice(0, 16)}" is not a port`);
  const port = Number(text);
  if (port < 1 || port > 65535) bad(`port ${port} is out of range`);
  return port;
}

function cleanHost(host: string): string {
  if (host.length === 0 || host.length > MAX_HOST) bad('host is empty or too long');
  if (!HOST_CHARS.test(host)) bad('host contains characters outside [A-Za-z0-9._-:]');
  const lower = host.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Split `host[:port]` or `[v6][:port]`. `defaultPort` applies when the port is absent;
 * pass null to require one (CONNECT).
 */
export function parseAuthority(text: string, defaultPort: number | null): Authority {
  if (text.length === 0 || text.length > MAX_HOST + 8) bad('authority is empty or too long');
  let host: string;
  let portText: string | null = null;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) bad('"[" without "]"');
    host = text.slice(1, close);
    if (!host.includes(':')) bad('bracketed host is not an IPv6 address');
    const rest = text.slice(close + 1);
    if (rest.length > 0) {
      if (!rest.startsWith(':')) bad('junk after "]"');
      portText = rest.slice(1);
    }
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0) {
      if (text.indexOf(':') !== colon) bad('unbracketed IPv6 address (write [address]:port)');
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
    } else {
      host = text;
    }
  }
  let port: number;
  if (portText !== null) port = parsePort(portText);
  else if (defaultPort !== null) port = defaultPort;
  else bad('port is required');
  return { host: cleanHost(host), port };
}

/** The target of an absolute-form request (`http://host[:port]/path`). Only http: is forwarded. */
export function parseAbsoluteUrl(text: string): { scheme: string; authority: Authority; path: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    bad('request-target is not an absolute URL');
  }
  const scheme = url.protocol.replace(/:$/, '');
  if (url.username || url.password) bad('userinfo in request-target');
  // Take the authority from the raw text, not from URL's normalisation (which rewrites
  // numeric hosts like 2852039166 to dotted form): the policy decides on what was written.
  const afterScheme = text.slice(text.indexOf('//') + 2);
  const end = afterScheme.search(/[/?#]/);
  const rawAuthority = end < 0 ? afterScheme : afterScheme.slice(0, end);
  const authority = parseAuthority(rawAuthority, scheme === 'https' ? 443 : 80);
  return { scheme, authority, path: `${url.pathname}${url.search}` };
}

/** Compare two hosts as the agent wrote them (case, one trailing dot and brackets ignored). */
export function sameHost(a: string, b: string): boolean {
  const norm = (h: string): string => {
    let s = h.toLowerCase();
    if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
    return s.endsWith('.') ? s.slice(0, -1) : s;
  };
  return norm(a) === norm(b);
}
