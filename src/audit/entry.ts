/**
 * The Merkle leaf (the "entry") of one audit event, version 1: canonical JSON of
 *
 *   {"v":1,"i":<index>,"id","time","actor","action","decision","reason"?,"subj"?,
 *    "enc":{"k":<data key id>,"n":<base64 nonce>,"c":<base64 ciphertext||tag>}}
 *
 * where the ciphertext is AES-256-GCM of canonical JSON {"payload":...,"subject"?:...}. Only the
 * payload and the subject id are secret; "subj" is a keyed hash of the subject for erasure.
 * The index inside the entry lets verification name the position of a deleted or reordered
 * entry. Pure. Entries read back from storage are hostile: parseEntry never throws anything but
 * AuditError('audit.entry_malformed').
 */
import { canonicalJson } from './canonical-json.js';
import { AuditError } from './errors.js';
import type { AuditEvent } from './event.js';

export interface EncryptedPart {
  readonly keyId: string;
  readonly nonce: Uint8Array;
  readonly ciphertext: Uint8Array;
}

/** The clear part of an entry: the event's metadata, its position, the subject's keyed hash. */
export type ParsedEntry = Pick<AuditEvent, 'id' | 'time' | 'actor' | 'action' | 'decision' | 'reason'> & {
  readonly index: number;
  readonly subjectHash?: string;
  readonly enc: EncryptedPart;
};

export type EntryHeader = Omit<ParsedEntry, 'enc'>;

/** Canonical JSON of an entry through the generic encoder (the reference entry-batch.ts must match). */
export function encodeEntry(h: EntryHeader, enc: EncryptedPart): Uint8Array {
  return Buffer.from(
    canonicalJson({
      v: 1,
      i: h.index,
      id: h.id,
      time: h.time,
      actor: h.actor,
      action: h.action,
      decision: h.decision,
      reason: h.reason,
      subj: h.subjectHash,
      enc: { k: enc.keyId, n: Buffer.from(enc.nonce).toString('base64'), c: Buffer.from(enc.ciphertext).toString('base64') },
    }),
    'utf8',
  );
}

/** Plaintext that gets encrypted: canonical JSON {"payload":…,"subject"?:…}. */
export function secretJson(event: Pick<AuditEvent, 'payload' | 'subject'>, payloadJson?: string): string {
  // Keys in canonical order: "payload" < "subject".
  const p = payloadJson ?? canonicalJson(event.payload);
  return event.subject === undefined ? `{"payload":${p}}` : `{"payload":${p},"subject":${JSON.stringify(event.subject)}}`;
}

export function parseSecretPart(bytes: Uint8Array): { payload: Record<string, unknown>; subject?: string } {
  const v = parseJson(bytes);
  if (!isRecord(v) || !isRecord(v['payload'])) throw bad('decrypted part has no payload object');
  const subject = v['subject'];
  if (subject !== undefined && typeof subject !== 'string') throw bad('decrypted subject is not a string');
  return subject === undefined ? { payload: v['payload'] } : { payload: v['payload'], subject };
}

function bad(msg: string): AuditError {
  return new AuditError('audit.entry_malformed', msg);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as unknown;
  } catch {
    throw bad('entry is not UTF-8 JSON');
  }
}

function str(v: unknown, what: string, max = 4096): string {
  if (typeof v !== 'string' || v.length > max) throw bad(`${what} is not a string`);
  return v;
}

function b64(v: unknown, what: string): Uint8Array {
  const s = str(v, what, 1 << 26);
  const buf = Buffer.from(s, 'base64');
  if (buf.toString('base64') !== s) throw bad(`${what} is not base64`);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/**
 * Just the index recorded in a stored entry (hostile input), for full-log verification: parses
 * the JSON and checks the version and index, but not the other fields (readers check those).
 */
export function parseEntryIndex(bytes: Uint8Array): number {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8')) as unknown;
  } catch {
    throw bad('entry is not JSON');
  }
  if (!isRecord(v) || v['v'] !== 1) throw bad('entry is not a version 1 object');
  const index = v['i'];
  if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) throw bad('entry index is not a non-negative integer');
  return index;
}

/** Parses a stored entry (hostile input). */
export function parseEntry(bytes: Uint8Array): ParsedEntry {
  const v = parseJson(bytes);
  if (!isRecord(v) || v['v'] !== 1) throw bad('entry is not a version 1 object');
  const index = v['i'];
  if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) throw bad('entry index is not a non-negative integer');
  const actorIn = v['actor'];
  if (!isRecord(actorIn)) throw bad('entry actor is not an object');
  const actor: { agent?: string; execution?: string; principal?: string } = {};
  for (const k of ['agent', 'execution', 'principal'] as const) {
    if (actorIn[k] !== undefined) actor[k] = str(actorIn[k], `actor.${k}`);
  }
  const decision = v['decision'];
  if (decision !== 'allow' && decision !== 'deny' && decision !== 'error' && decision !== 'info') throw bad('entry decision is invalid');
  const e = v['enc'];
  if (!isRecord(e)) throw bad('entry has no enc object');
  const out: ParsedEntry = {
    index,
    id: str(v['id'], 'id'),
    time: str(v['time'], 'time'),
    actor,
    action: str(v['action'], 'action'),
    decision,
    ...(v['reason'] !== undefined ? { reason: str(v['reason'], 'reason') } : {}),
    ...(v['subj'] !== undefined ? { subjectHash: str(v['subj'], 'subj') } : {}),
    enc: { keyId: str(e['k'], 'enc.k'), nonce: b64(e['n'], 'enc.n'), ciphertext: b64(e['c'], 'enc.c') },
  };
  return out;
}
