/**
 * Base class of every error AEGIS reports on purpose.
 *
 * Error codes are part of the API: each area (manifest, policy, sandbox, gateway, audit, ...)
 * declares its own union of codes and a subclass that narrows `code` to it. Callers and tests
 * branch on `code`, never on the message text, which may be reworded.
 */
export class AegisError<C extends string = string> extends Error {
  readonly code: C;
  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** True when `err` is an AegisError (of any area); narrows for `err.code` checks. */
export function isAegisError(err: unknown): err is AegisError {
  return err instanceof AegisError;
}
