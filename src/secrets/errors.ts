/** Errors of the secrets area. Codes are API: callers and tests branch on `code`. */
import { AegisError } from '../errors.js';

export type SecretsErrorCode =
  /** A secret name is not `[a-z0-9][a-z0-9._-]{0,127}` (the grammar of `secret:<name>` in agent.yaml). */
  | 'secrets.name_invalid'
  /** `--hosts` is empty or an entry is not a host name or `*.suffix` (no ports, no addresses). */
  | 'secrets.hosts_invalid'
  /** `--header` is not an HTTP field name AEGIS may set. */
  | 'secrets.header_invalid'
  /** The value is empty, too long, or has a NUL, CR or LF byte. */
  | 'secrets.value_invalid'
  /** `--expires` (or the rotation overlap) is not a duration such as 30d, 12h, 15m, 90s. */
  | 'secrets.duration_invalid'
  /** `set` of a name that exists (use `rotate`, or `rm` first). */
  | 'secrets.exists'
  /** `rotate` / `rm` of a name that is not in the store. */
  | 'secrets.not_found'
  /** `aegis run`: the manifest references a secret that is not in the store. */
  | 'secrets.missing'
  /** `aegis run`: the secret's current version has expired. */
  | 'secrets.expired'
  /** `aegis run`: none of the secret's hosts is permitted by the manifest's network.allow. */
  | 'secrets.unbound'
  /** The store or its key cannot be read or written. */
  | 'secrets.store_io'
  /** The store file does not parse, or a value does not decrypt (wrong key, moved or edited data). */
  | 'secrets.store_corrupt'
  /** The store directory or a file in it is readable or writable by group or others, or not ours. */
  | 'secrets.store_insecure';

export class SecretsError extends AegisError<SecretsErrorCode> {
  /** The secret concerned, when there is one (never its value). */
  readonly secret: string | undefined;
  constructor(code: SecretsErrorCode, message: string, options?: { cause?: unknown; secret?: string }) {
    super(code, message, options);
    this.secret = options?.secret;
  }
}
