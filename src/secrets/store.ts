/**
 * The secret store (adapter): one JSON file, `<dir>/secrets.json`, with every secret's metadata
 * in the clear and every value encrypted, beside `<dir>/master.key`. `dir` is
 * `$AEGIS_HOME/secrets` (src/cli passes it in).
 *
 * Encryption reuses the audit log's envelope (src/audit/envelope.ts) and key files
 * (src/audit/key-files.ts), with a master key of its own (`<dir>/master.key`, 32 random bytes,
 * 0600, created on the first `set`): each version of a value gets a fresh AES-256 data key; the
 * value is sealed with AES-256-GCM under it, with additional authenticated data naming the secret
 * and the version (a ciphertext copied to another name or version does not decrypt); the data key
 * is stored wrapped (AES-256-GCM under the key derived from the master key, AAD = its key id).
 * Removing a secret or pruning a version deletes its wrapped key.
 *
 * ARCHITECTURE NOTE: the directory is 0700 and the files 0600, owned by the user AEGIS runs as
 * (root, or the server's user); a store that group or others can read or write is refused
 * (`secrets.store_insecure`), as is a symlink. Writes take `<dir>/secrets.lock` (a pid-file lock,
 * src/host/pid-lock.ts) and replace the file atomically (write, fsync, rename).
 * LIMITATION: the master key lies on the same disk as the store, so encryption at rest protects
 * a copy of secrets.json made without master.key (a backup, a support bundle, a leaked file), not
 * the store against root on this host. Keep master.key out of backups that leave the host.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { decryptPayload, deriveMasterKeys, encryptPayload, KEY_BYTES, unwrapDataKey, wrapDataKey } from '../audit/envelope.js';
import { loadMasterKey, readMasterKey } from '../audit/key-files.js';
import { withPidLock } from '../host/pid-lock.js';
import { currentVersion, prunable, type SecretMeta, type VersionMeta } from './core.js';
import { SecretsError } from './errors.js';

const FORMAT = 'aegis-secrets/v1';
const STORE_FILE = 'secrets.json';
/** The audit key-file helpers read environment overrides; the secret store takes its key from its own file only. */
const NO_ENV = {};

interface StoredVersion extends VersionMeta {
  /** base64: nonce (12) || wrapped data key || tag. */
  readonly wrappedKey: string;
  /** base64: the value's 12-byte nonce. */
  readonly nonce: string;
  /** base64: AES-256-GCM ciphertext || tag. */
  readonly ciphertext: string;
}

interface StoredSecret extends Omit<SecretMeta, 'versions'> {
  readonly createdBy: string;
  readonly versions: readonly StoredVersion[];
}

interface StoreFile {
  readonly format: typeof FORMAT;
  readonly secrets: Readonly<Record<string, StoredSecret>>;
}

/** Key id of a version's data key (the AAD of its wrapping). */
const keyId = (name: string, version: number): string => `secret/${name}/v${version}`;
/** AAD of a value: binds the ciphertext to its secret and version. */
const valueAad = (name: string, version: number): Uint8Array => Buffer.from(`aegis-secret/v1\n${name}\n${version}\n`, 'utf8');

function corrupt(path: string, why: string): SecretsError {
  return new SecretsError('secrets.store_corrupt', `${path}: ${why}`);
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isB64 = (v: unknown): v is string => typeof v === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(v);
const intOrNull = (v: unknown): boolean => v === null || isInt(v);

/** Parses the store file (untrusted bytes: anything that does not check out is store_corrupt). */
function parseStore(text: string, path: string): StoreFile {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw corrupt(path, 'not JSON');
  }
  const o = v as Partial<StoreFile> | null;
  if (o === null || typeof o !== 'object' || o.format !== FORMAT || o.secrets === null || typeof o.secrets !== 'object')
    throw corrupt(path, `not an ${FORMAT} file`);
  for (const [name, s] of Object.entries(o.secrets)) {
    const ok =
      s !== null &&
      typeof s === 'object' &&
      s.name === name &&
      Array.isArray(s.hosts) &&
      s.hosts.every((h) => typeof h === 'string') &&
      (s.header === null || typeof s.header === 'string') &&
      isInt(s.createdAt) &&
      typeof s.createdBy === 'string' &&
      Array.isArray(s.versions) &&
      s.versions.length > 0 &&
      s.versions.every(
        (x) =>
          x !== null &&
          typeof x === 'object' &&
          isInt(x.version) &&
          isInt(x.createdAt) &&
          intOrNull(x.expiresAt) &&
          intOrNull(x.retiredAt) &&
          isB64(x.wrappedKey) &&
          isB64(x.nonce) &&
          isB64(x.ciphertext),
      ) &&
      s.versions.filter((x) => x.retiredAt === null).length === 1;
    if (!ok) throw corrupt(path, `entry ${JSON.stringify(name.slice(0, 64))} is malformed`);
  }
  return o as StoreFile;
}

/** Refuses a path that is a symlink, not ours, or open to group/others. */
async function checkPrivate(path: string, dir: boolean): Promise<boolean> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new SecretsError('secrets.store_io', `${path}: ${(err as Error).message}`, { cause: err });
  }
  const uid = process.geteuid?.();
  if ((dir ? !st.isDirectory() : !st.isFile()) || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0)
    throw new SecretsError(
      'secrets.store_insecure',
      `${path} must be a ${dir ? 'directory' : 'file'} owned by this user with mode ${dir ? '0700' : '0600'}`,
    );
  return true;
}

/** What `list` returns: metadata only, never a value. */
export interface SecretListing extends SecretMeta {
  readonly createdBy: string;
}

export interface WriteResult {
  readonly name: string;
  readonly version: number;
  /** Versions removed by this write (rotated out past the overlap, expired, or the whole secret for `rm`). */
  readonly dropped: readonly number[];
}

export class SecretStore {
  private readonly path: string;
  private constructor(readonly dir: string) {
    this.path = join(dir, STORE_FILE);
  }

  /** A store under `dir`; nothing is created until the first write. */
  static at(dir: string): SecretStore {
    return new SecretStore(dir);
  }

  /** Every secret's metadata, by name (empty when there is no store yet). Needs no key. */
  async list(): Promise<SecretListing[]> {
    const file = await this.read();
    return Object.values(file.secrets)
      .map((s) => ({
        ...s,
        versions: s.versions.map(({ version, createdAt, expiresAt, retiredAt }) => ({ version, createdAt, expiresAt, retiredAt })),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async get(name: string): Promise<SecretListing | undefined> {
    return (await this.list()).find((s) => s.name === name);
  }

  /** Adds a new secret (version 1). */
  async set(o: {
    name: string;
    hosts: readonly string[];
    header: string | null;
    value: Uint8Array;
    now: number;
    expiresAt: number | null;
    by: string;
  }): Promise<WriteResult> {
    return this.update(async (secrets) => {
      if (secrets[o.name] !== undefined)
        throw new SecretsError('secrets.exists', `secret ${o.name} exists: use "aegis secret rotate" for a new value, or rm it first`, {
          secret: o.name,
        });
      const v = await this.seal(o.name, 1, o.value, o.now, o.expiresAt);
      secrets[o.name] = { name: o.name, hosts: [...o.hosts], header: o.header, createdAt: o.now, createdBy: o.by, versions: [v] };
      return { name: o.name, version: 1, dropped: [] };
    });
  }

  /**
   * A new current version; the previous one is retired now and stays usable only by executions
   * already running, until `now + overlapMs` (core.validForRun). Older versions past the overlap
   * are dropped.
   */
  async rotate(o: { name: string; value: Uint8Array; now: number; expiresAt: number | null; overlapMs: number }): Promise<WriteResult> {
    return this.update(async (secrets) => {
      const s = secrets[o.name];
      if (s === undefined) throw new SecretsError('secrets.not_found', `no secret ${o.name}`, { secret: o.name });
      const cur = currentVersion(s);
      const version = Math.max(...s.versions.map((x) => x.version)) + 1;
      const next = await this.seal(o.name, version, o.value, o.now, o.expiresAt);
      const versions = s.versions.map((x) => (x.version === cur.version ? { ...x, retiredAt: o.now } : x));
      const kept = versions.filter((x) => !prunable(x, o.now, o.overlapMs));
      secrets[o.name] = { ...s, versions: [...kept, next] };
      return { name: o.name, version, dropped: versions.filter((x) => !kept.includes(x)).map((x) => x.version) };
    });
  }

  /** Removes a secret and every version's wrapped key (its values can no longer be decrypted). */
  async rm(name: string): Promise<WriteResult> {
    return this.update((secrets) => {
      const s = secrets[name];
      if (s === undefined) throw new SecretsError('secrets.not_found', `no secret ${name}`, { secret: name });
      delete secrets[name];
      return Promise.resolve({ name, version: currentVersion(s).version, dropped: s.versions.map((x) => x.version) });
    });
  }

  /**
   * The value of one version, decrypted (for the gateway half, and tests). The caller decides
   * whether the version may be used (core.validForRun).
   */
  async reveal(name: string, version: number): Promise<Uint8Array> {
    const s = (await this.read()).secrets[name];
    const v = s?.versions.find((x) => x.version === version);
    if (v === undefined) throw new SecretsError('secrets.not_found', `no version ${version} of secret ${name}`, { secret: name });
    const master = await readMasterKey(this.dir, NO_ENV).catch((cause: unknown) => {
      throw new SecretsError('secrets.store_io', `cannot read ${join(this.dir, 'master.key')}`, { cause });
    });
    if (master === undefined) throw new SecretsError('secrets.store_io', `${join(this.dir, 'master.key')} does not exist`);
    try {
      const dataKey = unwrapDataKey(deriveMasterKeys(master), keyId(name, version), Buffer.from(v.wrappedKey, 'base64'));
      return decryptPayload(dataKey, Buffer.from(v.nonce, 'base64'), Buffer.from(v.ciphertext, 'base64'), valueAad(name, version));
    } catch (cause) {
      throw new SecretsError('secrets.store_corrupt', `version ${version} of secret ${name} does not decrypt under this store's key`, {
        cause,
        secret: name,
      });
    }
  }

  private async seal(name: string, version: number, value: Uint8Array, now: number, expiresAt: number | null): Promise<StoredVersion> {
    let master: Uint8Array;
    try {
      master = await loadMasterKey(this.dir, NO_ENV);
    } catch (cause) {
      throw new SecretsError('secrets.store_io', `cannot load or create ${join(this.dir, 'master.key')}`, { cause });
    }
    const dataKey = randomBytes(KEY_BYTES);
    const nonce = randomBytes(12);
    const wrapped = wrapDataKey(deriveMasterKeys(master), keyId(name, version), dataKey, randomBytes(12));
    const ciphertext = encryptPayload(dataKey, nonce, value, valueAad(name, version));
    dataKey.fill(0);
    return {
      version,
      createdAt: now,
      expiresAt,
      retiredAt: null,
      wrappedKey: Buffer.from(wrapped).toString('base64'),
      nonce: nonce.toString('base64'),
      ciphertext: Buffer.from(ciphertext).toString('base64'),
    };
  }

  private async read(): Promise<StoreFile> {
    if (!(await checkPrivate(this.dir, true))) return { format: FORMAT, secrets: {} };
    if (!(await checkPrivate(this.path, false))) return { format: FORMAT, secrets: {} };
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (cause) {
      throw new SecretsError('secrets.store_io', `cannot read ${this.path}`, { cause });
    }
    return parseStore(text, this.path);
  }

  private async update(change: (secrets: Record<string, StoredSecret>) => Promise<WriteResult>): Promise<WriteResult> {
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
    } catch (cause) {
      throw new SecretsError('secrets.store_io', `cannot create ${this.dir}`, { cause });
    }
    await checkPrivate(this.dir, true);
    return withPidLock(
      join(this.dir, 'secrets.lock'),
      async () => {
        const secrets: Record<string, StoredSecret> = { ...(await this.read()).secrets };
        const result = await change(secrets);
        await this.write({ format: FORMAT, secrets });
        return result;
      },
      { error: (message, cause) => new SecretsError('secrets.store_io', message, { cause }) },
    );
  }

  private async write(file: StoreFile): Promise<void> {
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      await unlink(tmp).catch(() => undefined); // a leftover of a crashed write by a process with our pid
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(file, null, 1)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.path);
    } catch (cause) {
      await unlink(tmp).catch(() => undefined);
      throw new SecretsError('secrets.store_io', `cannot write ${this.path}`, { cause });
    }
  }
}
