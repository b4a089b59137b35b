/**
 * C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint) bodies, signed as C2SP signed notes:
 *
 *   <origin>\n<tree size, decimal>\n<base64 root hash>\n[extension lines\n]
 *
 * Pure: keys come in as arguments.
 */
import { AuditError } from '../errors.js';
import { HASH_SIZE } from '../merkle/hash.js';
import { type NoteSigner, type NoteVerifier, signNote, verifyNote } from './note.js';

export interface Checkpoint {
  readonly origin: string;
  readonly size: number;
  readonly root: Uint8Array;
  readonly extensions: readonly string[];
}

function malformed(msg: string): AuditError {
  return new AuditError('audit.checkpoint_malformed', msg);
}

/** The checkpoint body (the text the signature covers). */
export function encodeCheckpoint(cp: Checkpoint): string {
  if (cp.origin.length === 0 || cp.origin.includes('\n')) throw malformed('origin must be a non-empty single line');
  if (!Number.isSafeInteger(cp.size) || cp.size < 0) throw malformed('tree size must be a non-negative integer');
  if (cp.root.length !== HASH_SIZE) throw malformed('root must be 32 bytes');
  for (const e of cp.extensions) if (e.length === 0 || e.includes('\n')) throw malformed('extension lines must be non-empty single lines');
  const ext = cp.extensions.map((e) => `${e}\n`).join('');
  return `${cp.origin}\n${cp.size}\n${Buffer.from(cp.root).toString('base64')}\n${ext}`;
}

/** Parses a checkpoint body (hostile input). */
export function parseCheckpointBody(text: string): Checkpoint {
  if (!text.endsWith('\n')) throw malformed('checkpoint must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) throw malformed('checkpoint needs origin, size and root lines');
  const [origin, sizeLine, rootLine, ...extensions] = lines as [string, string, string, ...string[]];
  if (origin.length === 0) throw malformed('empty origin line');
  // tlog-checkpoint: size is ASCII decimal without leading zeros.
  if (!/^(0|[1-9][0-9]{0,15})$/u.test(sizeLine)) throw malformed('tree size is not a decimal number');
  const size = Number(sizeLine);
  if (!Number.isSafeInteger(size)) throw malformed('tree size is too large');
  const root = Buffer.from(rootLine, 'base64');
  if (root.length !== HASH_SIZE || root.toString('base64') !== rootLine) throw malformed('root is not base64 of 32 bytes');
  for (const e of extensions) if (e.length === 0) throw malformed('empty extension line');
  return { origin, size, root: new Uint8Array(root), extensions };
}

export function signCheckpoint(cp: Checkpoint, signer: NoteSigner): string {
  return signNote(encodeCheckpoint(cp), signer);
}

/**
 * Verifies the note's signature under `verifier` and that its origin is `origin`, and returns
 * the checkpoint. Throws audit.checkpoint_malformed / audit.checkpoint_signature.
 */
export function openCheckpoint(note: string, verifier: NoteVerifier, origin: string): Checkpoint {
  const cp = parseCheckpointBody(verifyNote(note, verifier));
  if (cp.origin !== origin)
    throw new AuditError('audit.checkpoint_signature', `checkpoint origin ${JSON.stringify(cp.origin)} is not ${JSON.stringify(origin)}`);
  return cp;
}
