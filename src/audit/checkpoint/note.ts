/**
 * C2SP signed-note (https://c2sp.org/signed-note) with Ed25519 signatures. Pure: keys are
 * passed in as node:crypto KeyObjects or raw bytes; nothing is read from disk here.
 *
 * A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
 * `— <key name> <base64(key hash || signature)>`. The signature covers the text, including its
 * final newline. Notes read back from storage are hostile input: every parse failure is an
 * AuditError('audit.checkpoint_malformed').
 */
import { type KeyObject, createHash, createPublicKey, sign as edSign, verify as edVerify } from 'node:crypto';
import { AuditError } from '../errors.js';

/** signed-note: signature type identifier for Ed25519 keys. */
const ALG_ED25519 = 0x01;
/** signed-note: every signature line starts with U+2014 EM DASH and a space. */
const SIG_PREFIX = '\u2014 ';
/** signed-note: the largest note we accept (the spec suggests verifiers bound note size). */
const MAX_NOTE_BYTES = 1 << 16;

export interface NoteSigner {
  readonly name: string;
  readonly keyHash: Uint8Array;
  readonly privateKey: KeyObject;
}

export interface NoteVerifier {
  readonly name: string;
  readonly keyHash: Uint8Array;
  readonly publicKey: KeyObject;
  /** 32-byte raw Ed25519 public key. */
  readonly rawPublicKey: Uint8Array;
}

export interface NoteSignature {
  readonly name: string;
  readonly keyHash: Uint8Array;
  readonly signature: Uint8Array;
}

export interface ParsedNote {
  /** The signed text, ending in a newline. */
  readonly text: string;
  readonly signatures: readonly NoteSignature[];
}

function malformed(msg: string): AuditError {
  return new AuditError('audit.checkpoint_malformed', msg);
}

/** signed-note: a key name is non-empty and contains no whitespace and no '+'. */
function checkKeyName(name: string): void {
  if (name.length === 0 || /[\s+]/u.test(name)) throw new AuditError('audit.key_invalid', `invalid note key name: ${JSON.stringify(name)}`);
}

/** signed-note key hash: SHA-256(name || 0x0A || 0x01 || public key)[:4]. */
export function noteKeyHash(name: string, rawPublicKey: Uint8Array): Uint8Array {
  const h = createHash('sha256')
    .update(name, 'utf8')
    .update(Buffer.from([0x0a, ALG_ED25519]))
    .update(rawPublicKey)
    .digest();
  return new Uint8Array(h.subarray(0, 4));
}

/** The 32 raw bytes of an Ed25519 public key. */
export function rawEd25519PublicKey(key: KeyObject): Uint8Array {
  if (key.asymmetricKeyType !== 'ed25519') throw new AuditError('audit.key_invalid', 'signing key is not Ed25519');
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new AuditError('audit.key_invalid', 'Ed25519 key has no public part');
  return new Uint8Array(Buffer.from(jwk.x, 'base64url'));
}

export function ed25519PublicKeyFromRaw(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new AuditError('audit.key_invalid', 'Ed25519 public key must be 32 bytes');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
}

export function noteSigner(name: string, privateKey: KeyObject): NoteSigner {
  checkKeyName(name);
  const raw = rawEd25519PublicKey(createPublicKey(privateKey));
  return { name, keyHash: noteKeyHash(name, raw), privateKey };
}

export function noteVerifier(name: string, rawPublicKey: Uint8Array): NoteVerifier {
  checkKeyName(name);
  const raw = new Uint8Array(rawPublicKey);
  return { name, keyHash: noteKeyHash(name, raw), publicKey: ed25519PublicKeyFromRaw(raw), rawPublicKey: raw };
}

/** Verifier key string: `<name>+<hex key hash>+<base64(0x01 || public key)>` (signed-note). */
export function encodeVerifierKey(v: NoteVerifier): string {
  const key = Buffer.concat([Buffer.from([ALG_ED25519]), v.rawPublicKey]).toString('base64');
  return `${v.name}+${Buffer.from(v.keyHash).toString('hex')}+${key}`;
}

/** Parses a verifier key string (hostile input: AuditError('audit.key_invalid') on any problem). */
export function parseVerifierKey(text: string): NoteVerifier {
  // The name has no '+', the hash is 8 hex digits; the base64 key may itself contain '+'.
  const t = text.trim();
  const p1 = t.indexOf('+');
  const p2 = p1 < 0 ? -1 : t.indexOf('+', p1 + 1);
  if (p1 <= 0 || p2 < 0) throw new AuditError('audit.key_invalid', 'verifier key must be <name>+<hash>+<key>');
  const name = t.slice(0, p1);
  const hashHex = t.slice(p1 + 1, p2);
  const keyB64 = t.slice(p2 + 1);
  if (!/^[0-9a-f]{8}$/u.test(hashHex)) throw new AuditError('audit.key_invalid', 'verifier key hash must be 8 hex digits');
  const key = Buffer.from(keyB64, 'base64');
  if (key.length !== 33 || key[0] !== ALG_ED25519 || key.toString('base64') !== keyB64) {
    throw new AuditError('audit.key_invalid', 'verifier key is not an Ed25519 key (0x01 || 32 bytes)');
  }
  const v = noteVerifier(name, key.subarray(1));
  if (Buffer.from(v.keyHash).toString('hex') !== hashHex)
    throw new AuditError('audit.key_invalid', 'verifier key hash does not match the key');
  return v;
}

/** Signs `text` (must end in a newline) and returns the complete note. */
export function signNote(text: string, signer: NoteSigner): string {
  checkText(text);
  const sig = edSign(null, Buffer.from(text, 'utf8'), signer.privateKey);
  const blob = Buffer.concat([signer.keyHash, sig]).toString('base64');
  return `${text}\n${SIG_PREFIX}${signer.name} ${blob}\n`;
}

function checkText(text: string): void {
  if (!text.endsWith('\n')) throw malformed('note text must end with a newline');
  // signed-note: no ASCII control characters other than newline.
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0009\u000b-\u001f\u007f]/u.test(text)) throw malformed('note contains control characters');
}

/** Splits a note into text and signature lines without checking any signature. */
export function parseNote(note: string): ParsedNote {
  if (Buffer.byteLength(note, 'utf8') > MAX_NOTE_BYTES) throw malformed('note is too large');
  if (note.includes('\uFFFD')) throw malformed('note is not valid UTF-8');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw malformed('note has no signature block');
  const text = note.slice(0, split + 1);
  checkText(text);
  const sigBlock = note.slice(split + 2);
  if (!sigBlock.endsWith('\n')) throw malformed('signature block must end with a newline');
  const signatures: NoteSignature[] = [];
  for (const line of sigBlock.slice(0, -1).split('\n')) {
    if (!line.startsWith(SIG_PREFIX)) throw malformed('signature line must start with an em dash');
    const rest = line.slice(SIG_PREFIX.length);
    const sp = rest.indexOf(' ');
    if (sp <= 0) throw malformed('signature line must be "— <name> <signature>"');
    const name = rest.slice(0, sp);
    const b64 = rest.slice(sp + 1);
    const blob = Buffer.from(b64, 'base64');
    if (blob.length < 5 || blob.toString('base64') !== b64) throw malformed('signature is not valid base64');
    signatures.push({ name, keyHash: new Uint8Array(blob.subarray(0, 4)), signature: new Uint8Array(blob.subarray(4)) });
  }
  if (signatures.length === 0) throw malformed('note has no signatures');
  return { text, signatures };
}

/**
 * Verifies a note against one trusted key and returns its text. Signatures from other keys are
 * ignored (signed-note allows cosignatures); at least one must be from `verifier` and valid.
 */
export function verifyNote(note: string, verifier: NoteVerifier): string {
  const parsed = parseNote(note);
  const data = Buffer.from(parsed.text, 'utf8');
  for (const s of parsed.signatures) {
    if (s.name !== verifier.name || Buffer.compare(Buffer.from(s.keyHash), Buffer.from(verifier.keyHash)) !== 0) continue;
    if (s.signature.length === 64 && edVerify(null, data, verifier.publicKey, s.signature)) return parsed.text;
    throw new AuditError('audit.checkpoint_signature', `signature by ${verifier.name} does not verify`);
  }
  throw new AuditError(
    'audit.checkpoint_signature',
    `note is not signed by ${verifier.name}+${Buffer.from(verifier.keyHash).toString('hex')}`,
  );
}
