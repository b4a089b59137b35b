/**
 * Rule files (pure): YAML text -> validated rule documents with line/column errors, compiled.
 * The YAML parser and zod are loaded only here, so a run whose rules come from the cache
 * (load.ts) never loads them.
 */
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Node as YamlNode } from 'yaml';
import { z } from 'zod';
import { AlertError } from './errors.js';
import { type CompiledRule, compileRuleDoc, LEVELS, MAX_RULE_FILE_BYTES, type RuleDoc, RuleProblem } from './rule.js';

const ID = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{2,99}$/, 'must be 3-100 letters, digits, ".", "_" or "-" (a UUID works)');
const timespan = z
  .string()
  .regex(/^[1-9][0-9]{0,6}[smhd]$/, 'must be a number and a unit: 30s, 5m, 1h, 1d')
  .transform((s) => Number(s.slice(0, -1)) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[s.slice(-1) as 's' | 'm' | 'h' | 'd']);
const fieldPath = z.string().regex(/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/, 'must be a dotted field name, e.g. actor.execution');
const threshold = z
  .strictObject({
    gt: z.number().optional(),
    gte: z.number().optional(),
    lt: z.number().optional(),
    lte: z.number().optional(),
    eq: z.number().optional(),
    field: fieldPath.optional(),
  })
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
  logsource: z
    .strictObject({ product: z.literal('aegis'), service: z.literal('audit').optional(), category: z.string().optional() })
    .optional(),
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

/** A validated document and where it came from (what the cache keeps). */
export interface SourcedDoc {
  readonly doc: RuleDoc;
  readonly source: string;
}

/**
 * Parses and compiles every rule in `text` (from `file`). Throws AlertError('alerts.rule_invalid')
 * naming file:line:col for the first problem. `docs` (optional) receives the validated documents.
 */
export function parseRules(text: string, file: string, docs: SourcedDoc[] = []): CompiledRule[] {
  if (Buffer.byteLength(text, 'utf8') > MAX_RULE_FILE_BYTES)
    throw new AlertError('alerts.rule_invalid', `${file}: larger than ${MAX_RULE_FILE_BYTES} bytes`);
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
    const ruleDoc: RuleDoc = r.data;
    try {
      rules.push(compileRuleDoc(ruleDoc, source));
    } catch (e) {
      const path = e instanceof RuleProblem ? e.path : [];
      throw new AlertError('alerts.rule_invalid', `${where(path)}: ${(e as Error).message}`);
    }
    docs.push({ doc: ruleDoc, source });
  }
  return rules;
}
