/**
 * Alert rules: a Sigma-compatible subset over AEGIS audit events (pure). Rule files are YAML,
 * one rule per document (`---` between rules), validated with line/column errors like
 * manifests (rule-file.ts), and compiled once into predicates (here: from the validated
 * documents, without the YAML parser or zod, so cached documents compile fast).
 *
 * A detection rule (Sigma rule):            A correlation rule (Sigma correlation rule):
 *   title: Policy denial                      title: Burst of denied destinations
 *   id: aegis-policy-denial                   id: aegis-net-denial-burst
 *   level: medium                             level: high
 *   logsource: { product: aegis }             correlation:
 *   detection:                                  type: event_count | value_count | temporal
 *     selection: { decision: deny }             rules: [aegis-net-denial]
 *     condition: selection                      group-by: [actor.execution]
 *                                               timespan: 10s
 *                                               condition: { gte: 10 }   # value_count: field: x
 *                                               generate: false          # base rules alert too?
 *
 * Correlations refer to rules by `id` or `name`. As in the Sigma correlation specification, a
 * rule referenced by a correlation raises no alert of its own unless a referencing
 * correlation says `generate: true`.
 */
import { type Condition, evalCondition as evalCond, parseCondition } from './condition.js';
import { AlertError } from './errors.js';
import { compileSelection, type Predicate } from './selection.js';

export const LEVELS = ['informational', 'low', 'medium', 'high', 'critical'] as const;
export type Level = (typeof LEVELS)[number];

/** Rule files larger than this are refused before parsing. */
export const MAX_RULE_FILE_BYTES = 1024 * 1024;

export interface Threshold {
  readonly gt?: number | undefined;
  readonly gte?: number | undefined;
  readonly lt?: number | undefined;
  readonly lte?: number | undefined;
  readonly eq?: number | undefined;
  readonly field?: string | undefined;
}

/** A validated rule document (rule-file.ts checks the shape; cached documents are re-checked here). */
export interface RuleDoc {
  readonly id: string;
  readonly name?: string | undefined;
  readonly title: string;
  readonly level: Level;
  readonly description?: string | undefined;
  readonly detection?: Readonly<Record<string, unknown>>;
  readonly correlation?: {
    readonly type: 'event_count' | 'value_count' | 'temporal';
    readonly rules: readonly string[];
    readonly 'group-by'?: readonly string[] | undefined;
    /** Milliseconds (rule-file.ts converts `30s`, `5m`, ...). */
    readonly timespan: number;
    readonly condition?: Threshold | undefined;
    readonly generate?: boolean | undefined;
  };
}

export interface CompiledDetection {
  readonly kind: 'detection';
  readonly id: string;
  readonly name: string | undefined;
  readonly title: string;
  readonly level: Level;
  readonly description: string | undefined;
  readonly matches: Predicate;
  /** Prefilter on the event's action (null: any action may match). */
  readonly actions: ActionFilter | null;
  /** Where the rule came from (file:line), for listings. */
  readonly source: string;
}

export interface CompiledCorrelation {
  readonly kind: 'correlation';
  readonly id: string;
  readonly name: string | undefined;
  readonly title: string;
  readonly level: Level;
  readonly description: string | undefined;
  readonly type: 'event_count' | 'value_count' | 'temporal';
  /** Ids of the referenced detection rules (names resolved). */
  readonly rules: readonly string[];
  readonly groupBy: readonly string[];
  readonly timespanMs: number;
  readonly threshold: Threshold | undefined;
  readonly generate: boolean;
  readonly source: string;
}

export type CompiledRule = CompiledDetection | CompiledCorrelation;
/** A problem in a rule, with the path of the offending part. */
export class RuleProblem extends Error {
  constructor(
    readonly path: readonly string[],
    message: string,
  ) {
    super(message);
  }
}

/**
 * Actions an event must have for the rule to possibly match (a prefilter the engine checks
 * first), or null when the rule may match any action. Derived only where it is certain: the
 * selections the condition requires outright (a single selection, or an `and` of them, never
 * under `not`/`or`), when one of them is a mapping with a plain `action` value or values, or
 * `action|startswith` prefixes.
 */
export interface ActionFilter {
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
}

function requiredRefs(c: Condition): string[] {
  if (c.kind === 'ref') return [c.name];
  if (c.kind === 'and') return [...requiredRefs(c.left), ...requiredRefs(c.right)];
  if (c.kind === 'quant' && (c.all || c.names.length === 1)) return [...c.names];
  return [];
}

function actionFilterOf(cond: Condition, sels: Record<string, unknown>): ActionFilter | null {
  for (const n of requiredRefs(cond)) {
    const sel = sels[n];
    if (sel === null || typeof sel !== 'object' || Array.isArray(sel)) continue;
    const m = sel as Record<string, unknown>;
    const vals = (v: unknown): string[] | null => {
      const xs = Array.isArray(v) ? v : [v];
      return xs.every((x) => typeof x === 'string') ? (xs as string[]).map((x) => x.toLowerCase()) : null;
    };
    if ('action' in m) {
      const xs = vals(m['action']);
      if (xs !== null) return { exact: new Set(xs), prefixes: [] };
    }
    if ('action|startswith' in m) {
      const xs = vals(m['action|startswith']);
      if (xs !== null) return { exact: new Set(), prefixes: xs };
    }
  }
  return null;
}

function compileDetection(d: Record<string, unknown>): { matches: Predicate; actions: ActionFilter | null } {
  const { condition, ...sels } = d;
  const names = Object.keys(sels);
  const preds = new Map<string, Predicate>();
  for (const n of names) {
    if (!/^[A-Za-z0-9_-]+$/.test(n))
      throw new RuleProblem(['detection', n], `detection.${n}: a selection name is letters, digits, "_" or "-"`);
    try {
      preds.set(n, compileSelection(sels[n]));
    } catch (e) {
      throw new RuleProblem(['detection', n], `detection.${n}: ${(e as Error).message}`);
    }
  }
  let cond: Condition;
  try {
    cond = parseCondition(condition as string, names);
  } catch (e) {
    throw new RuleProblem(['detection', 'condition'], `detection.condition: ${(e as Error).message}`);
  }
  const actions = actionFilterOf(cond, sels);
  // Selections are pure functions of the event: evaluating one twice (a name used twice in the
  // condition) costs time, not correctness, so no per-event cache is allocated.
  const matched =
    (event: unknown) =>
    (n: string): boolean =>
      preds.get(n)!(event);
  return { matches: (event) => evalCond(cond, matched(event)), actions };
}

/**
 * Compiles one validated rule document. Throws RuleProblem (with the path of the offending part)
 * for what only compiling can find: bad selections, conditions, modifiers, thresholds.
 */
export function compileRuleDoc(doc: RuleDoc, source: string): CompiledRule {
  const base = { id: doc.id, name: doc.name, title: doc.title, level: doc.level, description: doc.description, source };
  if (!(LEVELS as readonly string[]).includes(doc.level) || typeof doc.id !== 'string' || typeof doc.title !== 'string')
    throw new RuleProblem([], 'not a rule document');
  if (doc.correlation !== undefined) {
    const c = doc.correlation;
    if (
      !['event_count', 'value_count', 'temporal'].includes(c.type) ||
      !Array.isArray(c.rules) ||
      typeof c.timespan !== 'number' ||
      !(c.timespan > 0)
    )
      throw new RuleProblem(['correlation'], 'correlation: not a valid correlation');
    if (c.type === 'value_count' && c.condition?.field === undefined)
      throw new RuleProblem(['correlation', 'condition'], 'correlation.condition: value_count needs a field');
    if (c.type !== 'temporal' && c.condition === undefined)
      throw new RuleProblem(['correlation'], `correlation.condition: ${c.type} needs a condition (e.g. gte: 10)`);
    return {
      kind: 'correlation',
      ...base,
      type: c.type,
      rules: [...c.rules],
      groupBy: [...(c['group-by'] ?? [])],
      timespanMs: c.timespan,
      threshold: c.condition,
      generate: c.generate ?? false,
    };
  }
  if (doc.detection === undefined || typeof doc.detection !== 'object') throw new RuleProblem([], 'a rule needs detection or correlation');
  return { kind: 'detection', ...base, ...compileDetection(doc.detection as Record<string, unknown>) };
}

/**
 * Checks a rule set as a whole: unique ids and names, correlations referring to existing
 * detection rules (resolving names to ids). Returns the set with references resolved.
 */
export function linkRules(rules: readonly CompiledRule[]): CompiledRule[] {
  const byKey = new Map<string, CompiledRule>();
  for (const r of rules) {
    for (const k of [r.id, r.name]) {
      if (k === undefined) continue;
      const prior = byKey.get(k);
      if (prior !== undefined && prior !== r)
        throw new AlertError('alerts.rule_invalid', `${r.source}: "${k}" is already the id or name of the rule at ${prior.source}`);
      byKey.set(k, r);
    }
  }
  return rules.map((r) => {
    if (r.kind === 'detection') return r;
    const ids = r.rules.map((k) => {
      const t = byKey.get(k);
      if (t === undefined) throw new AlertError('alerts.rule_invalid', `${r.source}: correlation.rules: no rule "${k}"`);
      if (t.kind !== 'detection')
        throw new AlertError(
          'alerts.rule_invalid',
          `${r.source}: correlation.rules: "${k}" is a correlation (only detection rules can be counted)`,
        );
      return t.id;
    });
    return { ...r, rules: ids };
  });
}
