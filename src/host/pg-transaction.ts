/**
 * One PostgreSQL transaction on a pooled client, the way every AEGIS store on PostgreSQL runs
 * them (the audit log's store, the server's store): BEGIN, the work, COMMIT; on any error a
 * ROLLBACK (its own failure ignored) and the error mapped by the caller to its area's code; the
 * client is always released.
 */
import type pg from 'pg';

export async function inTransaction<T>(
  pool: pg.Pool,
  fn: (c: pg.PoolClient) => Promise<T>,
  errors: { readonly connect: (err: unknown) => Error; readonly failed: (err: unknown) => Error },
): Promise<T> {
  let c: pg.PoolClient;
  try {
    c = await pool.connect();
  } catch (err) {
    throw errors.connect(err);
  }
  try {
    await c.query('BEGIN');
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw errors.failed(err);
  } finally {
    c.release();
  }
}
