/**
 * Phase durations of one run, for `aegis run --timings` (issue 18: where a run's start-up time
 * goes). Each `mark(name)` closes the phase that ran since the previous mark; the first phase
 * starts at `origin` (for the CLI: the process's start, `performance.timeOrigin`, so the first
 * phase is Node's own start plus the CLI's module loading). The clock is passed in.
 *
 * Diagnostics only: nothing here changes what a run does, and the lines go to stderr.
 */

/** Receives the end of a phase; optional everywhere it is passed (a run without it marks nothing). */
export type PhaseMark = (phase: string) => void;

export class PhaseTimings {
  private last: number;
  private readonly phases: { readonly name: string; readonly ms: number }[] = [];

  constructor(
    private readonly now: () => number,
    private readonly origin: number,
  ) {
    this.last = origin;
  }

  /** Ends the current phase under `name` (a name seen twice adds up). */
  readonly mark: PhaseMark = (name) => {
    const t = this.now();
    this.phases.push({ name, ms: t - this.last });
    this.last = t;
  };

  /** The phases in order, repeated names summed, and the total since the origin. */
  summary(): { readonly phases: readonly { readonly name: string; readonly ms: number }[]; readonly totalMs: number } {
    const sums = new Map<string, number>();
    for (const p of this.phases) sums.set(p.name, (sums.get(p.name) ?? 0) + p.ms);
    return { phases: [...sums].map(([name, ms]) => ({ name, ms })), totalMs: this.last - this.origin };
  }

  /** One line per phase (`<prefix><name> <ms> ms`), then the total. */
  format(prefix: string): string {
    const { phases, totalMs } = this.summary();
    const width = Math.max(5, ...phases.map((p) => p.name.length));
    return [...phases, { name: 'total', ms: totalMs }]
      .map((p) => `${prefix}${p.name.padEnd(width)} ${p.ms.toFixed(1).padStart(7)} ms\n`)
      .join('');
  }
}
