// Gradient accumulation for contrastive losses (open_clip's --accum-freq). A contrastive loss
// couples every sample of the batch with every other, so summing per-micro-batch losses is
// not the big-batch loss. Instead, for k micro-batches:
//   1. compute every micro-batch's features without gradients and cache them;
//   2. for each micro-batch j: recompute its features with gradients, put them in place of
//      its cached rows among all cached features, compute the (whole-batch) loss and backward.
// Features have equal values in both passes, so pass j yields exactly the gradient that flows
// into the parameters through micro-batch j's features; summed over j in .grad, that is the
// big-batch gradient. Parameters the loss uses directly (CLIP's logit scale, ALIGN's
// temperature: `shared`) would collect the same gradient k times; they take it from pass 0 only.
// Memory: the autograd graph of one micro-batch at a time plus the features of the whole batch.
import { Tensor } from '../graph/tensor.js';
import { tidy } from '../graph/scope.js';
import { noGrad, enableGrad } from '../graph/autograd.js';
import { concat } from '../graph/ops/views.js';
import { describe, generatorState, setGeneratorState } from '../graph/creation.js';

export interface ContrastiveFeatures {
  /** [b, D] (or [b, Q, D]) image features of the micro-batch. */
  image: Tensor;
  /** [b, D] text features of the micro-batch. */
  text: Tensor;
}

/**
 * What a loss may return: the scalar, or an object with the scalar as `loss` whose other
 * number (or one-element tensor) fields are reported as metrics (infoNCE's accI2T, accT2I).
 */
export type ContrastiveLossResult = Tensor | { loss: Tensor };

export interface AccumulateContrastiveOptions<M> {
  /** The micro-batches of one optimizer step, in batch order. */
  microBatches: readonly M[];
  /** The towers: features of one micro-batch (called twice per micro-batch; must be deterministic given the generator state). */
  features: (mb: M) => ContrastiveFeatures;
  /** The loss of the whole batch from all features, e.g. (i, t) => infoNCE(i, t, { logitScale }). */
  loss: (image: Tensor, text: Tensor) => ContrastiveLossResult;
  /** Parameters the loss reads directly (logit scale, temperature): their gradient is taken once. */
  shared?: readonly Tensor[];
}

export interface AccumulateResult {
  /** The big-batch loss (gradients are already in each parameter's .grad). */
  loss: number;
  /** Numeric extras the loss returned (e.g. accI2T, accT2I), for the whole batch. */
  metrics: Record<string, number>;
  /** Total number of samples (rows of the image features). */
  samples: number;
}

/**
 * One optimizer step's gradients from k micro-batches, equal to those of one big batch.
 * Adds into .grad (zero them before, as for any backward). The generator is rewound for each
 * recomputation so dropout and other random ops draw the same masks in both passes.
 */
export function accumulateContrastive<M>(options: AccumulateContrastiveOptions<M>): AccumulateResult {
  const op = 'accumulateContrastive';
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: expected an options object but received ${describe(options)}`);
  const { microBatches, features, loss } = options;
  if (!Array.isArray(microBatches) || microBatches.length === 0)
    throw new RangeError(`${op}: expected a non-empty array for microBatches but received ${describe(microBatches)}`);
  if (typeof features !== 'function') throw new TypeError(`${op}: expected a function for features but received ${describe(features)}`);
  if (typeof loss !== 'function') throw new TypeError(`${op}: expected a function for loss but received ${describe(loss)}`);
  const shared = options.shared ?? [];
  if (!Array.isArray(shared) || shared.some((p) => !(p instanceof Tensor)))
    throw new TypeError(`${op}: expected an array of tensors for shared but received ${describe(shared)}`);

  const k = microBatches.length;
  const rng: { seed: number; offset: number }[] = [];
  const cached: ContrastiveFeatures[] = [];
  try {
    // Pass 1: every micro-batch's features, no graph.
    for (let j = 0; j < k; j++) {
      rng.push(generatorState());
      const f = tidy(() => noGrad(() => {
        const r = features(microBatches[j]!);
        checkFeatures(op, j, r);
        return { image: r.image.detach(), text: r.text.detach() };
      }));
      cached.push(f);
    }
    const after = generatorState();
    const samples = cached.reduce((n, f) => n + f.image.shape[0]!, 0);

    // Pass 2: one micro-batch with gradients at a time, against the others' cached features.
    let total = NaN;
    const metrics: Record<string, number> = {};
    const flags = shared.map((p) => p.requiresGrad);
    try {
      for (let j = 0; j < k; j++) {
        if (j === 1) for (const p of shared) if (p.isLeaf) p.requiresGrad_(false);
        setGeneratorState(rng[j]!);
        tidy(() => enableGrad(() => {
          const f = features(microBatches[j]!);
          checkFeatures(op, j, f);
          const pick = (which: 'image' | 'text') => (k === 1 ? f[which] : concat(cached.map((c, i) => (i === j ? f[which] : c[which])), 0));
          const r = loss(pick('image'), pick('text'));
          const l = r instanceof Tensor ? r : r.loss;
          if (!(l instanceof Tensor) || l.size !== 1)
            throw new TypeError(`${op}: expected the loss to return a scalar tensor (or { loss, ...metrics }) but received ${describe(l)}`);
          if (j === 0) {
            total = l.item();
            if (!(r instanceof Tensor))
              for (const [name, v] of Object.entries(r as Record<string, unknown>)) {
                if (name === 'loss') continue;
                if (typeof v === 'number') metrics[name] = v;
                else if (v instanceof Tensor && v.size === 1) metrics[name] = v.item();
              }
          }
          if (l.requiresGrad) l.backward();
        }));
      }
    } finally {
      shared.forEach((p, i) => { if (p.isLeaf && p.requiresGrad !== flags[i]) p.requiresGrad_(flags[i]); });
      setGeneratorState(after);
    }
    return { loss: total, metrics, samples };
  } finally {
    for (const f of cached) { f.image.dispose(); f.text.dispose(); }
  }
}

function checkFeatures(op: string, j: number, f: unknown): asserts f is ContrastiveFeatures {
  const r = f as ContrastiveFeatures;
  if (r === null || typeof r !== 'object' || !(r.image instanceof Tensor) || !(r.text instanceof Tensor))
    throw new TypeError(`${op}: expected features() to return { image: Tensor, text: Tensor } for microBatches[${j}] but received ${describe(f)}`);
  if (r.image.shape[0] !== r.text.shape[0])
    throw new RangeError(`${op}: expected as many image as text rows for microBatches[${j}] but received ${r.image.shape[0]} and ${r.text.shape[0]}`);
}

/** Splits an index range [0, n) into k near-equal contiguous micro-batches (sizes differ by at most 1). */
export function splitMicroBatches(n: number, k: number): [number, number][] {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`splitMicroBatches: expected a positive integer for n but received ${describe(n)}`);
  if (!Number.isSafeInteger(k) || k < 1 || k > n) throw new RangeError(`splitMicroBatches: expected an integer in [1, ${n}] for k but received ${describe(k)}`);
  const out: [number, number][] = [];
  for (let j = 0, at = 0; j < k; j++) {
    const len = Math.floor(n / k) + (j < n % k ? 1 : 0);
    out.push([at, at + len]);
    at += len;
  }
  return out;
}
