/**
 * The audit log's public entry points. `openAuditLog({ home, env })` is what `aegis run`, the gateway
 * and the server call; everything else is for the `aegis audit` commands and tests.
 *
 * Configuration (the AEGIS_AUDIT_* variables, read by src/config and passed in as `env`; every
 * default is the restrictive or self-contained one):
 *   AEGIS_AUDIT_STORE           `file` (default: $AEGIS_HOME/audit/) or a postgres:// URL
 *   AEGIS_AUDIT_PUBLISH         `file:<dir>` (default: $AEGIS_HOME/audit-published/), an
 *                               http(s):// webhook, or `none`
 *   AEGIS_AUDIT_ORIGIN          checkpoint origin (default: aegis.local/audit/<key hash>)
 *   AEGIS_AUDIT_RETENTION_DAYS  payload retention in days (default 90; 0 keeps forever)
 *   AEGIS_AUDIT_SIGNING_KEY[_FILE], AEGIS_AUDIT_MASTER_KEY[_FILE]: see key-files.ts
 *   AEGIS_AUDIT_PUBKEY          trusted verifier key for `aegis audit verify` (string or file)
 */
import { createHash, createPublicKey } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type NoteVerifier,
  encodeVerifierKey,
  noteSigner,
  noteVerifier,
  parseVerifierKey,
  rawEd25519PublicKey,
} from './checkpoint/note.js';
import { deriveMasterKeys } from './envelope.js';
import { AuditError } from './errors.js';
import { type Env, loadMasterKey, loadSigningKey, readMasterKey, readPublicKeyFile, writePublicKeyFile } from './key-files.js';
import { type AuditLogOptions, AuditLog } from './log.js';
import { FileSink, readPublished, sinkFromSpec } from './publish.js';
import { AuditReader } from './reader.js';
import { FileStore } from './store/file-store.js';
import type { AuditStore } from './store/types.js';

export { AuditLog, type AuditLogOptions, type Clock, type DecryptedEntry, type Timers } from './log.js';
export { AuditError, type AuditErrorCode } from './errors.js';
export { AuditReader, type AuditReaderOptions } from './reader.js';
export type { AuditActor, AuditDecision, AuditEvent, AuditEventInput, AuditSink } from './event.js';
export type { AuditStore } from './store/types.js';
export { verifyLog, type VerifyResult } from './verify.js';

export interface AuditPaths {
  /** The store directory (embedded store, key files, log.pub). */
  readonly dir: string;
  /** Default publication directory for checkpoints (a second file, outside the store). */
  readonly publishedDir: string;
}

export function auditPaths(home: string): AuditPaths {
  return { dir: join(home, 'audit'), publishedDir: join(home, 'audit-published') };
}

/**
 * Opens the store named by AEGIS_AUDIT_STORE (default: the embedded file store). `readOnly`:
 * for readers (nothing created, migrated, locked or repaired; writes refused).
 */
export async function openStore(home: string, env: Env, opts: { readonly readOnly?: boolean } = {}): Promise<AuditStore> {
  const spec = env['AEGIS_AUDIT_STORE'];
  const readOnly = opts.readOnly === true;
  if (spec === undefined || spec === '' || spec === 'file') return FileStore.open(auditPaths(home).dir, { readOnly });
  if (spec.startsWith('postgres://') || spec.startsWith('postgresql://')) {
    const { PgStore } = await import('./store/pg-store.js');
    const ca = env['AEGIS_AUDIT_PG_CA'];
    return PgStore.open({
      url: spec,
      schema: env['AEGIS_AUDIT_PG_SCHEMA'] ?? 'aegis_audit',
      readOnly,
      ...(ca !== undefined && ca !== '' ? { ca } : {}),
    });
  }
  throw new AuditError('audit.config_invalid', `AEGIS_AUDIT_STORE must be "file" or a postgres:// URL`);
}

function retentionFrom(env: Env): number {
  const text = env['AEGIS_AUDIT_RETENTION_DAYS'];
  if (text === undefined || text === '') return 90;
  const days = /^[0-9]{1,6}$/u.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(days)) throw new AuditError('audit.config_invalid', 'AEGIS_AUDIT_RETENTION_DAYS must be a whole number of days');
  return days;
}

/** Default origin: stable per signing key (C2SP origins must be unique per log). */
export function defaultOrigin(rawPublicKey: Uint8Array): string {
  return `aegis.local/audit/${createHash('sha256').update(rawPublicKey).digest('hex').slice(0, 16)}`;
}

/**
 * The publication sink AEGIS_AUDIT_PUBLISH names and the checkpoints already published there.
 * A key pinned in the publication directory must be this log's (else audit.store_corrupt).
 */
async function publication(
  env: Env,
  paths: AuditPaths,
  vkey: string,
): Promise<{ sink: ReturnType<typeof sinkFromSpec>; published: string[] }> {
  const sink = sinkFromSpec(env['AEGIS_AUDIT_PUBLISH'], paths.publishedDir);
  if (!(sink instanceof FileSink)) return { sink, published: [] };
  const p = await readPublished(sink.dir);
  if (p.pinnedKey !== undefined && p.pinnedKey !== vkey) {
    throw new AuditError('audit.store_corrupt', `the key pinned in ${sink.dir}/log.pub is not this log's signing key`);
  }
  return { sink, published: p.notes };
}

export interface OpenAuditLogOptions extends Partial<
  Omit<AuditLogOptions, 'signer' | 'verifier' | 'origin' | 'masterKeys' | 'sink' | 'store'>
> {
  /** $AEGIS_HOME. */
  readonly home: string;
  /** The AEGIS_AUDIT_* settings (src/config reads the environment once and passes them in). */
  readonly env: Env;
  /** A store to use instead of the one AEGIS_AUDIT_STORE names (tests). */
  readonly store?: AuditStore;
}

/** Opens (creating on first use: directory, keys, log.pub) the audit log under `home`. */
export async function openAuditLog(opts: OpenAuditLogOptions): Promise<AuditLog> {
  const env = opts.env;
  const paths = auditPaths(opts.home);
  const privateKey = await loadSigningKey(paths.dir, env);
  const raw = rawEd25519PublicKey(createPublicKey(privateKey));
  const origin = env['AEGIS_AUDIT_ORIGIN'] || defaultOrigin(raw);
  const signer = noteSigner(origin, privateKey);
  const verifier = noteVerifier(origin, raw);
  const vkey = encodeVerifierKey(verifier);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const existing = await readPublicKeyFile(paths.dir);
  if (existing === undefined) await writePublicKeyFile(paths.dir, vkey);
  else if (existing !== vkey) throw new AuditError('audit.key_invalid', `${join(paths.dir, 'log.pub')} does not match the signing key`);
  const masterKeys = deriveMasterKeys(await loadMasterKey(paths.dir, env));
  const { sink, published } = await publication(env, paths, vkey);
  const retentionDays = opts.retentionDays ?? retentionFrom(env);
  if (!Number.isInteger(retentionDays) || retentionDays < 0)
    throw new AuditError('audit.config_invalid', 'retentionDays must be a whole number of days');
  const store = opts.store ?? (await openStore(opts.home, env));
  try {
    return await AuditLog.open({ ...opts, store, signer, verifier, origin, masterKeys, sink, published, retentionDays });
  } catch (err) {
    await store.close();
    throw err;
  }
}

export interface OpenAuditReaderOptions {
  /** $AEGIS_HOME. */
  readonly home: string;
  /** The AEGIS_AUDIT_* settings (src/config reads the environment once and passes them in). */
  readonly env: Env;
  /** A store to use instead of the one AEGIS_AUDIT_STORE names, opened read-only (tests). */
  readonly store?: AuditStore;
}

/**
 * Opens the existing audit log under `home` for reading only: every `aegis audit` read command
 * and the server use this. Changes nothing under `home` or in the store (see reader.ts). The
 * log key is the store's log.pub (which a writer checks against its signing key), else the public
 * half of a signing key given in the environment, and must match the key pinned in the
 * publication directory; the master key must exist (no log without one).
 */
export async function openAuditReader(opts: OpenAuditReaderOptions): Promise<AuditReader> {
  const env = opts.env;
  const paths = auditPaths(opts.home);
  let vkey = await readPublicKeyFile(paths.dir);
  if (vkey === undefined && (env['AEGIS_AUDIT_SIGNING_KEY'] || env['AEGIS_AUDIT_SIGNING_KEY_FILE'])) {
    // A shared (PostgreSQL) log read on a host that never wrote to it: the key comes from the
    // environment (loadSigningKey only reads when the key is given there).
    const raw = rawEd25519PublicKey(createPublicKey(await loadSigningKey(paths.dir, env)));
    vkey = encodeVerifierKey(noteVerifier(env['AEGIS_AUDIT_ORIGIN'] || defaultOrigin(raw), raw));
  }
  if (vkey === undefined) throw new AuditError('audit.store_io', `no audit log under ${opts.home} (nothing has been logged yet)`);
  const verifier = parseVerifierKey(vkey);
  const origin = env['AEGIS_AUDIT_ORIGIN'] || verifier.name;
  if (origin !== verifier.name)
    throw new AuditError(
      'audit.key_invalid',
      `${join(paths.dir, 'log.pub')} is for origin ${verifier.name}, not AEGIS_AUDIT_ORIGIN ${origin}`,
    );
  const master = await readMasterKey(paths.dir, env);
  if (master === undefined)
    throw new AuditError(
      'audit.key_invalid',
      `no master key: ${join(paths.dir, 'master.key')} does not exist and AEGIS_AUDIT_MASTER_KEY[_FILE] is not set`,
    );
  const { published } = await publication(env, paths, vkey);
  const store = opts.store ?? (await openStore(opts.home, env, { readOnly: true }));
  try {
    return await AuditReader.open({ store, verifier, origin, masterKeys: deriveMasterKeys(master), published });
  } catch (err) {
    await store.close();
    throw err;
  }
}

/**
 * The key `aegis audit verify` trusts, in order: AEGIS_AUDIT_PUBKEY (key or file), the key
 * pinned in the publication directory, the store's log.pub. Also returns the store's log.pub
 * so the caller can report a replaced key.
 */
export async function trustedVerifier(
  home: string,
  env: Env,
  override?: string,
): Promise<{ verifier: NoteVerifier; source: string; storeKey?: string }> {
  const paths = auditPaths(home);
  const storeKey = await readPublicKeyFile(paths.dir);
  const fromSpec = async (spec: string, what: string): Promise<NoteVerifier> => {
    const text = spec.includes('+')
      ? spec
      : await readFile(spec, 'utf8').catch((cause: unknown) => {
          throw new AuditError('audit.key_invalid', `cannot read ${what} ${spec}`, { cause });
        });
    return parseVerifierKey(text);
  };
  const given = override ?? env['AEGIS_AUDIT_PUBKEY'];
  const base = storeKey === undefined ? {} : { storeKey };
  if (given !== undefined && given !== '') return { verifier: await fromSpec(given, 'public key'), source: 'given key', ...base };
  const publishSpec = env['AEGIS_AUDIT_PUBLISH'];
  const sink = sinkFromSpec(publishSpec, paths.publishedDir);
  if (sink instanceof FileSink) {
    const p = await readPublished(sink.dir);
    if (p.pinnedKey !== undefined) return { verifier: parseVerifierKey(p.pinnedKey), source: `${sink.dir}/log.pub`, ...base };
  }
  if (storeKey === undefined)
    throw new AuditError('audit.key_invalid', `no public key: ${join(paths.dir, 'log.pub')} does not exist (no log yet?)`);
  return { verifier: parseVerifierKey(storeKey), source: join(paths.dir, 'log.pub'), ...base };
}

/** Published checkpoints from the file sink (empty for webhook / none). */
export async function publishedCheckpoints(home: string, env: Env): Promise<string[]> {
  const sink = sinkFromSpec(env['AEGIS_AUDIT_PUBLISH'], auditPaths(home).publishedDir);
  return sink instanceof FileSink ? (await readPublished(sink.dir)).notes : [];
}

export { encodeVerifierKey };
