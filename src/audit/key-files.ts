/**
 * Key material of the log, from environment variables or files under the audit directory.
 *
 * - Signing key (Ed25519): $AEGIS_AUDIT_SIGNING_KEY (PKCS#8 PEM), else the file named by
 *   $AEGIS_AUDIT_SIGNING_KEY_FILE, else <audit dir>/log.key, generated on first use with mode 0600.
 * - Master key (32 bytes, base64): $AEGIS_AUDIT_MASTER_KEY, else $AEGIS_AUDIT_MASTER_KEY_FILE,
 *   else <audit dir>/master.key, generated on first use with mode 0600.
 * - Public key: <audit dir>/log.pub holds the C2SP note verifier key, written on first use.
 * Key files readable by group or others are refused (audit.key_invalid): a key that leaked is no key.
 */
import { type KeyObject, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createKeyFile as createHostKeyFile, readKeyFile as readHostKeyFile } from '../host/key-file.js';
import { AuditError } from './errors.js';

export type Env = Readonly<Record<string, string | undefined>>;

/** A key file's text, undefined when it does not exist; audit.key_invalid when others may read it. */
async function readKeyFile(path: string): Promise<string | undefined> {
  const r = await readHostKeyFile(path);
  if (r.kind === 'too_open') throw new AuditError('audit.key_invalid', `${path} must not be readable by group or others (chmod 600)`);
  return r.kind === 'ok' ? r.text : undefined;
}

/** Creates `path` with `content` unless it exists (then another process won: use theirs). */
async function createKeyFile(path: string, content: string): Promise<string> {
  const r = await createHostKeyFile(path, content);
  if (r.kind === 'too_open') throw new AuditError('audit.key_invalid', `${path} must not be readable by group or others (chmod 600)`);
  return r.kind === 'ok' ? r.text : content;
}

function parsePrivateKey(pem: string, where: string): KeyObject {
  try {
    const key = createPrivateKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('not Ed25519');
    return key;
  } catch (cause) {
    throw new AuditError('audit.key_invalid', `${where} is not an Ed25519 PKCS#8 PEM private key`, { cause });
  }
}

export async function loadSigningKey(auditDir: string, env: Env): Promise<KeyObject> {
  const inline = env['AEGIS_AUDIT_SIGNING_KEY'];
  if (inline !== undefined && inline !== '') return parsePrivateKey(inline, 'AEGIS_AUDIT_SIGNING_KEY');
  const file = env['AEGIS_AUDIT_SIGNING_KEY_FILE'];
  if (file !== undefined && file !== '') {
    const pem = await readKeyFile(file);
    if (pem === undefined) throw new AuditError('audit.key_invalid', `AEGIS_AUDIT_SIGNING_KEY_FILE ${file} does not exist`);
    return parsePrivateKey(pem, file);
  }
  await mkdir(auditDir, { recursive: true, mode: 0o700 });
  const path = join(auditDir, 'log.key');
  let pem = await readKeyFile(path);
  if (pem === undefined) {
    const { privateKey } = generateKeyPairSync('ed25519');
    pem = await createKeyFile(path, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
  }
  return parsePrivateKey(pem, path);
}

function parseMaster(text: string, where: string): Uint8Array {
  const b = Buffer.from(text.trim(), 'base64');
  if (b.length !== 32) throw new AuditError('audit.key_invalid', `${where} must be 32 bytes, base64-encoded`);
  return new Uint8Array(b);
}

/** The master key if one is configured or exists; never creates one (readers). */
export async function readMasterKey(auditDir: string, env: Env): Promise<Uint8Array | undefined> {
  const inline = env['AEGIS_AUDIT_MASTER_KEY'];
  if (inline !== undefined && inline !== '') return parseMaster(inline, 'AEGIS_AUDIT_MASTER_KEY');
  const file = env['AEGIS_AUDIT_MASTER_KEY_FILE'];
  if (file !== undefined && file !== '') {
    const text = await readKeyFile(file);
    if (text === undefined) throw new AuditError('audit.key_invalid', `AEGIS_AUDIT_MASTER_KEY_FILE ${file} does not exist`);
    return parseMaster(text, file);
  }
  const path = join(auditDir, 'master.key');
  const text = await readKeyFile(path);
  return text === undefined ? undefined : parseMaster(text, path);
}

/** The master key, generated into <audit dir>/master.key on first use (writers). */
export async function loadMasterKey(auditDir: string, env: Env): Promise<Uint8Array> {
  const existing = await readMasterKey(auditDir, env);
  if (existing !== undefined) return existing;
  await mkdir(auditDir, { recursive: true, mode: 0o700 });
  const path = join(auditDir, 'master.key');
  return parseMaster(await createKeyFile(path, `${randomBytes(32).toString('base64')}\n`), path);
}

/** Reads the signing key's public half only (for commands that must not create keys). */
export async function readPublicKeyFile(auditDir: string): Promise<string | undefined> {
  try {
    return (await readFile(join(auditDir, 'log.pub'), 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function writePublicKeyFile(auditDir: string, verifierKey: string): Promise<void> {
  await writeFile(join(auditDir, 'log.pub'), `${verifierKey}\n`, { mode: 0o644 });
}
