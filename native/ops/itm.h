// itm family: image-text matching (ALBEF, BLIP, BLIP-2). Two fused kernels:
//
// Hard-negative mining. With sim(i, j) = max_q image[i, q] . text[j] / temperature
// (Q = 1 for image features [B, D]), every image i draws one negative text and every
// text j one negative image, from the masked softmax of its similarity row:
//   P_i2t(j | i) = exp(sim(i, j)) / sum_{k allowed} exp(sim(i, k))   for j allowed, else 0
//   P_t2i(i | j) = the same over the column j of sim
// where "allowed" excludes the sample itself and, with image ids, every sample with
// the same id (LAVIS BLIP-2: sim.masked_fill_(mask, -10000) then softmax). With a
// weight floor f > 0 the weights are LAVIS blip_pretrain.py's instead:
//   w_j = softmax over ALL columns (the positive included) + f for allowed j, 0 otherwise,
// drawn with probability w_j / sum w. The B x B similarities are never stored: each
// row tile takes two passes over the column tiles (GEMM tiles): the row normaliser
// (online logsumexp, also per segment of column tiles), then an inverse-CDF draw with
// u ~ U(0, 1) from Philox element (seed, offset + dir * B + row), dir 0 for image rows
// and 1 for text rows, which recomputes only the segment where the row's CDF passes
// u * Z. The draw does not depend on the thread count.
//
// Head. The 2-way classifier on the multimodal output of the 3B (positive,
// text-negative, image-negative) pairs and its cross-entropy, forward and backward in
// one pass. features [N, Q, H] (N = 3B; Q = 1 for BLIP's [ENC] token, Q query outputs
// for BLIP-2), weight [2, H], bias [2]:
//   z_n = mean_q (W x_{n,q} + b) = W xbar_n + b,   y_n = 1 for n < N/3, else 0,
//   L = 1/N sum_n (logsumexp(z_n) - z_{n,y_n}),
//   dz_n = (softmax(z_n) - onehot(y_n)) / N,  dx_{n,q} = W^T dz_n / Q,
//   dW = sum_n dz_n xbar_n^T,  db = sum_n dz_n.
#pragma once
#include <cstdint>
#include <optional>
#include "core/tensor.h"

namespace vlm {

// Every input of a mining call, checked by the binding: CPU, contiguous, one float
// dtype, B >= 2, ids int32 [B] not all equal, temperature finite and > 0.
struct ItmMineInputs {
  Tensor image;  // [B, Q, D] (a rank-2 image is viewed as Q = 1)
  Tensor text;   // [B, D]
  int64_t B = 0, Q = 1, D = 0;
  double temperature = 1;
  std::optional<Tensor> ids;  // int32 [B]
  uint64_t seed = 0, offset = 0;
  double floor = 0;  // LAVIS's +1e-4 on the softmax weights when > 0; 0 = exact masked softmax
};

struct ItmMineResult {
  Tensor neg_text;   // int32 [B]: the negative text of image i
  Tensor neg_image;  // int32 [B]: the negative image of text j
  // The first row (and its direction, 0 image / 1 text) whose similarities were not
  // finite (overflow after dividing by the temperature); -1 when none. The indices are
  // then meaningless (but in range) and the binding throws.
  int64_t bad_row = -1;
  int bad_dir = 0;
  std::optional<Tensor> prob_i2t, prob_t2i;  // reference only, when asked: float64 [B, B]
};

struct ItmHeadResult {
  double loss = 0;
  int64_t correct = 0;             // rows whose arg-max logit (first on ties) is the label
  std::optional<Tensor> d_features;  // like features, when asked
  std::optional<Tensor> d_weight;    // [2, H]
  std::optional<Tensor> d_bias;      // [2]
};

namespace cpu {
// B batch, Q query tokens, D dim. Memory: the two int32 [B] outputs plus, per thread,
// one tile set (TM x TN similarities, their GEMM tile, TM gathered rows) and the row
// state with its rows x segments table (at most g_seg_cells x 24 bytes, 1.5 MiB).
ItmMineResult itm_mine(const ItmMineInputs& in);
// The naive path in the inputs' dtype (tests, benchmarks): materialises the B x B
// similarities and both B x B weight matrices, then draws with the same uniforms.
// Returns the normalised probabilities (float64) when `probs`.
ItmMineResult itm_mine_reference(const ItmMineInputs& in, bool probs);
// Rows x columns (in GEMM rows: entities x Q) of a mining tile, and the most rows x
// segments a thread's segment table holds (more column tiles than that are grouped into
// segments of several tiles); tests use tiny ragged tiles and small tables.
void itm_set_tiles(int64_t rows, int64_t cols, int64_t segment_cells);
int64_t itm_row_tile();
int64_t itm_col_tile();
int64_t itm_segment_cells();

// N = 3B rows, Q tokens, H hidden. features [N, Q, H], weight [2, H], bias [2], all
// contiguous, one float dtype. Gradients (of grad_scale * L) only where asked; they are
// reduced over fixed row chunks in a fixed order, so they do not depend on the thread count.
ItmHeadResult itm_head(const Tensor& features, int64_t Q, const Tensor& weight, const Tensor& bias, double grad_scale,
                       bool need_features, bool need_weight, bool need_bias);
// The slow obvious head in float64 whatever the dtype: per-query logits [N, Q, 2]
// materialised, averaged, log-softmax, gradients by the textbook formulas (grad_scale 1).
ItmHeadResult itm_head_reference(const Tensor& features, int64_t Q, const Tensor& weight, const Tensor& bias);
}  // namespace cpu

}  // namespace vlm
