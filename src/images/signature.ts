/**
 * Image signatures (issue 14): what is signed, how a signature is checked, and what a stored
 * signature record looks like. No file system here: the store side is signatures-store.ts.
 *
 * What is signed is the image's digest (the SHA-256 of its index, which covers every file of the
 * rootfs through files.manifest), in cosign's "simple signing" payload:
 *
 *   {"critical":{"identity":{"docker-reference":"<name>"},
 *                "image":{"docker-manifest-digest":"sha256:<hex>"},
 *                "type":"cosign container image signature"},"optional":null}
 *
 * signed with Ed25519 over the payload's exact bytes. A record keeps the payload bytes, the
 * signature and the signer's key id (`sha256:` + hex SHA-256 of the public key's SPKI DER), so
 * that a verifier picks the right key without trying all of them.
 *
 * ARCHITECTURE NOTE: a signature is accepted only when (1) its key id names a trusted key, (2)
 * the signature verifies over the payload bytes with that key, (3) the payload parses as the
 * simple-signing type and (4) its digest is the digest of the image being checked. The identity
 * (the name signed) is reported, not enforced: a digest is what runs, and a digest signed under
 * one name is the same content under another.
 * LIMITATION: the digest is AEGIS's own image digest (not an OCI manifest digest), so a signature
 * made here is checked by AEGIS; cosign can read the payload and signature format but computes
 * the digest of a registry manifest instead.
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { ImageError } from './errors.js';
import type { Digest } from './ref.js';

export const SIGNATURE_TYPE = 'cosign container image signature';
/** A signature record larger than this is not read (stored data is untrusted). */
export const MAX_RECORD_BYTES = 64 * 1024;

export interface SignatureRecord {
  readonly v: 1;
  readonly keyId: string;
  /** The simple-signing payload, base64. */
  readonly payload: string;
  /** Ed25519 signature over the payload bytes, base64. */
  readonly signature: string;
}

/** The key id of a public key: `sha256:` + hex SHA-256 of its SPKI DER encoding. */
export function keyIdOf(publicKey: KeyObject): string {
  return `sha256:${createHash('sha256')
    .update(publicKey.export({ format: 'der', type: 'spki' }))
    .digest('hex')}`;
}

/** The payload bytes that are signed for `name` at `digest` (a fixed key order: the bytes are what is signed). */
export function signaturePayload(name: string, digest: Digest): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: { identity: { 'docker-reference': name }, image: { 'docker-manifest-digest': digest }, type: SIGNATURE_TYPE },
      optional: null,
    }),
  );
}

/** Signs `name`@`digest` with an Ed25519 private key. */
export function signImageDigest(name: string, digest: Digest, privateKey: KeyObject): SignatureRecord {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new ImageError('image.key_invalid', 'image signing keys are Ed25519');
  const payload = signaturePayload(name, digest);
  return {
    v: 1,
    keyId: keyIdOf(createPublicKey(privateKey)),
    payload: payload.toString('base64'),
    signature: sign(null, payload, privateKey).toString('base64'),
  };
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Parses a stored signature record (untrusted bytes): null when it is not one. */
export function parseSignatureRecord(text: string): SignatureRecord | null {
  if (text.length > MAX_RECORD_BYTES) return null;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const r = v as Record<string, unknown>;
  if (Object.keys(r).length !== 4 || r['v'] !== 1) return null;
  const { keyId, payload, signature } = r;
  if (typeof keyId !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(keyId)) return null;
  if (typeof payload !== 'string' || !B64.test(payload) || typeof signature !== 'string' || !B64.test(signature)) return null;
  return { v: 1, keyId, payload, signature };
}

/** What the payload says, or null when it is not a simple-signing payload. */
export function parsePayload(bytes: Buffer): { name: string; digest: string } | null {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
  const critical = (v as { critical?: unknown } | null)?.critical as Record<string, unknown> | undefined;
  if (typeof critical !== 'object' || critical === null || critical['type'] !== SIGNATURE_TYPE) return null;
  const name = (critical['identity'] as Record<string, unknown> | undefined)?.['docker-reference'];
  const digest = (critical['image'] as Record<string, unknown> | undefined)?.['docker-manifest-digest'];
  if (typeof name !== 'string' || typeof digest !== 'string') return null;
  return { name, digest };
}

export type SignatureCheck =
  | { readonly ok: true; readonly keyId: string; readonly name: string }
  | {
      readonly ok: false;
      /** `no_trusted_key`: no record is by a trusted key; `bad_signature`: one is, and does not verify; `wrong_digest`: it signs another image. */
      readonly reason: 'no_signature' | 'no_trusted_key' | 'bad_signature' | 'wrong_digest';
    };

/**
 * Checks the records of an image against the trusted keys (see the note at the top): ok when any
 * record by a trusted key is a valid signature of `digest`. The failure reported is the most
 * telling one met (a bad signature by a trusted key over a record by an unknown key).
 */
export function checkSignatures(digest: Digest, records: readonly SignatureRecord[], trusted: readonly KeyObject[]): SignatureCheck {
  if (records.length === 0) return { ok: false, reason: 'no_signature' };
  const byId = new Map(trusted.map((k) => [keyIdOf(k), k] as const));
  let worst: 'no_trusted_key' | 'bad_signature' | 'wrong_digest' = 'no_trusted_key';
  for (const r of records) {
    const key = byId.get(r.keyId);
    if (key === undefined) continue;
    const payload = Buffer.from(r.payload, 'base64');
    let valid = false;
    try {
      valid = verify(null, payload, key, Buffer.from(r.signature, 'base64'));
    } catch {
      valid = false;
    }
    if (!valid) {
      worst = 'bad_signature';
      continue;
    }
    const said = parsePayload(payload);
    if (said === null || said.digest !== digest) {
      if (worst !== 'bad_signature') worst = 'wrong_digest';
      continue;
    }
    return { ok: true, keyId: r.keyId, name: said.name };
  }
  return { ok: false, reason: worst };
}
