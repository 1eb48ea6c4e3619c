// What a data source hands the loader: samples before decoding, and the skip log.
//
// Two kinds of source: a Dataset has a size and random access (the emoji set, CSV/TSV/JSONL
// manifests); a StreamDataset is read front to back once per epoch (WebDataset shards).

/** Decoded pixels: 8-bit, row-major, interleaved (HWC), 3 (RGB) or 4 (RGBA) channels. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3 | 4;
}

/** Where a sample's image comes from: pixels already in memory, a file, or encoded bytes. */
export type ImageRef = RawImage | { path: string } | { bytes: Uint8Array; name?: string };

/**
 * One image-text pair before decoding. `caption` may list several captions (templates,
 * several human captions): the loader picks one per epoch with the sample's generator.
 * `error` marks a sample the source already knows to be unusable (a shard entry without
 * an image): the loader skips it and counts `error` as the reason.
 */
export interface Sample {
  image: ImageRef | null;
  caption: string | readonly string[] | null;
  /** A stable name for logs and reports: the manifest row, the shard key, the emoji. */
  key: string;
  error?: string;
}

/** Random access: the emoji set and manifests. */
export interface Dataset {
  readonly kind: 'map';
  readonly size: number;
  get(index: number): Sample | Promise<Sample>;
  /** The caption(s) of a sample without touching its image (caption noise, filters). */
  captionAt?(index: number): string | readonly string[] | null;
  /** Samples dropped while the source itself was read (malformed manifest rows). */
  readonly skipped?: SkipCounter;
}

/** Front-to-back reading, one pass per epoch, already shuffled for that epoch. */
export interface StreamDataset {
  readonly kind: 'stream';
  /** The samples of one epoch in order; the same (seed, epoch) gives the same order. */
  stream(epoch: number, seed: number): AsyncIterable<Sample>;
  readonly skipped?: SkipCounter;
}

export type DataSource = Dataset | StreamDataset;

/** The reasons a sample was skipped, counted. */
export interface SkipReport {
  total: number;
  reasons: Record<string, number>;
  /** The first few skipped samples, with their reason, for the log. */
  examples: { key: string; reason: string; detail?: string }[];
}

export class SkipCounter {
  total = 0;
  readonly reasons: Record<string, number> = {};
  readonly examples: { key: string; reason: string; detail?: string }[] = [];
  constructor(private readonly maxExamples = 20) {}
  add(reason: string, key = '', detail?: string): void {
    this.total++;
    this.reasons[reason] = (this.reasons[reason] ?? 0) + 1;
    if (this.examples.length < this.maxExamples) this.examples.push(detail === undefined ? { key, reason } : { key, reason, detail });
  }
  report(): SkipReport {
    return { total: this.total, reasons: { ...this.reasons }, examples: this.examples.map((e) => ({ ...e })) };
  }
  /** The sum of several reports. */
  static merge(...reports: SkipReport[]): SkipReport {
    const out: SkipReport = { total: 0, reasons: {}, examples: [] };
    for (const r of reports) {
      out.total += r.total;
      for (const [k, v] of Object.entries(r.reasons)) out.reasons[k] = (out.reasons[k] ?? 0) + v;
      out.examples.push(...r.examples);
    }
    return out;
  }
}

/** A sample that cannot be used; `reason` is the counted category, `message` the detail. */
export class SkipError extends Error {
  constructor(readonly reason: string, message?: string) {
    super(message ?? reason);
    this.name = 'SkipError';
  }
}

export function isRawImage(x: unknown): x is RawImage {
  return typeof x === 'object' && x !== null && 'data' in x && 'width' in x && 'height' in x && 'channels' in x;
}
