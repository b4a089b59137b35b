/**
 * DNS message helpers (pure): parse an agent's query into one checked question, and encode
 * the gateway's answers. Wire format: RFC 1035 §4.1; rcodes RFC 1035 §4.1.1 / RFC 6895.
 *
 * HOSTILE INPUT: `parseQuery` takes the agent's raw bytes; every failure is
 * GatewayError('gateway.dns_malformed'), and the 16-bit id is recovered when possible so the agent
 * gets a FORMERR instead of a timeout.
 */
import * as packet from 'dns-packet';
import { GatewayError } from '../errors.js';

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export type Rcode = keyof typeof RCODE;

/** RFC 1035 §4.2.1: UDP messages are limited to 512 bytes without EDNS; queries are far smaller. */
export const MAX_QUERY_BYTES = 4096;

export interface Question {
  readonly id: number;
  readonly name: string;
  /** Mnemonic (A, AAAA, TXT, ...) as dns-packet names it, or TYPE<n>. */
  readonly type: string;
  readonly recursionDesired: boolean;
}

/** The id of a message that is too broken to parse otherwise, or null when there is no header. */
export function salvageId(buf: Uint8Array): number | null {
  return buf.length >= 2 ? (buf[0]! << 8) | buf[1]! : null;
}

export function parseQuery(buf: Buffer): Question {
  if (buf.length < 12) throw new GatewayError('gateway.dns_malformed', `DNS message of ${buf.length} bytes is shorter than a header`);
  if (buf.length > MAX_QUERY_BYTES) throw new GatewayError('gateway.dns_malformed', `DNS query of ${buf.length} bytes is too large`);
  let msg: packet.Packet;
  try {
    msg = packet.decode(buf);
  } catch (err) {
    throw new GatewayError('gateway.dns_malformed', 'DNS query does not parse', { cause: err });
  }
  if (msg.type !== 'query') throw new GatewayError('gateway.dns_malformed', 'DNS message is a response, not a query');
  if ((msg as { opcode?: string }).opcode !== 'QUERY') throw new GatewayError('gateway.dns_malformed', 'DNS opcode is not QUERY');
  const qs = msg.questions ?? [];
  if (qs.length !== 1) throw new GatewayError('gateway.dns_malformed', `DNS query has ${qs.length} questions (exactly 1 is supported)`);
  const q = qs[0]!;
  if (q.class !== undefined && q.class !== 'IN') throw new GatewayError('gateway.dns_malformed', `DNS class ${q.class} is not IN`);
  if ((msg.answers?.length ?? 0) > 0 || (msg.authorities?.length ?? 0) > 0) {
    throw new GatewayError('gateway.dns_malformed', 'DNS query carries answer or authority records');
  }
  return {
    id: msg.id ?? 0,
    name: q.name,
    type: String(q.type),
    recursionDesired: ((msg.flags ?? 0) & packet.RECURSION_DESIRED) !== 0,
  };
}

export interface AddressAnswer {
  readonly type: 'A' | 'AAAA';
  readonly address: string;
  readonly ttl: number;
}

/**
 * Encode the gateway's response to `q`. Answers are flattened: the question name maps straight
 * to the final addresses (CNAME targets are never shown to the agent).
 */
export function encodeResponse(q: Question, rcode: Rcode, answers: readonly AddressAnswer[] = []): Buffer {
  const flags = (q.recursionDesired ? packet.RECURSION_DESIRED : 0) | packet.RECURSION_AVAILABLE | RCODE[rcode];
  return packet.encode({
    type: 'response',
    id: q.id,
    flags,
    questions: [{ type: q.type as packet.RecordType, name: q.name, class: 'IN' }],
    answers: answers.map((a) => ({ type: a.type, name: q.name, ttl: a.ttl, class: 'IN' as const, data: a.address })),
  });
}

/** A bare FORMERR for a query that did not parse (RFC 1035 §4.1.1: header only). */
export function encodeFormErr(id: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(0x8000 | RCODE.FORMERR, 2); // QR=1, opcode 0, rcode FORMERR
  return b;
}
