/**
 * Configuration errors. The codes are API.
 */
import { AegisError } from '../errors.js';

export type ConfigErrorCode =
  /** A setting has a value AEGIS cannot use. */
  | 'config.invalid'
  /** AEGIS_HOME names a directory that does not exist. */
  | 'config.home_missing';

export class ConfigError extends AegisError<ConfigErrorCode> {}

/** The environment as read once (process.env in loadConfig). */
export type Env = Readonly<Record<string, string | undefined>>;
