/**
 * Property-test settings shared by every fast-check suite: each property runs twice, once with a
 * fixed seed (reproducible in CI) and once with a fresh random seed (new ground every run). The
 * seed is in the test name and in fast-check's failure report; replay with FC_SEED=<seed>.
 */
import type { Parameters as FcParameters } from 'fast-check';

export const FIXED_SEED = 20261125;

/** `[label, parameters]` pairs to run a property under. */
export function propertyRuns(numRuns = 500): Array<[string, FcParameters<unknown>]> {
  const replay = process.env.FC_SEED;
  if (replay !== undefined) return [[`replay seed ${replay}`, { seed: Number(replay), numRuns }]];
  const random = (Math.random() * 2 ** 31) | 0;
  return [
    [`fixed seed ${FIXED_SEED}`, { seed: FIXED_SEED, numRuns }],
    [`random seed ${random}`, { seed: random, numRuns }],
  ];
}
