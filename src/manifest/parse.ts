/**
 * parse(text) -> Manifest | issues with line and column, like a compiler.
 *
 * The manifest text is UNTRUSTED input (platform teams run other people's agents): its size is
 * bounded, YAML aliases are bounded (no "billion laughs"), duplicate keys are errors, and every
 * problem becomes an issue; nothing throws. All problems are reported at once.
 */
import { isMap, isScalar, LineCounter, parseDocument, type Document, type Node as YamlNode, type Pair } from 'yaml';
import type * as z from 'zod';
import { privateSuffixWarning } from '../policy/host.js';
import { ManifestError } from './errors.js';
import { MAX_MANIFEST_BYTES } from './limits.js';
import { manifestSchema, type Manifest } from './schema.js';
import { suggestKey } from './suggest.js';

export { MAX_MANIFEST_BYTES };

export interface ManifestIssue {
  /** 1-based line and column of the offending value (or key); 0 when unknown. */
  readonly line: number;
  readonly column: number;
  /** Dotted path of the field, e.g. `permissions.memory` or `permissions.network.allow[2]`. */
  readonly path: string;
  readonly message: string;
}

export type ParseResult =
  | { readonly ok: true; readonly manifest: Manifest; readonly warnings: readonly ManifestIssue[] }
  | { readonly ok: false; readonly issues: readonly ManifestIssue[]; readonly warnings: readonly ManifestIssue[] };

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `"${v}" (a string)`;
  return `${String(v)} (a ${typeof v})`;
}

/** Messages for zod's generic issue kinds; field-specific messages are set in the schema. */
function messageFor(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case 'invalid_type': {
      const expected = String(iss.expected);
      if (iss.input === undefined) return `is required`;
      const want = expected === 'object' ? 'a mapping' : expected === 'array' ? 'a list' : `a ${expected}`;
      return `must be ${want}, not ${typeName(iss.input)}`;
    }
    case 'too_small':
      if (iss.origin === 'array') return `must have at least ${String(iss.minimum)} item(s)`;
      if (iss.origin === 'string') return `must not be shorter than ${String(iss.minimum)} character(s)`;
      return undefined;
    case 'too_big':
      if (iss.origin === 'array') return `must have at most ${String(iss.maximum)} items`;
      if (iss.origin === 'string') return `must not be longer than ${String(iss.maximum)} characters`;
      return undefined;
    default:
      return undefined;
  }
}

/** zod's internal definition, as far as this file walks it (objects and their wrappers). */
interface SchemaDef {
  readonly type?: string;
  readonly shape?: Readonly<Record<string, { readonly _zod?: { readonly def?: SchemaDef } }>>;
  readonly innerType?: { readonly _zod?: { readonly def?: SchemaDef } };
  readonly in?: { readonly _zod?: { readonly def?: SchemaDef } };
}

/** The keys the schema knows for the mapping at `path` (for "did you mean"); [] when unknown. */
function knownKeys(path: readonly PropertyKey[]): string[] {
  let def: SchemaDef | undefined = (manifestSchema as unknown as { _zod: { def: SchemaDef } })._zod.def;
  const unwrap = (): void => {
    for (let i = 0; i < 8 && def !== undefined && def.type !== 'object'; i++) def = (def.innerType ?? def.in)?._zod?.def;
  };
  unwrap();
  for (const seg of path) {
    if (def?.type !== 'object' || typeof seg !== 'string') return [];
    def = def.shape?.[seg]?._zod?.def;
    unwrap();
  }
  return def?.type === 'object' && def.shape ? Object.keys(def.shape) : [];
}

class Locator {
  private readonly lc: LineCounter;
  constructor(
    private readonly doc: Document.Parsed,
    lc: LineCounter,
  ) {
    this.lc = lc;
  }

  pos(offset: number | undefined): { line: number; column: number } {
    if (offset === undefined) return { line: 0, column: 0 };
    const { line, col } = this.lc.linePos(offset);
    return { line, column: col };
  }

  /** Position of the value at `path`, or of the nearest ancestor that exists. */
  value(path: readonly PropertyKey[]): { line: number; column: number } {
    for (let n = path.length; n >= 0; n--) {
      const node = this.doc.getIn(path.slice(0, n) as unknown[], true) as YamlNode | undefined;
      if (node && typeof node === 'object' && 'range' in node && node.range) return this.pos(node.range[0]);
    }
    return { line: 1, column: 1 };
  }

  /** Position of key `key` in the mapping at `path` (for unknown keys). */
  key(path: readonly PropertyKey[], key: string): { line: number; column: number } {
    const map = path.length === 0 ? this.doc.contents : this.doc.getIn(path as unknown[], true);
    if (isMap(map)) {
      const pair = map.items.find((p: Pair) => (isScalar(p.key) ? String(p.key.value) === key : String(p.key) === key));
      if (pair && isScalar(pair.key) && pair.key.range) return this.pos(pair.key.range[0]);
    }
    return this.value(path);
  }
}

/** Parse and validate manifest text. `file` is only used for error messages. */
export function parseManifest(text: string): ParseResult {
  const warnings: ManifestIssue[] = [];
  if (typeof text !== 'string') {
    return { ok: false, issues: [{ line: 0, column: 0, path: '', message: 'manifest is not text' }], warnings };
  }
  if (Buffer.byteLength(text, 'utf8') > MAX_MANIFEST_BYTES) {
    return {
      ok: false,
      issues: [{ line: 1, column: 1, path: '', message: `manifest is larger than ${MAX_MANIFEST_BYTES / 1024} KiB` }],
      warnings,
    };
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter: lc,
    uniqueKeys: true,
    prettyErrors: false,
    strict: true,
    version: '1.2',
    schema: 'core',
    merge: false,
  });
  const loc = new Locator(doc, lc);
  const issues: ManifestIssue[] = [];
  for (const e of doc.errors) {
    const { line, column } = loc.pos(e.pos[0]);
    issues.push({ line, column, path: '', message: `YAML: ${e.message.split('\n')[0]}` });
  }
  for (const w of doc.warnings) {
    const { line, column } = loc.pos(w.pos[0]);
    warnings.push({ line, column, path: '', message: `YAML: ${w.message.split('\n')[0]}` });
  }
  if (issues.length > 0) return { ok: false, issues, warnings };

  let data: unknown;
  try {
    // maxAliasCount bounds alias expansion; anchors/aliases have no use in a manifest anyway.
    data = doc.toJS({ maxAliasCount: 20 });
  } catch (err) {
    return { ok: false, issues: [{ line: 1, column: 1, path: '', message: `YAML: ${(err as Error).message}` }], warnings };
  }
  if (data === null || data === undefined) {
    return {
      ok: false,
      issues: [{ line: 1, column: 1, path: '', message: 'manifest is empty (it needs at least version and agent)' }],
      warnings,
    };
  }

  const result = manifestSchema.safeParse(data, { error: messageFor });
  if (result.success) {
    result.data.permissions.network.allow.forEach((rule, i) => {
      const w = rule.kind === 'wildcard' ? privateSuffixWarning(rule.suffix) : undefined;
      if (w) warnings.push({ ...loc.value(['permissions', 'network', 'allow', i]), path: `permissions.network.allow[${i}]`, message: w });
    });
    return { ok: true, manifest: result.data, warnings };
  }
  for (const iss of result.error.issues) {
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) {
        const { line, column } = loc.key(iss.path, key);
        const hint = suggestKey(key, knownKeys(iss.path));
        issues.push({
          line,
          column,
          path: formatPath([...iss.path, key]),
          message: `unknown key "${key}"${hint !== undefined ? ` (did you mean "${hint}"?)` : ''}`,
        });
      }
      continue;
    }
    if (iss.code === 'invalid_key') {
      // A bad mapping key: point at the key and use the key schema's own message.
      const key = String(iss.path[iss.path.length - 1]);
      const { line, column } = loc.key(iss.path.slice(0, -1), key);
      issues.push({ line, column, path: formatPath(iss.path), message: iss.issues[0]?.message ?? `invalid key "${key}"` });
      continue;
    }
    const { line, column } = loc.value(iss.path);
    issues.push({ line, column, path: formatPath(iss.path), message: iss.message });
  }
  issues.sort((a, b) => a.line - b.line || a.column - b.column);
  return { ok: false, issues, warnings };
}

/** Format an issue the way compilers do: `file:line:col: path: message`. */
export function formatIssue(file: string, issue: ManifestIssue): string {
  const where = issue.line > 0 ? `${file}:${issue.line}:${issue.column}` : file;
  return issue.path ? `${where}: ${issue.path}: ${issue.message}` : `${where}: ${issue.message}`;
}

/** Parse, or throw a ManifestError carrying every issue (for callers that cannot go on). */
export function parseManifestOrThrow(text: string, file: string): Manifest {
  const r = parseManifest(text);
  if (r.ok) return r.manifest;
  throw new ManifestError('manifest.invalid', r.issues.map((i) => formatIssue(file, i)).join('\n'), r.issues);
}
