/**
 * The alert engine (pure): audit events in, alerts out, in event-time order. Detection rules
 * are evaluated on every event; correlation rules keep a bounded window per group.
 *
 * Time is the event's own `time` (passed in by the caller for live events, read from the log on
 * replay), so the same events always give the same alerts.
 *
 * Suppression (an AEGIS addition to Sigma): one rule raises at most one alert per group (the
 * execution, or the correlation's group-by values) per `suppressMs`; the next alert after that
 * says how many were folded. A flood of denials is one alert a window, not one per packet.
 */
import type { CompiledCorrelation, CompiledDetection, CompiledRule, Level } from './rule.js';
import { fieldOf } from './selection.js';

/** What the engine needs of an event: the audit event's own fields (id and time assigned). */
export interface EngineEvent {
  readonly id: string;
  readonly time: string;
  readonly action: string;
  readonly decision: string;
  readonly reason?: string;
  readonly actor: { readonly agent?: string; readonly execution?: string; readonly principal?: string };
  readonly payload: Readonly<Record<string, unknown>>;
}

export interface Alert {
  readonly rule: { readonly id: string; readonly title: string; readonly level: Level; readonly kind: 'detection' | 'correlation' };
  /** Time of the event that raised it. */
  readonly time: string;
  /** The actor of the triggering event (for correlations: of the last one). */
  readonly actor: EngineEvent['actor'];
  /** Ids of the events that raised it (bounded to MAX_EVENT_IDS, the latest kept). */
  readonly eventIds: readonly string[];
  /** Correlations: the group-by values, the count reached, the window. */
  readonly group?: Readonly<Record<string, string>>;
  readonly count?: number;
  /** Alerts of this rule and group folded into this one since the previous alert. */
  readonly suppressed: number;
  /** Why, in one line (the rule's title and what matched). */
  readonly summary: string;
}

export interface EngineOptions {
  /** One alert per rule and group per this window (default 60 s; 0 disables suppression). */
  readonly suppressMs?: number;
  /** Correlation groups kept per rule; the least recently seen is dropped beyond (default 10,000). */
  readonly maxGroups?: number;
}

export const MAX_EVENT_IDS = 20;
/** Events (or distinct values) one correlation window holds at most; the oldest go first. */
export const MAX_WINDOW = 100_000;

interface GroupState {
  /** event_count: times; value_count: value -> last time; temporal: rule id -> last time. */
  times: number[];
  ids: string[];
  values: Map<string, number>;
  lastSeen: number;
}

interface Suppression {
  until: number;
  folded: number;
}

function groupKeyOf(fields: readonly string[], e: EngineEvent): { key: string; group: Record<string, string> } {
  const group: Record<string, string> = {};
  for (const f of fields) {
    const v = fieldOf(e, f.split('.'));
    group[f] = v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v);
  }
  return { key: JSON.stringify(fields.map((f) => group[f])), group };
}

function meets(t: NonNullable<CompiledCorrelation['threshold']>, n: number): boolean {
  return (
    (t.gt === undefined || n > t.gt) &&
    (t.gte === undefined || n >= t.gte) &&
    (t.lt === undefined || n < t.lt) &&
    (t.lte === undefined || n <= t.lte) &&
    (t.eq === undefined || n === t.eq)
  );
}

export class AlertEngine {
  private readonly detections: readonly CompiledDetection[];
  private readonly correlations: readonly CompiledCorrelation[];
  /** Detection rules that raise alerts of their own. */
  private readonly generating: ReadonlySet<string>;
  private readonly groups = new Map<string, Map<string, GroupState>>();
  private readonly suppressions = new Map<string, Suppression>();
  private readonly suppressMs: number;
  private readonly maxGroups: number;
  evaluated = 0;

  constructor(rules: readonly CompiledRule[], opts: EngineOptions = {}) {
    this.detections = rules.filter((r): r is CompiledDetection => r.kind === 'detection');
    this.correlations = rules.filter((r): r is CompiledCorrelation => r.kind === 'correlation');
    const referenced = new Set(this.correlations.flatMap((c) => c.rules));
    const generatedAnyway = new Set(this.correlations.filter((c) => c.generate).flatMap((c) => c.rules));
    this.generating = new Set(this.detections.filter((d) => !referenced.has(d.id) || generatedAnyway.has(d.id)).map((d) => d.id));
    this.suppressMs = opts.suppressMs ?? 60_000;
    this.maxGroups = opts.maxGroups ?? 10_000;
    for (const c of this.correlations) this.groups.set(c.id, new Map());
  }

  /** Evaluates one event; returns the alerts it raises (often none). */
  evaluate(e: EngineEvent): Alert[] {
    this.evaluated++;
    let atCache: number | undefined;
    const at = (): number => {
      if (atCache === undefined) {
        const t = Date.parse(e.time);
        atCache = Number.isFinite(t) ? t : 0;
      }
      return atCache;
    };
    const out: Alert[] = [];
    let matched: Set<string> | null = null;
    const action = typeof e.action === 'string' ? e.action.toLowerCase() : '';
    for (const d of this.detections) {
      if (d.actions !== null && !d.actions.exact.has(action) && !d.actions.prefixes.some((p) => action.startsWith(p))) continue;
      let hit: boolean;
      try {
        hit = d.matches(e);
      } catch {
        hit = false; // a predicate never throws on data; if it did, the event simply does not match
      }
      if (!hit) continue;
      (matched ??= new Set()).add(d.id);
      if (this.generating.has(d.id)) {
        const a = this.raise(d, e, at(), e.actor.execution ?? e.actor.principal ?? e.actor.agent ?? '', {
          eventIds: [e.id],
          summary: `${d.title}: ${e.action} ${e.decision}${e.reason ? ` (${e.reason})` : ''}`,
        });
        if (a) out.push(a);
      }
    }
    if (matched !== null)
      for (const c of this.correlations) if (c.rules.some((r) => matched!.has(r))) this.correlate(c, e, at(), matched, out);
    return out;
  }

  private correlate(c: CompiledCorrelation, e: EngineEvent, at: number, matched: ReadonlySet<string>, out: Alert[]): void {
    const groups = this.groups.get(c.id)!;
    const { key, group } = groupKeyOf(c.groupBy, e);
    let g = groups.get(key);
    if (g === undefined) {
      if (groups.size >= this.maxGroups) {
        // Drop the least recently seen group (Map keeps insertion order; re-inserted on use).
        const oldest = groups.keys().next().value;
        if (oldest !== undefined) groups.delete(oldest);
      }
      g = { times: [], ids: [], values: new Map(), lastSeen: at };
    } else groups.delete(key);
    groups.set(key, g);
    g.lastSeen = at;
    const since = at - c.timespanMs;
    let count: number;
    switch (c.type) {
      case 'event_count': {
        g.times.push(at);
        g.ids.push(e.id);
        if (g.times.length > MAX_WINDOW) g.times.shift();
        while (g.times.length > 0 && g.times[0]! < since) {
          g.times.shift();
          g.ids.shift();
        }
        count = g.times.length;
        break;
      }
      case 'value_count': {
        const v = fieldOf(e, c.threshold!.field!.split('.'));
        if (v === undefined || v === null) return;
        g.values.delete(typeof v === 'string' ? v : JSON.stringify(v));
        g.values.set(typeof v === 'string' ? v : JSON.stringify(v), at);
        if (g.values.size > MAX_WINDOW) g.values.delete(g.values.keys().next().value!);
        g.ids.push(e.id);
        for (const [k, t] of g.values) if (t < since) g.values.delete(k);
        count = g.values.size;
        break;
      }
      case 'temporal': {
        for (const r of c.rules) if (matched.has(r)) g.values.set(r, at);
        g.ids.push(e.id);
        for (const [k, t] of g.values) if (t < since) g.values.delete(k);
        count = g.values.size;
        break;
      }
    }
    if (g.ids.length > MAX_EVENT_IDS) g.ids.splice(0, g.ids.length - MAX_EVENT_IDS);
    const fired =
      c.type === 'temporal'
        ? c.rules.every((r) => g.values.has(r)) && (c.threshold === undefined || meets(c.threshold, count))
        : meets(c.threshold!, count);
    if (!fired) return;
    const a = this.raise(c, e, at, key, {
      eventIds: [...g.ids],
      group,
      count,
      summary: `${c.title}: ${count} ${c.type === 'value_count' ? `distinct ${c.threshold!.field}` : c.type === 'temporal' ? 'rules' : 'events'} within ${c.timespanMs / 1000} s${c.groupBy.length ? ` (${c.groupBy.map((f) => `${f}=${group[f]}`).join(', ')})` : ''}`,
    });
    // A fired window starts over, so one burst is one alert.
    g.times = [];
    g.ids = [];
    g.values = new Map();
    if (a) out.push(a);
  }

  private raise(
    r: CompiledRule,
    e: EngineEvent,
    at: number,
    groupKey: string,
    x: { eventIds: string[]; summary: string; group?: Record<string, string>; count?: number },
  ): Alert | null {
    const sk = `${r.id}\u0000${groupKey}`;
    const s = this.suppressions.get(sk);
    if (s !== undefined && at < s.until) {
      s.folded++;
      return null;
    }
    if (this.suppressions.size >= this.maxGroups * 4) this.pruneSuppressions(at);
    this.suppressions.set(sk, { until: at + this.suppressMs, folded: 0 });
    return {
      rule: { id: r.id, title: r.title, level: r.level, kind: r.kind },
      time: e.time,
      actor: e.actor,
      eventIds: x.eventIds,
      ...(x.group !== undefined ? { group: x.group } : {}),
      ...(x.count !== undefined ? { count: x.count } : {}),
      suppressed: s?.folded ?? 0,
      summary: x.summary,
    };
  }

  private pruneSuppressions(at: number): void {
    for (const [k, s] of this.suppressions) if (s.until <= at) this.suppressions.delete(k);
    // Still full: forget the oldest half (an attacker cycling groups only gets more alerts).
    if (this.suppressions.size >= this.maxGroups * 4) {
      let n = this.suppressions.size / 2;
      for (const k of this.suppressions.keys()) {
        if (n-- <= 0) break;
        this.suppressions.delete(k);
      }
    }
  }
}
