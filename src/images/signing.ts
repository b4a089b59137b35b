/**
 * Image signing keys and the host policy that requires signed images (issue 14).
 *
 * - `aegis image sign <ref> [--key <file>]`: the key is an Ed25519 PKCS#8 PEM private key file
 *   (refused when group or others may read it, as the audit log's keys are); without --key,
 *   `$AEGIS_HOME/image-signing.key` is used, created on first use (0600) with its public half in
 *   `image-signing.pub` (SPKI PEM) beside it, which is the file verifiers are given.
 * - Host policy: AEGIS_IMAGE_TRUSTED_KEYS (AegisConfig.imageTrustedKeys) lists public key files;
 *   when set, every image an agent runs on must carry a valid signature by one of them, checked
 *   after the image's own integrity check and before anything is started (fail secure: a key
 *   file that cannot be read refuses every run rather than running unchecked).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createKeyFile, readKeyFile } from '../host/key-file.js';
import { ImageError } from './errors.js';
import type { Digest } from './ref.js';
import { checkSignatures, keyIdOf } from './signature.js';
import { readSignatures } from './store.js';

export const DEFAULT_SIGNING_KEY = 'image-signing.key';
export const DEFAULT_SIGNING_PUB = 'image-signing.pub';

function privateKeyOf(pem: string, where: string): KeyObject {
  try {
    const key = createPrivateKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('not Ed25519');
    return key;
  } catch (cause) {
    throw new ImageError('image.key_invalid', `${where} is not an Ed25519 PKCS#8 PEM private key`, { cause });
  }
}

export interface SigningKey {
  readonly key: KeyObject;
  readonly keyId: string;
  readonly path: string;
  /** The public half's file, when AEGIS made the key (default key only). */
  readonly publicPath?: string;
  readonly created: boolean;
}

/** The signing key from `file`, or the default key under `home` (created on first use). */
export async function loadSigningKey(file: string | undefined, home: string): Promise<SigningKey> {
  const tooOpen = (p: string) => new ImageError('image.key_invalid', `${p} must not be readable by group or others (chmod 600)`);
  if (file !== undefined) {
    const r = await readKeyFile(file).catch((cause: unknown) => {
      throw new ImageError('image.key_invalid', `cannot read ${file}: ${(cause as Error).message}`, { cause });
    });
    if (r.kind === 'missing') throw new ImageError('image.key_invalid', `${file} does not exist`);
    if (r.kind === 'too_open') throw tooOpen(file);
    const key = privateKeyOf(r.text, file);
    return { key, keyId: keyIdOf(createPublicKey(key)), path: file, created: false };
  }
  const path = join(home, DEFAULT_SIGNING_KEY);
  const publicPath = join(home, DEFAULT_SIGNING_PUB);
  let r = await readKeyFile(path);
  let created = false;
  if (r.kind === 'missing') {
    await mkdir(home, { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ed25519');
    r = await createKeyFile(path, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
    created = true;
  }
  if (r.kind !== 'ok') throw tooOpen(path);
  const key = privateKeyOf(r.text, path);
  const pub = createPublicKey(key);
  await writeFile(publicPath, pub.export({ format: 'pem', type: 'spki' }).toString(), { mode: 0o644 });
  return { key, keyId: keyIdOf(pub), path, publicPath, created };
}

/** Ed25519 public keys (SPKI PEM) from files; image.key_invalid names the first that is not one. */
export async function readPublicKeys(files: readonly string[]): Promise<KeyObject[]> {
  const keys: KeyObject[] = [];
  for (const f of files) {
    let pem: string;
    try {
      pem = await readFile(f, 'utf8');
    } catch (cause) {
      throw new ImageError('image.key_invalid', `cannot read the public key ${f}: ${(cause as Error).message}`, { cause });
    }
    let key: KeyObject;
    try {
      key = createPublicKey(pem);
    } catch (cause) {
      throw new ImageError('image.key_invalid', `${f} is not a PEM public key`, { cause });
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new ImageError('image.key_invalid', `${f} is not an Ed25519 public key`);
    keys.push(key);
  }
  return keys;
}

/**
 * The host policy's check before a run: the image at `digest` must be signed by one of the
 * trusted keys. Returns the signer's key id; throws image.signature_missing (no signature by a
 * trusted key) or image.signature_invalid (one does not verify, or signs another image).
 */
export async function requireSignedImage(
  imagesDir: string,
  image: { ref: string; digest: string },
  trustedKeyFiles: readonly string[],
): Promise<{ keyId: string }> {
  const trusted = await readPublicKeys(trustedKeyFiles);
  const digest = image.digest as Digest;
  const r = checkSignatures(digest, readSignatures(imagesDir, digest), trusted);
  if (r.ok) return { keyId: r.keyId };
  const how = `sign it with \`aegis image sign ${image.ref} --key <key>\` using a key whose public half is in AEGIS_IMAGE_TRUSTED_KEYS`;
  if (r.reason === 'no_signature' || r.reason === 'no_trusted_key')
    throw new ImageError(
      'image.signature_missing',
      `image ${image.ref} (${digest}) has no signature by a trusted key and this host requires one: ${how}`,
    );
  throw new ImageError(
    'image.signature_invalid',
    r.reason === 'bad_signature'
      ? `image ${image.ref} (${digest}) carries a signature by a trusted key that does not verify: the signature or the image was altered`
      : `image ${image.ref} (${digest}) carries a trusted key's signature of another image`,
  );
}
