/**
 * Helper program for server-cluster.test.ts: one `aegis serve` worker without the HTTP layer
 * (PostgreSQL store, real engine, the shared audit log on PostgreSQL, a Dispatcher). Prints
 * `ready` when it claims, stops cleanly on SIGTERM. Runs only with SERVER_CLUSTER_WORKER set to
 * its JSON settings.
 */
import { openAuditLog } from '../../src/audit/index.js';
import { loadConfig } from '../../src/config/index.js';
import { createEngine } from '../../src/orchestrator/index.js';
import { Dispatcher } from '../../src/server/dispatcher.js';
import { openPostgresStore } from '../../src/server/store/postgres.js';

export interface WorkerSettings {
  readonly pgUrl: string;
  readonly schema: string;
  readonly auditSchema: string;
  readonly workerId: string;
  readonly dataDir: string;
  readonly stateDir: string;
  readonly home: string;
  readonly capacity: number;
}

async function main(s: WorkerSettings): Promise<void> {
  const config = loadConfig({
    ...process.env,
    AEGIS_HOME: s.home,
    AEGIS_ALERT_RULES: 'none',
    AEGIS_AUDIT_STORE: s.pgUrl,
    AEGIS_AUDIT_PG_SCHEMA: s.auditSchema,
  });
  const log = await openAuditLog({ home: config.home, env: config.auditEnv, inlineEncoding: true });
  const engine = createEngine({ config, audit: log, stateDir: s.stateDir, graceMs: 300 });
  const recovered = await engine.recover();
  const store = await openPostgresStore(s.pgUrl, { schema: s.schema });
  const dispatcher = new Dispatcher({
    store,
    engine,
    workerId: s.workerId,
    dataDir: s.dataDir,
    capacity: s.capacity,
    audit: log,
    pollMs: 100,
    heartbeatMs: 200,
    staleMs: 1500,
    onError: (err, what) => process.stderr.write(`${s.workerId}: ${what}: ${err instanceof Error ? err.message : String(err)}\n`),
  });
  await dispatcher.start();
  process.stdout.write(`${JSON.stringify({ ready: s.workerId, recovered: recovered.map((r) => r.executionId) })}\n`);
  process.once('SIGTERM', () => {
    void (async () => {
      await dispatcher.stop();
      await engine.shutdown();
      await store.close();
      await log.close();
      process.exit(0);
    })();
  });
}

const settings = process.env['SERVER_CLUSTER_WORKER'];
if (settings !== undefined) {
  main(JSON.parse(settings) as WorkerSettings).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
