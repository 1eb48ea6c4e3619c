// Seeded randomness for the data pipeline: a small counter-based generator in JS.
//
// The data layer draws a few numbers per sample (shuffles, crop boxes, caption choice),
// so a native call per draw would cost more than it saves. Like the project's Philox,
// the stream is a pure function of its key (seed, epoch, position, purpose) and a
// counter, never of the order in which samples were processed: prefetching, resuming
// from a saved position or decoding out of order draw the same numbers.

const GOLDEN = 0x9e3779b9;

/** murmur3's 32-bit finaliser: a bijective mix of one word. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Folds key words (non-negative safe integers) into one 32-bit state. */
export function hashKey(...words: readonly number[]): number {
  let h = 0x6a09e667;
  for (const w of words) {
    const lo = w >>> 0;
    const hi = Math.floor(w / 0x100000000) >>> 0;
    h = fmix32((h ^ lo) + GOLDEN);
    h = fmix32((h ^ hi) + GOLDEN);
  }
  return h;
}

/**
 * A generator keyed by integers: draw k is fmix(key + k * golden), mixed twice.
 * `new Rng(seed, epoch, position, purpose)` gives the same numbers on every run.
 */
export class Rng {
  private key: number;
  private counter = 0;
  constructor(...key: number[]) {
    for (const k of key)
      if (!Number.isSafeInteger(k) || k < 0) throw new RangeError(`Rng: expected non-negative safe integers for key but received ${String(k)}`);
    this.key = hashKey(...key);
  }
  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    const c = (this.counter++ * GOLDEN) >>> 0;
    return fmix32(fmix32((this.key + c) >>> 0) ^ this.key);
  }
  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextU32() >>> 5, lo = this.nextU32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }
  /** Uniform in [low, high). */
  uniform(low: number, high: number): number { return low + (high - low) * this.next(); }
  /** Uniform integer in [0, n). */
  int(n: number): number { return Math.floor(this.next() * n); }
}

/** Which stream a draw belongs to (the last key word), so purposes never share numbers. */
export const Purpose = { shuffle: 1, crop: 2, caption: 3, noise: 4, shards: 5, buffer: 6 } as const;

/** A seeded permutation of [0, n) (Fisher-Yates). */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i]!; p[i] = p[j]!; p[j] = t;
  }
  return p;
}
