/**
 * Alert rules: a Sigma-compatible subset over AEGIS audit events (pure). Rule files are YAML,
 * one rule per document (`---` between rules), validated with line/column errors like
 * manifests, and compiled once into predicates.
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
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Node as YamlNode } from 'yaml';
import { z } from 'zod';
import { type Condition, evalCondition as evalCond, parseCondition } from './condition.js';
import { AlertError } from './errors.js';
import { compileSelection, type Predicate } from './selection.js';

export const LEVELS = ['informational', 'low', 'medium', 'high', 'critical'] as const;
export type Level = (typeof LEVELS)[number];

/** Rule files larger than this are refused before parsing. */
export const MAX_RULE_FILE_BYTES = 1024 * 1024;

const ID = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{2,99}$/, 'must be 3-100 letters, digits, ".", "_" or "-" (a UUID works)');
const timespan = z
  .string()
  .regex(/^[1-9][0-9]{0,6}[smhd]$/, 'must be a number and a unit: 30s, 5m, 1h, 1d')
  .transform((s) => Number(s.slice(0, -1)) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[s.slice(-1) as 's' | 'm' | 'h' | 'd']);
const fieldPath = z.string().regex(/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/, 'must be a dotted field name, e.g. actor.execution');
const threshold = z
  .strictObject({ gt: z.number().optional(), gte: z.number().optional(), lt: z.number().optional(), lte: z.number().optional(), eq: z.number().optional(), field: fieldPath.optional() })
  .refine((c) => ['gt', 'gte', 'lt', 'lte', 'eq'].some((k) => k in c), 'needs one of gt, gte, lt, lte, eq');

const common = {
  title: z.string().min(1).max(256),
  id: ID,
  name: ID.optional(),
  status: z.enum(['stable', 'test', 'experimental', 'deprecated', 'unsupported']).optional(),
  description: z.string().max(4096).optional(),
  author: z.string().max(256).optional(),
  date: z.string().max(32).optional(),
  modified: z.string().max(32).optional(),
  references: z.array(z.string().max(1024)).max(50).optional(),
  tags: z.array(z.string().max(128)).max(50).optional(),
  falsepositives: z.array(z.string().max(1024)).max(50).optional(),
  level: z.enum(LEVELS),
};

const detectionRule = z.strictObject({
  ...common,
  logsource: z.strictObject({ product: z.literal('aegis'), service: z.literal('audit').optional(), category: z.string().optional() }).optional(),
  detection: z.record(z.string(), z.unknown()).refine((d) => typeof d['condition'] === 'string', 'needs a condition (a string)'),
  fields: z.array(z.string()).optional(),
});

const correlationRule = z.strictObject({
  ...common,
  correlation: z.strictObject({
    type: z.enum(['event_count', 'value_count', 'temporal']),
    rules: z.array(ID).min(1).max(20),
    'group-by': z.array(fieldPath).max(10).optional(),
    timespan,
    condition: threshold.optional(),
    generate: z.boolean().optional(),
  }),
});

export type Threshold = z.output<typeof threshold>;

export interface CompiledDetection {
  readonly kind: 'detection';
  readonly id: string;
  readonly name: string | undefined;
  readonly title: string;
  readonly level: Level;
  readonly description: string | undefined;
  readonly matches: Predicate;
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
class RuleProblem extends Error {
  constructor(
    readonly path: readonly string[],
    message: string,
  ) {
    super(message);
  }
}

function compileDetection(d: Record<string, unknown>): Predicate {
  const { condition, ...sels } = d;
  const names = Object.keys(sels);
  const preds = new Map<string, Predicate>();
  for (const n of names) {
    if (!/^[A-Za-z0-9_-]+$/.test(n)) throw new RuleProblem(['detection', n], `detection.${n}: a selection name is letters, digits, "_" or "-"`);
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
  // Each selection is evaluated at most once per event.
  return (event) => {
    const seen = new Map<string, boolean>();
    const matched = (n: string): boolean => {
      let v = seen.get(n);
      if (v === undefined) {
        v = preds.get(n)!(event);
        seen.set(n, v);
      }
      return v;
    };
    return evalCond(cond, matched);
  };
}

interface Located {
  readonly doc: unknown;
  readonly where: (path: readonly PropertyKey[]) => string;
  /** Position of key `key` in the mapping at `path`. */
  readonly whereKey: (path: readonly PropertyKey[], key: string) => string;
}

function positions(text: string, file: string): Located[] {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true, strict: true, prettyErrors: false, merge: false });
  if (!Array.isArray(docs)) throw new AlertError('alerts.rule_invalid', `${file}: not a YAML stream`);
  const out: Located[] = [];
  for (const doc of docs) {
    const pos = (o: number | undefined): string => {
      if (o === undefined) return file;
      const { line, col } = lc.linePos(o);
      return `${file}:${line}:${col}`;
    };
    for (const e of doc.errors) throw new AlertError('alerts.rule_invalid', `${pos(e.pos[0])}: YAML: ${e.message.split('\n')[0]}`);
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: 20 });
    } catch (e) {
      throw new AlertError('alerts.rule_invalid', `${pos(doc.range[0])}: YAML: ${(e as Error).message}`);
    }
    if (data === null || data === undefined) continue;
    const where = (path: readonly PropertyKey[]): string => {
      for (let n = path.length; n >= 0; n--) {
        const node = doc.getIn(path.slice(0, n) as unknown[], true) as YamlNode | undefined;
        if (node && (isMap(node) || isSeq(node) || isScalar(node)) && node.range) return pos(node.range[0]);
      }
      return pos(doc.range[0]);
    };
    const whereKey = (path: readonly PropertyKey[], key: string): string => {
      const map = path.length === 0 ? doc.contents : doc.getIn(path as unknown[], true);
      if (isMap(map)) {
        const pair = map.items.find((p) => isScalar(p.key) && String(p.key.value) === key);
        if (pair && isScalar(pair.key) && pair.key.range) return pos(pair.key.range[0]);
      }
      return where(path);
    };
    out.push({ doc: data, where, whereKey });
  }
  return out;
}

/**
 * Parses and compiles every rule in `text` (from `file`). Throws AlertError('alerts.rule_invalid')
 * naming file:line:col for the first problem.
 */
export function parseRules(text: string, file: string): CompiledRule[] {
  if (Buffer.byteLength(text, 'utf8') > MAX_RULE_FILE_BYTES) throw new AlertError('alerts.rule_invalid', `${file}: larger than ${MAX_RULE_FILE_BYTES} bytes`);
  const rules: CompiledRule[] = [];
  for (const { doc, where, whereKey } of positions(text, file)) {
    const isCorrelation = typeof doc === 'object' && doc !== null && 'correlation' in doc;
    const r = (isCorrelation ? correlationRule : detectionRule).safeParse(doc);
    if (!r.success) {
      const iss = r.error.issues[0]!;
      if (iss.code === 'unrecognized_keys') {
        const path = [...iss.path, iss.keys[0]!];
        throw new AlertError('alerts.rule_invalid', `${whereKey(iss.path, iss.keys[0]!)}: ${path.join('.')}: unknown key "${iss.keys[0]}"`);
      }
      throw new AlertError('alerts.rule_invalid', `${where(iss.path)}: ${iss.path.join('.') || '(rule)'}: ${iss.message}`);
    }
    const source = where([]);
    if ('correlation' in r.data) {
      const c = r.data.correlation;
      if (c.type === 'value_count' && c.condition?.field === undefined) throw new AlertError('alerts.rule_invalid', `${where(['correlation', 'condition'])}: correlation.condition: value_count needs a field`);
      if (c.type !== 'temporal' && c.condition === undefined) throw new AlertError('alerts.rule_invalid', `${where(['correlation'])}: correlation.condition: ${c.type} needs a condition (e.g. gte: 10)`);
      rules.push({ kind: 'correlation', id: r.data.id, name: r.data.name, title: r.data.title, level: r.data.level, description: r.data.description, type: c.type, rules: c.rules, groupBy: c['group-by'] ?? [], timespanMs: c.timespan, threshold: c.condition, generate: c.generate ?? false, source });
    } else {
      let matches: Predicate;
      try {
        matches = compileDetection(r.data.detection);
      } catch (e) {
        const path = e instanceof RuleProblem ? e.path : ['detection'];
        throw new AlertError('alerts.rule_invalid', `${where(path)}: ${(e as Error).message}`);
      }
      rules.push({ kind: 'detection', id: r.data.id, name: r.data.name, title: r.data.title, level: r.data.level, description: r.data.description, matches, source });
    }
  }
  return rules;
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
      if (prior !== undefined && prior !== r) throw new AlertError('alerts.rule_invalid', `${r.source}: "${k}" is already the id or name of the rule at ${prior.source}`);
      byKey.set(k, r);
    }
  }
  return rules.map((r) => {
    if (r.kind === 'detection') return r;
    const ids = r.rules.map((k) => {
      const t = byKey.get(k);
      if (t === undefined) throw new AlertError('alerts.rule_invalid', `${r.source}: correlation.rules: no rule "${k}"`);
      if (t.kind !== 'detection') throw new AlertError('alerts.rule_invalid', `${r.source}: correlation.rules: "${k}" is a correlation (only detection rules can be counted)`);
      return t.id;
    });
    return { ...r, rules: ids };
  });
}
