/**
 * TLS ClientHello parser: finds the server name (SNI) the agent asks for, without terminating TLS.
 *
 * HOSTILE INPUT: these are the first bytes an agent sends. The parser is pure, bounded and
 * incremental: call it with everything buffered so far; it returns `incomplete` until a whole
 * ClientHello has arrived, and throws GatewayError('gateway.tls_malformed') on anything that is not one.
 *
 * Formats: TLS record layer (RFC 8446 §5.1), ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2),
 * server_name extension (RFC 6066 §3), encrypted_client_hello (draft-ietf-tls-esni, type 0xfe0d).
 */
import { GatewayError } from '../errors.js';

/** A ClientHello may span several records; refuse to buffer more than this. */
export const MAX_CLIENT_HELLO_BYTES = 32 * 1024;

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ENCRYPTED_CLIENT_HELLO = 0xfe0d;
const SNI_HOST_NAME = 0x00;

export type ClientHelloResult =
  | { readonly status: 'incomplete' }
  | {
      readonly status: 'complete';
      /** The host_name from server_name, lower-cased, or null when the extension is absent. */
      readonly sni: string | null;
      /** True when the hello carries encrypted_client_hello: the real name would be hidden. */
      readonly ech: boolean;
    };

function malformed(why: string): never {
  throw new GatewayError('gateway.tls_malformed', `not a TLS ClientHello: ${why}`);
}

/** True when `first` can start a TLS handshake record (to tell TLS from other protocols). */
export function looksLikeTls(first: number): boolean {
  return first === RECORD_HANDSHAKE;
}

/** Reassemble the handshake bytes carried by the leading handshake records of `buf`. */
function handshakeBytes(buf: Uint8Array): { bytes: Uint8Array; complete: boolean } {
  const parts: Uint8Array[] = [];
  let total = 0;
  let off = 0;
  let needed = -1; // length of the handshake message once its 4-byte header is known
  while (off + 5 <= buf.length) {
    if (buf[off] !== RECORD_HANDSHAKE) malformed(`record type ${buf[off]} is not handshake (22)`);
    if (buf[off + 1] !== 0x03) malformed('record version major is not 3');
    const len = (buf[off + 3]! << 8) | buf[off + 4]!;
    if (len === 0 || len > 16384 + 2048) malformed(`record length ${len} is out of range`);
    if (off + 5 + len > buf.length) break; // record not fully arrived yet
    parts.push(buf.subarray(off + 5, off + 5 + len));
    total += len;
    off += 5 + len;
    if (needed < 0 && total >= 4) {
      const joined = concat(parts, total);
      if (joined[0] !== HANDSHAKE_CLIENT_HELLO) malformed(`handshake type ${joined[0]} is not ClientHello (1)`);
      needed = 4 + ((joined[1]! << 16) | (joined[2]! << 8) | joined[3]!);
      if (needed > MAX_CLIENT_HELLO_BYTES) malformed(`ClientHello of ${needed} bytes is too large`);
    }
    if (needed >= 0 && total >= needed) return { bytes: concat(parts, total).subarray(0, needed), complete: true };
  }
  if (buf.length > MAX_CLIENT_HELLO_BYTES + 5 * 8) malformed('too many bytes without a complete ClientHello');
  return { bytes: concat(parts, total), complete: false };
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A bounds-checked big-endian reader over one handshake message. */
class Reader {
  private off = 0;
  constructor(
    private readonly b: Uint8Array,
    private readonly end = b.length,
  ) {}
  get remaining(): number {
    return this.end - this.off;
  }
  u8(): number {
    if (this.off + 1 > this.end) malformed('truncated');
    return this.b[this.off++]!;
  }
  u16(): number {
    return (this.u8() << 8) | this.u8();
  }
  skip(n: number): void {
    if (this.off + n > this.end) malformed('truncated');
    this.off += n;
  }
  /** A sub-reader over the next `n` bytes, which this reader then skips. */
  sub(n: number): Reader {
    if (this.off + n > this.end) malformed('length runs past its container');
    const r = new Reader(this.b.subarray(this.off, this.off + n));
    this.off += n;
    return r;
  }
  bytes(n: number): Uint8Array {
    if (this.off + n > this.end) malformed('truncated');
    const out = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }
}

/** RFC 6066 §3: HostName is ASCII; we also require a DNS-shaped name (letters, digits, '-', '.', '_'). */
function hostName(raw: Uint8Array): string {
  if (raw.length === 0 || raw.length > 253) malformed('server name length out of range');
  let s = '';
  for (const c of raw) {
    const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x2e || c === 0x5f;
    if (!ok) malformed('server name has a character outside [A-Za-z0-9._-]');
    s += String.fromCharCode(c);
  }
  return s.toLowerCase();
}

function parseServerName(ext: Reader): string {
  const list = ext.sub(ext.u16());
  if (ext.remaining !== 0) malformed('bytes after server_name list');
  let name: string | null = null;
  while (list.remaining > 0) {
    const type = list.u8();
    const value = list.bytes(list.u16());
    if (type !== SNI_HOST_NAME) continue; // unknown name types are skipped (RFC 6066 §3)
    if (name !== null) malformed('more than one host_name in server_name');
    name = hostName(value);
  }
  if (name === null) malformed('server_name extension without a host_name');
  return name;
}

/** Parse the ClientHello at the start of `buf` (everything the agent sent so far). */
export function parseClientHello(buf: Uint8Array): ClientHelloResult {
  if (buf.length === 0) return { status: 'incomplete' };
  if (buf[0] !== RECORD_HANDSHAKE) malformed(`first byte 0x${buf[0]!.toString(16)} is not a handshake record`);
  const hs = handshakeBytes(buf);
  if (!hs.complete) return { status: 'incomplete' };

  const r = new Reader(hs.bytes);
  r.skip(4); // handshake type + length, checked above
  r.skip(2); // legacy_version
  r.skip(32); // random
  const sessionIdLen = r.u8();
  if (sessionIdLen > 32) malformed('session id longer than 32 bytes');
  r.skip(sessionIdLen);
  const suitesLen = r.u16();
  if (suitesLen < 2 || suitesLen % 2 !== 0) malformed('bad cipher_suites length');
  r.skip(suitesLen);
  const compLen = r.u8();
  if (compLen < 1) malformed('empty compression_methods');
  r.skip(compLen);
  if (r.remaining === 0) return { status: 'complete', sni: null, ech: false }; // no extensions (TLS <= 1.2)

  const exts = r.sub(r.u16());
  if (r.remaining !== 0) malformed('bytes after extensions');
  let sni: string | null = null;
  let ech = false;
  const seen = new Set<number>();
  while (exts.remaining > 0) {
    const type = exts.u16();
    const body = exts.sub(exts.u16());
    // RFC 8446 §4.2: "There MUST NOT be more than one extension of the same type".
    if (seen.has(type)) malformed(`duplicate extension ${type}`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) sni = parseServerName(body);
    else if (type === EXT_ENCRYPTED_CLIENT_HELLO) ech = true;
  }
  return { status: 'complete', sni, ech };
}
