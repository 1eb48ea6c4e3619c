// Initialisation helpers for the towers: overwrite a registered parameter in place (so a
// module's references stay valid) with draws from the seeded generator, and build a
// tower under a fixed seed without disturbing the global generator.
import { native } from '../native.js';
import type { Tensor } from '../graph/tensor.js';
import { noGrad } from '../graph/autograd.js';
import { full, generatorState, manualSeed, rand, randn, setGeneratorState } from '../graph/creation.js';

function overwrite(p: Tensor, make: () => Tensor): void {
  noGrad(() => {
    const src = make();
    native.copy(p.handle, src.handle);
    src.dispose();
  });
}

/** p ~ N(mean, std^2), in place. */
export function normal_(p: Tensor, std: number, mean = 0): void {
  overwrite(p, () => randn(p.shape, { dtype: p.dtype, std, mean }));
}

/** p ~ U(low, high), in place. */
export function uniform_(p: Tensor, low: number, high: number): void {
  overwrite(p, () => rand(p.shape, { dtype: p.dtype, low, high }));
}

/** p = value, in place. */
export function constant_(p: Tensor, value: number): void {
  overwrite(p, () => full(p.shape, value, { dtype: p.dtype }));
}

/**
 * torch.nn.init.kaiming_normal_(p, mode='fan_out', nonlinearity='relu') on a conv weight
 * [out, in/groups, kh, kw]: std = sqrt(2 / (out * kh * kw)).
 */
export function kaimingNormalFanOut_(p: Tensor): void {
  const [out, , kh = 1, kw = 1] = p.shape;
  normal_(p, Math.sqrt(2 / (out! * kh * kw)));
}

/**
 * Runs fn with the global generator seeded to `seed` and restores the generator's state
 * afterwards, so a tower built with a seed is the same whatever ran before and leaves the
 * rest of the program's random stream untouched. With null, fn draws from the global stream.
 */
export function withSeed<T>(seed: number | null, fn: () => T): T {
  if (seed === null) return fn();
  const saved = generatorState();
  manualSeed(seed);
  try {
    return fn();
  } finally {
    setGeneratorState(saved);
  }
}
