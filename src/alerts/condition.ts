/**
 * Sigma detection conditions (pure): `selection`, `not x`, `x and y`, `x or y`, parentheses,
 * `1 of sel*`, `all of sel*`, `1 of them`, `all of them`. Precedence: not > and > or.
 * Parsed once into a tree; evaluated against the set of selections that matched an event.
 */

export type Condition =
  | { readonly kind: 'ref'; readonly name: string }
  | { readonly kind: 'not'; readonly of: Condition }
  | { readonly kind: 'and' | 'or'; readonly left: Condition; readonly right: Condition }
  | { readonly kind: 'quant'; readonly all: boolean; readonly names: readonly string[] };

const TOKEN = /\s*(\(|\)|[A-Za-z0-9_*-]+)/y;

function tokenize(text: string): string[] {
  const out: string[] = [];
  TOKEN.lastIndex = 0;
  let pos = 0;
  while (pos < text.length) {
    if (/^\s*$/.test(text.slice(pos))) break;
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(text);
    if (!m) throw new Error(`unexpected "${text.slice(pos).trim().slice(0, 20)}"`);
    out.push(m[1]!);
    pos = TOKEN.lastIndex;
  }
  return out;
}

/** Names matching a Sigma pattern (`sel*`: prefix; `them`: all). Literal comparison, no RegExp. */
function expand(pattern: string, selections: readonly string[]): string[] {
  if (pattern === 'them') return [...selections];
  if (pattern.endsWith('*')) return selections.filter((s) => s.startsWith(pattern.slice(0, -1)));
  return selections.filter((s) => s === pattern);
}

/** Parses `text`; every name must be one of `selections`. Throws Error with a message. */
export function parseCondition(text: string, selections: readonly string[]): Condition {
  const toks = tokenize(text);
  let i = 0;
  const peek = (): string | undefined => toks[i];
  const lower = (t: string | undefined): string | undefined => t?.toLowerCase();
  const primary = (): Condition => {
    const t = toks[i++];
    if (t === undefined) throw new Error('condition ends too early');
    if (t === '(') {
      const c = or();
      if (toks[i++] !== ')') throw new Error('missing ")"');
      return c;
    }
    if (t === '1' || lower(t) === 'all') {
      if (lower(toks[i]) !== 'of') throw new Error(`"${t}" must be followed by "of"`);
      i++;
      const pat = toks[i++];
      if (pat === undefined || pat === '(' || pat === ')')
        throw new Error(`"${t} of" needs a selection name, a name ending in *, or "them"`);
      const names = expand(pat, selections);
      if (names.length === 0) throw new Error(`"${pat}" names no selection`);
      return { kind: 'quant', all: t !== '1', names };
    }
    if (['and', 'or', 'not', 'of', ')'].includes(lower(t)!)) throw new Error(`unexpected "${t}"`);
    if (!selections.includes(t)) throw new Error(`"${t}" is not a selection of this rule (selections: ${selections.join(', ') || 'none'})`);
    return { kind: 'ref', name: t };
  };
  const unary = (): Condition => {
    if (lower(peek()) === 'not') {
      i++;
      return { kind: 'not', of: unary() };
    }
    return primary();
  };
  const and = (): Condition => {
    let left = unary();
    while (lower(peek()) === 'and') {
      i++;
      left = { kind: 'and', left, right: unary() };
    }
    return left;
  };
  const or = (): Condition => {
    let left = and();
    while (lower(peek()) === 'or') {
      i++;
      left = { kind: 'or', left, right: and() };
    }
    return left;
  };
  if (toks.length === 0) throw new Error('condition is empty');
  const c = or();
  if (i !== toks.length) throw new Error(`unexpected "${toks[i]}"`);
  return c;
}

/** Evaluates `c` given which selections matched. */
export function evalCondition(c: Condition, matched: (name: string) => boolean): boolean {
  switch (c.kind) {
    case 'ref':
      return matched(c.name);
    case 'not':
      return !evalCondition(c.of, matched);
    case 'and':
      return evalCondition(c.left, matched) && evalCondition(c.right, matched);
    case 'or':
      return evalCondition(c.left, matched) || evalCondition(c.right, matched);
    case 'quant':
      return c.all ? c.names.every(matched) : c.names.some(matched);
  }
}
