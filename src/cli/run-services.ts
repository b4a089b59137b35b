/** Moved to src/run/services.ts (shared by `aegis run` and the orchestrator); kept for importers. */
export * from '../run/services.js';
