// infonce family: the symmetric image-text contrastive loss (InfoNCE / ITC) of CLIP,
// ALIGN, BLIP and BLIP-2, fused. The forward walks tiles of the similarity matrix
// (GEMM, then scale, max over query tokens, online logsumexp for rows and columns)
// and keeps only O(B) per-row statistics; the backward recomputes each tile and
// accumulates d(image), d(text) by GEMM. The B x B (or B x (B+K)) logits are never
// stored. The reference below does store them, in float64, for tests and benchmarks.
//
// Notation. Image features [B, Q, D] (Q = 1 for a rank-2 image; Q > 1 means
// sim(i, j) = max_q image[i, q] . text[j], as BLIP-2), text features [B, D]. Two
// directions, each a row-wise cross-entropy over its columns:
//   i2t: rows image[o, o+b) against columns [text (or momentum text) of the batch; text queue]
//   t2i: rows text[o, o+b)  against columns [image (or momentum image) of the batch; image queue]
// logits s = scale * cos (cos = plain dot products when normalize is off), with
// scale = exp(p) (CLIP's logit scale p) or 1/p (a temperature divisor p).
// Targets of row g (global index) over N = B + K columns:
//   y = (1-eps) * [ (1-alpha) * hard + alpha * softmax(momentum row . columns * scale) ] + eps/N
// with hard = one-hot at column g, or with image ids uniform over the columns whose id
// equals id[g] (queue columns count through queue ids when given). Loss:
//   L = 1/2 (mean_i CE_i2t(i) + mean_i CE_t2i(i)),  CE = logsumexp(s_row) - sum_j y_j s_j.
#pragma once
#include <cstdint>
#include <optional>
#include "core/tensor.h"

namespace vlm {

enum class InfonceScaleMode { LogitScale, Temperature };

// Every input of one call, checked by the binding: CPU, contiguous, one float dtype
// (ids int32), shapes consistent. Optional tensors are absent when unused.
struct InfonceInputs {
  Tensor image;  // [B, Q, D] (a rank-2 image is viewed as Q = 1)
  Tensor text;   // [B, D]
  int64_t B = 0, Q = 1, D = 0;
  double param = 0;  // value of the temperature parameter
  InfonceScaleMode mode = InfonceScaleMode::LogitScale;
  bool normalize = false;             // L2-normalise every feature row (each query token) first
  double smoothing = 0;               // label smoothing eps in [0, 1]
  std::optional<Tensor> ids;          // int32 [B]
  int64_t K = 0;                      // queue length (0: no queue)
  std::optional<Tensor> queue_image;  // [K, Q, D]
  std::optional<Tensor> queue_text;   // [K, D]
  std::optional<Tensor> queue_ids;    // int32 [K] (needs ids)
  std::optional<Tensor> mom_image;    // [B, Q, D]
  std::optional<Tensor> mom_text;     // [B, D]
  double alpha = 0;                   // distillation weight in [0, 1] (with momentum)
  int64_t row_offset = 0, row_count = 0;  // rows [o, o+b) of the global batch

  double scale() const;  // exp(param) or 1/param
};

struct InfonceForwardResult {
  double loss = 0;
  double acc_i2t = 0, acc_t2i = 0;  // top-1 accuracy: the row's arg-max column is a positive
  Tensor saved;                     // float64 [2, 3, b]: per direction LSE, momentum LSE, positives count
};

struct InfonceGradients {
  std::optional<Tensor> d_image;  // like image, when asked for
  std::optional<Tensor> d_text;   // like text, when asked for
  double d_param = 0;             // dL/dp for the temperature parameter
};

struct InfonceReferenceResult {
  double loss = 0, acc_i2t = 0, acc_t2i = 0;
  Tensor d_image, d_text;  // dL/d(image), dL/d(text) for an upstream gradient of 1
  double d_param = 0;
};

namespace cpu {
// B batch, Q query tokens, D dim, b local rows, K queue. O(B + K) memory besides the
// inputs, plus one tile set per thread.
InfonceForwardResult infonce_forward(const InfonceInputs& in);
// Recomputes the tiles; grad_loss is dL_total/dL. Gradients only where asked
// (d_param is 0 when not asked).
InfonceGradients infonce_backward(const InfonceInputs& in, const Tensor& saved, double grad_loss, bool need_image,
                                  bool need_text, bool need_param);
// The slow obvious path in the inputs' dtype: materialises the normalised features and
// the logit and gradient matrices (b x N per direction, plus the momentum logits), forms
// targets and softmax row by row, then gradients by the textbook formulas (the chain
// through x / max(||x||, eps) written out). Shares no code with the fused path.
InfonceReferenceResult infonce_reference(const InfonceInputs& in);
// GEMM rows x columns of a tile (default 256 x 256): tests use tiny ragged tiles.
void infonce_set_tiles(int64_t rows, int64_t cols);
int64_t infonce_row_tile();
int64_t infonce_col_tile();
// Largest relative error of the kernel's vectorised float32 exp against std::exp
// over n points evenly spread in [lo, hi] (for tests).
double infonce_exp_max_rel_error(double lo, double hi, int64_t n);
}  // namespace cpu

}  // namespace vlm
