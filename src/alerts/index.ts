/**
 * Alerting: Sigma-compatible rules over the audit stream. Pure rules and engine (rule.ts,
 * selection.ts, condition.ts, engine.ts); rule files (load.ts) and the sink that raises
 * `alert.raised` events as a run's events are appended (sink.ts) around them.
 */
export { AlertError, type AlertErrorCode } from './errors.js';
export { type Alert, AlertEngine, type EngineEvent, type EngineOptions } from './engine.js';
export { type CompiledRule, compileRuleDoc, LEVELS, type Level, linkRules, type RuleDoc } from './rule.js';
export { AlertingSink, alertEvent } from './sink.js';
export { DEFAULT_PACK, loadRules, type LoadRulesOptions } from './load.js';
export {
  AlertDelivery,
  alertRecord,
  type AlertRecord,
  type AlertSinkAdapter,
  type DeliveryStats,
  PermanentDeliveryError,
  RetryingSink,
} from './deliver.js';
