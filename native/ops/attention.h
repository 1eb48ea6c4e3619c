// attention family: fused multi-head scaled-dot-product attention, forward and backward,
// and a materialised float64 reference.
//
//   S = scale * Q K^T (+ bias), masked entries -inf;  P = softmax_rows(S);
//   P~ = P * Z / (1 - p) (dropout);  O = P~ V;  lse = logsumexp_rows(S)
//
// Shapes: B batch, H heads, Lq queries, Lk keys, Dh query/key head dim, Dv value head dim.
// q [B, H, Lq, Dh], k [B, H, Lk, Dh], v [B, H, Lk, Dv]: any strides with a unit last stride.
// out [B, H, Lq, Dv] and lse [B, H, Lq] contiguous, q's dtype.
//
// Masks combine (AND); a key is visible to query i of sample b, head h when all hold:
//   causal       j <= i + causal_offset (torch's is_causal is top-left: offset 0;
//                bottom-right alignment, for a query block after cached keys: Lk - Lq)
//   key_padding  j < len[b]  (int32 [B], values in [0, Lk])
//   mask         mask[b, h, i, j] != 0   (uint8, broadcast view: stride 0 on size-1 dims)
//   bias         bias[b, h, i, j] > -inf (float, q's dtype, same broadcast; added to the
//                scaled scores, so finite values shift them)
// A query row that sees no key gets out = 0, lse = -inf and zero gradients.
//
// Dropout keeps P[b, h, i, j] when Philox::uniform(seed, offset + ((b*H + h)*Lq + i)*Lk + j)
// >= p, the same stream as the dropout family on a [B, H, Lq, Lk] tensor, so the mask is
// independent of tiles and threads and the backward regenerates it.
//
// Never materialised by the fused kernels: the [B, H, Lq, Lk] scores or probabilities
// (only a tile per thread). The forward saves the row logsumexp; the backward recomputes
// each score tile from q, k and lse, with D_i = rowsum(dO * O) precomputed.
#pragma once
#include <cstdint>
#include "core/tensor.h"

namespace vlm {

struct AttentionOptions {
  double scale = 1.0;
  bool causal = false;
  int64_t causal_offset = 0;          // query i sees keys j <= i + causal_offset
  const Tensor* mask = nullptr;       // uint8 [B, H, Lq, Lk] (broadcast strides allowed), or null
  const Tensor* bias = nullptr;       // float [B, H, Lq, Lk] (broadcast strides allowed), or null
  const Tensor* key_padding = nullptr;  // int32 [B] contiguous, values in [0, Lk], or null
  double dropout = 0.0;               // in [0, 1)
  uint64_t seed = 0, offset = 0;
};

namespace cpu {

// q [B,H,Lq,Dh], k [B,H,Lk,Dh], v [B,H,Lk,Dv] -> out [B,H,Lq,Dv], lse [B,H,Lq] (both preallocated,
// contiguous). Parallel over (b, h, query tile); each row's result does not depend on threads.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o, Tensor& out,
                       Tensor& lse);

// dq [B,H,Lq,Dh], dk [B,H,Lk,Dh], dv [B,H,Lk,Dv] (preallocated contiguous, or null when not
// wanted) from out, lse of the forward and dout [B,H,Lq,Dv] (unit last stride). Parallel over
// (b, h, key chunk); the chunking depends on the sizes only, so results do not depend on threads.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const AttentionOptions& o, Tensor* dq, Tensor* dk, Tensor* dv);

// The slow obvious path in float64 (tests): materialises each (b, h) score matrix. Inputs of
// either float dtype; out, lse, dq, dk, dv are float64 and preallocated; gradients (for the
// upstream gradient dout) only when dout is non-null.
void attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o, Tensor& out,
                         Tensor& lse, const Tensor* dout, Tensor* dq, Tensor* dk, Tensor* dv);

// Query rows and keys per tile (tests force ragged tiles; benchmarks tune). Values >= 1.
void attention_set_tiles(int64_t rows, int64_t cols);
void attention_get_tiles(int64_t& rows, int64_t& cols);
// Whether float32 tile products may use the AVX-512 kernel (cpu/attention_avx512.h; on
// by default), and whether they do (the CPU has AVX-512 and it is on).
void attention_set_tile_kernel(bool avx512);
bool attention_tile_kernel_avx512();

}  // namespace cpu
}  // namespace vlm
