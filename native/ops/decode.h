// decode family: what one incremental decoder step needs beyond the ordinary layers —
// a per-layer KV cache that grows one position per step (preallocated, written in place,
// beams reordered in place), attention of the new queries over the cache, and token
// selection over the step's [N, V] logits (greedy, sampling with temperature / top-k /
// top-p, beam-search candidates), plus the HF logits processors that run before them.
//
// Shapes: N rows (batch * beams), H heads, Dh head dim, E = H * Dh, T new positions of the
// step (1 while decoding; the prompt length at the first step), Lmax cache capacity,
// Lk keys, V vocabulary, K beams, B = N / K batches.
//
// The cache is [N, H, Lmax, Dh] contiguous (one for keys, one for values per layer); the
// valid positions are [0, length). Rows x [N, T, E] are views with a unit last stride (the
// output of a linear layer, or a slice of a fused q/k/v projection).
//
// Never materialised: the [N, H, T, Lk] scores beyond one row per thread; the sorted
// vocabulary (sampling partially selects only the candidates it needs).
//
// Inference only: nothing here has a backward (decoding runs without gradients).
#pragma once
#include <cstdint>
#include "core/tensor.h"

namespace vlm {

struct DecodeAttentionOptions {
  double scale = 1.0;
  int64_t length = 0;              // keys [0, length) are the candidates
  bool causal = false;             // query t of T sees keys j <= length - T + t
  const Tensor* key_mask = nullptr;  // uint8 [N, Lk] (any strides), nonzero = may attend, or null
};

struct SampleOptions {
  double temperature = 1.0;  // > 0; scores are divided by it first
  int64_t top_k = 0;         // 0 = off; keeps tokens >= the k-th largest score (ties kept, as HF)
  double top_p = 1.0;        // in (0, 1]; 1 = off; keeps the top tokens whose preceding mass < top_p
  int64_t min_keep = 1;      // at least this many tokens survive each filter
  uint64_t seed = 0, offset = 0;  // row n draws Philox::uniform(seed, offset + n)
};

struct BeamSampleOptions {
  uint64_t seed = 0, offset = 0;  // candidate (row n, token t) draws Philox::uniform(seed, offset + n * V + t)
};

namespace cpu {

// cache_k, cache_v [N, H, Lmax, Dh] contiguous; k, v [N, T, E] (unit last stride), written
// at positions [position, position + T). Same float dtype.
void kv_cache_write(Tensor& cache_k, Tensor& cache_v, const Tensor& k, const Tensor& v, int64_t position);

// In place over positions [0, length): row i becomes the old row index[i] (index [N] in
// [0, N), repeats allowed). Rows with index[i] == i are not touched; the others are copied
// in dependency order (a row is overwritten only once nobody still needs its old values),
// and permutation cycles go through one row of scratch.
void kv_cache_reorder(Tensor& cache, const int32_t* index, int64_t length);

// q [N, T, E] (unit last stride) attends to k, v [N, H, Lk, Dh] (any strides, unit last)
// over keys [0, o.length) -> out [N, T, E] contiguous (heads merged, ready for the output
// projection). Each (row, head, query) is one independent softmax: the result does not
// depend on the thread count. A query that sees no key gets zeros.
void decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, const DecodeAttentionOptions& o,
                      Tensor& out);

// scores [N, V] contiguous, in place: log_softmax per row first when log_softmax (beam
// search scores log-probabilities); then HF's repetition penalty over every id in row n of
// history [N, L] (negative ids skipped; each distinct id once): s > 0 -> s / penalty,
// s <= 0 -> s * penalty; then the `n_suppress` ids in suppress get -inf (minimum length:
// the end-of-sequence ids). penalty 1 and n_suppress 0 skip those passes. Last, when warp is
// given, HF's warpers (beam sampling): scores divided by warp->temperature, then every token
// that decode_sample's top-k / top-p filters would drop set to -inf (seed/offset unused).
void decode_process_logits(Tensor& scores, bool log_softmax, const int32_t* history, int64_t history_len,
                           double penalty, const int32_t* suppress, int64_t n_suppress,
                           const SampleOptions* warp = nullptr);

// out[n] = the first index of row n's maximum (NaN never wins). scores [N, V] contiguous.
void decode_argmax(const Tensor& scores, int32_t* out);

// out[n] = one token drawn from softmax(scores[n] / temperature) restricted by top-k then
// top-p (HF's TopKLogitsWarper then TopPLogitsWarper). scores [N, V] contiguous.
void decode_sample(const Tensor& scores, const SampleOptions& o, int32_t* out);

// For each batch b of `beams` consecutive rows: the `count` largest beam_scores[n] + scores[n, t]
// over its rows n and tokens t, best first; ties go to the lower (beam, token). Outputs [B, count]:
// out_scores (float64), tokens, and the beam within the batch. Candidates of -inf are returned as
// such (the caller skips them). count <= beams * V.
// With sample (HF's beam sampling): the `count` candidates are instead drawn without replacement
// from softmax over the batch's beams * V values s = beam_scores[n] + scores[n, t] (torch.multinomial
// without replacement, as Gumbel-top-k: the largest s - log(-log(u)) with u the Philox element
// sample->offset + n * V + t), then returned sorted by s, best first. Candidates of s = -inf are
// drawn only when nothing else is left.
void decode_beam_candidates(const Tensor& scores, const double* beam_scores, int64_t beams, int64_t count,
                            double* out_scores, int32_t* tokens, int32_t* beam_of,
                            const BeamSampleOptions* sample = nullptr);

}  // namespace cpu
}  // namespace vlm
