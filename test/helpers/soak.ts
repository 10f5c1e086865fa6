/**
 * How many rounds a randomized test runs. The suite runs few enough to stay within its time;
 * `npm run soak` runs every `*.random.test.ts` with STRONGBOX_SOAK set to a multiplier (40 by default) for the long runs.
 */
export function rounds(inSuite: number): number {
  const factor = Number(process.env.STRONGBOX_SOAK ?? 1);
  return Math.max(1, Math.round(inSuite * (Number.isFinite(factor) && factor > 0 ? factor : 1)));
}

/** A seed for a randomized test: STRONGBOX_SEED replays a failure, otherwise a fresh one, printed. */
export function seed(name: string): number {
  const given = process.env.STRONGBOX_SEED;
  const value = given === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(given);
  console.log(`${name}: seed ${value} (replay with STRONGBOX_SEED=${value})`);
  return value;
}
