// TransformerBlock / TransformerStack: the pre-LN and post-LN compositions against their
// sub-modules applied by hand, cross-attention (used only with a context), the KV prefix
// (a cached-keys continuation equals the full causal pass: what a decoding step needs),
// dropout modes, float64 gradient checks, and config errors.
import test from 'ava';
import type { Tensor } from '../ts/graph/tensor.js';
import { manualSeed, randn, tensor } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { tidy } from '../ts/graph/scope.js';
import { add } from '../ts/graph/ops/elementwise.js';
import { slice, transpose } from '../ts/graph/ops/views.js';
import { TransformerBlock, TransformerStack } from '../ts/graph/transformer.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { native } from '../ts/native.js';

// Tiny models: one thread (each op is microseconds of work; OpenMP regions on a loaded
// machine cost far more than that). Multi-threaded kernels are covered by their own tests.
native.setNumThreads(1);

const f64 = { dtype: 'float64' as const };

test('pre-LN block is x + attn(ln_1 x), [+ cross_attn(ln_cross x, ctx)], + mlp(ln_2 x)', (t) => {
  manualSeed(1);
  const b = new TransformerBlock({ width: 8, heads: 2, crossAttention: true, crossWidth: 6, dtype: 'float64' });
  t.deepEqual(b.namedChildren().map(([n]) => n), ['ln_1', 'attn', 'ln_cross', 'cross_attn', 'ln_2', 'mlp', 'drop']);
  const x = randn([2, 5, 8], f64), ctx = randn([2, 3, 6], f64);
  tidy(() => {
    let h = add(x, b.attn.forward(b.ln1.forward(x), null, { causal: true }));
    const noCtx = add(h, b.mlp.forward(b.ln2.forward(h)));
    h = add(h, b.crossAttn!.forward(b.lnCross!.forward(h), ctx));
    const want = add(h, b.mlp.forward(b.ln2.forward(h)));
    assertClose(t, b.forward(x, { causal: true, context: ctx }).toArray(), want.toArray(), 1e-12, 1e-12, 'with context');
    // without a context the cross-attention sub-layer is skipped (BLIP's unimodal 'text' mode)
    assertClose(t, b.forward(x, { causal: true }).toArray(), noCtx.toArray(), 1e-12, 1e-12, 'without context');
  });
  b.dispose();
});

test('post-LN block (BERT) is ln_1(x + attn x) -> ln_cross(h + cross) -> ln_2(h + mlp h)', (t) => {
  manualSeed(2);
  const b = new TransformerBlock({ width: 8, heads: 4, norm: 'post', crossAttention: true, lnEps: 1e-12, dtype: 'float64' });
  const x = randn([2, 4, 8], f64), ctx = randn([2, 6, 8], f64);
  tidy(() => {
    let h = b.ln1.forward(add(x, b.attn.forward(x, null, { keyPadding: [4, 2] })));
    h = b.lnCross!.forward(add(h, b.crossAttn!.forward(h, ctx, { keyPadding: [6, 1] })));
    const want = b.ln2.forward(add(h, b.mlp.forward(h)));
    const got = b.forward(x, { keyPadding: [4, 2], context: ctx, contextKeyPadding: [6, 1] });
    assertClose(t, got.toArray(), want.toArray(), 1e-12, 1e-12);
  });
  b.dispose();
});

test('a causal continuation over cached keys/values (prefix) equals the full causal pass', (t) => {
  manualSeed(3);
  const b = new TransformerBlock({ width: 8, heads: 2, activation: 'gelu_tanh', dtype: 'float64' });
  const x = randn([2, 7, 8], f64);
  tidy(() => {
    const full = b.forward(x, { causal: true });
    const x1 = slice(x, 1, 0, 4), x2 = slice(x, 1, 4);
    const prefix = b.attn.keyValue(b.ln1.forward(x1));  // layer's cached keys/values of the first 4 tokens
    const step = b.forward(x2, { causal: 'bottomRight', prefix });
    assertClose(t, step.toArray(), slice(full, 1, 4).toArray(), 1e-12, 1e-12);
  });
  b.dispose();
});

test('dropout is active in training mode only', (t) => {
  manualSeed(4);
  const b = new TransformerBlock({ width: 8, heads: 2, dropout: 0.3, attnDropout: 0.3 });
  const x = randn([2, 5, 8]);
  b.eval();
  const a = tidy(() => b.forward(x).toArray()), a2 = tidy(() => b.forward(x).toArray());
  t.deepEqual([...a], [...a2]);
  b.train();
  const c = tidy(() => b.forward(x).toArray());
  t.notDeepEqual([...a], [...c]);
  b.dispose();
});

test('gradcheck (float64): pre-LN causal stack with cross-attention and a mask; post-LN with padding', (t) => {
  manualSeed(5);
  const pre = new TransformerStack([
    new TransformerBlock({ width: 4, heads: 2, mlpWidth: 6, crossAttention: true, crossWidth: 3, activation: 'quick_gelu', dtype: 'float64' }),
    new TransformerBlock({ width: 4, heads: 2, mlpWidth: 6, dtype: 'float64' }),
  ]);
  t.deepEqual(pre.namedChildren().map(([n]) => n), ['0', '1']);
  // a non-contiguous input (transposed leaf) and a context with a size-1 batch-broadcast mask
  const x = noGrad(() => transpose(randn([2, 4, 3], f64), 1, 2)).requiresGrad_();
  const ctx = randn([2, 2, 3], f64).requiresGrad_();
  const cmask = tensor([[[[1, 0], [1, 1], [0, 1]]]], undefined, { dtype: 'uint8' });  // [1, 1, 3, 2]
  const w = pre.blocks[0]!.crossAttn!.kProj.weight;
  assertGradcheck(t, (xi, ci) => pre.forward(xi!, { causal: true, context: ci, contextMask: cmask }), [x, ctx, w], {}, 'pre-LN');

  const post = new TransformerBlock({ width: 4, heads: 1, mlpWidth: 5, norm: 'post', dtype: 'float64' });
  const y = randn([2, 3, 4], f64).requiresGrad_();
  assertGradcheck(t, (yi) => post.forward(yi!, { keyPadding: [3, 2] }), [y, post.ln1.weight!], {}, 'post-LN');
  pre.dispose(); post.dispose();
});

test('config errors name the key, the expectation and the value', (t) => {
  t.throws(() => new TransformerBlock({ width: 10, heads: 4 }), {
    instanceOf: RangeError, message: 'TransformerBlock: expected a multiple of heads (4) for width but received the number 10',
  });
  t.throws(() => new TransformerBlock({ width: 8, heads: 0 }), {
    instanceOf: RangeError, message: 'TransformerBlock: expected an integer >= 1 for heads but received the number 0',
  });
  t.throws(() => new TransformerBlock({ width: 8, heads: 2, norm: 'sandwich' as 'pre' }), {
    instanceOf: TypeError, message: "TransformerBlock: expected one of 'pre', 'post' for norm but received the string 'sandwich'",
  });
  t.throws(() => new TransformerBlock({ width: 8, heads: 2, dropuot: 0.1 } as never), {
    instanceOf: TypeError, message: /unknown key 'dropuot'/,
  });
  const b = new TransformerBlock({ width: 8, heads: 2 });
  t.throws(() => b.forward(randn([2, 3, 6])), { instanceOf: RangeError, message: /expected a tensor \[batch, length, 8\] for x but received shape \[2, 3, 6\]/ });
  t.throws(() => new TransformerStack([b, {} as TransformerBlock]), { instanceOf: TypeError, message: /blocks\[1\]/ });
  b.dispose();
});

test('TransformerStack applies its blocks in order with the same options', (t) => {
  manualSeed(6);
  const blocks = [0, 1, 2].map(() => new TransformerBlock({ width: 8, heads: 2, dtype: 'float64' }));
  const s = new TransformerStack(blocks);
  const x = randn([1, 4, 8], f64);
  tidy(() => {
    let h: Tensor = x;
    for (const b of blocks) h = b.forward(h, { causal: true });
    assertClose(t, s.forward(x, { causal: true }).toArray(), h.toArray(), 0, 0);
    t.deepEqual(s.forward(x).shape, [1, 4, 8]);
  });
  t.is(s.length, 3);
  s.dispose();
});
