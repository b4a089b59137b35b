/** Test helper: a predicate for assert.throws/rejects that checks an AegisError's class and code. */
import type { AegisError } from '../errors.js';

/** `(err) => err instanceof cls && codes.includes(err.code)`; tests assert codes, never messages. */
export function hasCode<C extends string>(
  cls: abstract new (...args: never[]) => AegisError<C>,
  ...codes: readonly C[]
): (err: unknown) => boolean {
  return (err: unknown) => err instanceof cls && codes.includes(err.code);
}
