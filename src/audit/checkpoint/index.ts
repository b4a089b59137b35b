/** C2SP signed notes and tlog checkpoints (pure). */
export { type Checkpoint, encodeCheckpoint, openCheckpoint, parseCheckpointBody, signCheckpoint } from './checkpoint.js';
export {
  type NoteSigner,
  type NoteVerifier,
  encodeVerifierKey,
  ed25519PublicKeyFromRaw,
  noteKeyHash,
  noteSigner,
  noteVerifier,
  parseNote,
  parseVerifierKey,
  rawEd25519PublicKey,
  signNote,
  verifyNote,
} from './note.js';
