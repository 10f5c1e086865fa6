/**
 * The index of the last of `starts[0, count)` (ascending) at or below `value`, or 0 when none
 * is: which of consecutive pieces, given where each starts, holds a byte.
 */
export function pieceAt(starts: ArrayLike<number>, count: number, value: number): number {
  let low = 0;
  let high = count - 1;
  while (low < high) {
    const middle = (low + high + 1) >>> 1;
    if (starts[middle]! <= value) low = middle;
    else high = middle - 1;
  }
  return Math.max(0, low);
}
