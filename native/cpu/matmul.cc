// matmul family, CPU: batched GEMM over broadcast batch dims, and linear with the
// bias fused into the GEMM (C starts as the broadcast bias, beta = 1) and its
// backward (dx and dW as one GEMM each over all rows, db a fixed-order column sum).
// Strided operands are read in place whenever their rows or columns are contiguous.
#include "ops/matmul.h"
#include <omp.h>
#include <algorithm>
#include <type_traits>
#include <vector>
#include "core/gemm.h"
#include "core/parallel.h"
#include "cpu/elementwise_avx512.h"
#include "ops/copy.h"
#include "ops/elementwise.h"

namespace vlm {
namespace cpu {
namespace {

// The last two dims of a tensor as a GEMM operand: the tensor to read (the input
// itself, or `own`, a copy), its row stride `ld`, and `flip` when the stored matrix is
// the transpose of the logical one (columns contiguous).
struct Operand {
  const Tensor* t;
  int64_t ld;
  bool flip;
  Tensor own;
  const Tensor& tensor() const { return t ? *t : own; }
};

// r rows, c columns, strides sr, sc -> read in place when one of the two is
// contiguous and rows (or columns) do not overlap; otherwise a compact copy in which
// broadcast batch dims (stride 0) stay broadcast instead of being materialised.
Operand operand(const Tensor& t) {
  const int64_t d = t.dim();
  const int64_t r = t.shape[d - 2], c = t.shape[d - 1], sr = t.strides[d - 2], sc = t.strides[d - 1];
  if ((c <= 1 || sc == 1) && (r <= 1 || sr >= std::max<int64_t>(c, 1)))
    return {&t, r <= 1 ? std::max<int64_t>(c, 1) : sr, false, {}};
  if ((r <= 1 || sr == 1) && (c <= 1 || sc >= std::max<int64_t>(r, 1)))
    return {&t, c <= 1 ? std::max<int64_t>(r, 1) : sc, true, {}};
  Tensor src = t;
  for (int64_t i = 0; i < d - 2; ++i)
    if (t.strides[i] == 0) src.shape[i] = 1;
  Operand o{nullptr, std::max<int64_t>(c, 1), false, Tensor::empty(src.shape, t.dtype, Device::CPU)};
  copy(src, o.own);
  for (int64_t i = 0; i < d - 2; ++i)
    if (src.shape[i] != t.shape[i]) o.own.strides[i] = 0;
  o.own.shape = t.shape;
  return o;
}

// Element offset (from t.data()) of each batch matrix; t's batch dims are aligned
// to the right of `batch`, missing or size-1 dims broadcast.
std::vector<int64_t> batch_offsets(const Tensor& t, const Shape& batch) {
  const int64_t nd = static_cast<int64_t>(batch.size()), tb = t.dim() - 2, lead = nd - tb;
  Shape st(nd, 0);
  for (int64_t i = lead; i < nd; ++i)
    if (t.shape[i - lead] != 1) st[i] = t.strides[i - lead];
  const int64_t nb = shape_numel(batch);
  std::vector<int64_t> off(static_cast<size_t>(std::max<int64_t>(nb, 1)), 0);
  Shape idx(nd, 0);
  int64_t cur = 0;
  for (int64_t n = 0; n < nb; ++n) {
    off[n] = cur;
    for (int64_t i = nd - 1; i >= 0; --i) {  // odometer increment
      cur += st[i];
      if (++idx[i] < batch[i]) break;
      cur -= st[i] * batch[i];
      idx[i] = 0;
    }
  }
  return off;
}

Shape broadcast_batch(const Tensor& a, const Tensor& b) {
  const int64_t na = a.dim() - 2, nb = b.dim() - 2, nd = std::max(na, nb);
  Shape out(nd, 1);
  for (int64_t i = 0; i < nd; ++i) {
    int64_t da = i - (nd - na) >= 0 ? a.shape[i - (nd - na)] : 1;
    int64_t db = i - (nd - nb) >= 0 ? b.shape[i - (nd - nb)] : 1;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// x [..., I] as a 2-D [R, I] view when the leading dims merge into one stride,
// else as a contiguous copy.
Tensor rows_view(const Tensor& x) {
  const int64_t d = x.dim(), I = x.shape[d - 1];
  int64_t R = 1, rs = std::max<int64_t>(I, 1), expect = -1;
  bool ok = true;
  for (int64_t i = d - 2; i >= 0; --i) {
    R *= x.shape[i];
    if (x.shape[i] == 1) continue;
    if (expect < 0) rs = x.strides[i];
    else if (x.strides[i] != expect) ok = false;
    expect = x.strides[i] * x.shape[i];
  }
  Tensor v = x;
  if (!ok) {
    v = Tensor::empty(x.shape, x.dtype, Device::CPU);
    copy(x, v);
    rs = std::max<int64_t>(I, 1);
  }
  v.shape = {R, I};
  v.strides = {rs, d >= 1 ? v.strides[d - 1] : 1};
  return v;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const int64_t ra = a.dim(), rb = b.dim();
  const int64_t M = trans_a ? a.shape[ra - 1] : a.shape[ra - 2];
  const int64_t K = trans_a ? a.shape[ra - 2] : a.shape[ra - 1];
  const int64_t N = trans_b ? b.shape[rb - 2] : b.shape[rb - 1];
  const Shape batch = broadcast_batch(a, b);
  Shape os = batch;
  os.push_back(M);
  os.push_back(N);
  Tensor out = Tensor::empty(os, a.dtype, Device::CPU);
  if (out.numel() == 0) return out;
  if (K == 0) {
    fill(out, 0.0);
    return out;
  }
  const int64_t nb = shape_numel(batch);
  const Operand la = operand(a), lb = operand(b);
  const Tensor &ta_t = la.tensor(), &tb_t = lb.tensor();
  const bool ta = trans_a != la.flip, tb = trans_b != lb.flip;
  const std::vector<int64_t> offa = batch_offsets(ta_t, batch), offb = batch_offsets(tb_t, batch);

  // A batched, row-major a against one shared b (x @ W): the batch folds into the rows.
  bool fold = nb > 1 && !ta;
  for (int64_t i = 1; i < nb && fold; ++i) fold = offb[i] == offb[0] && offa[i] == offa[0] + i * M * la.ld;

  dispatch_float(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* A = ta_t.data<T>();
    const T* B = tb_t.data<T>();
    T* C = out.data<T>();
    if (nb == 1 || fold) {  // one multithreaded GEMM
      gemm(ta, tb, nb * M, N, K, T(1), A + offa[0], la.ld, B + offb[0], lb.ld, T(0), C, N);
      return;
    }
    auto one = [&](int64_t i) { gemm(ta, tb, M, N, K, T(1), A + offa[i], la.ld, B + offb[i], lb.ld, T(0), C + i * M * N, N); };
    const double flops = static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
    const int nt = num_threads();
    if (nt > 1 && (flops <= double(1 << 21) || nb >= 4 * nt)) {
      // Many small matrices: threads over the batch, each GEMM single-threaded.
      const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(double(1 << 16) / std::max(flops, 1.0)));
      parallel_for(nb, grain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) one(i);
      });
    } else {
      for (int64_t i = 0; i < nb; ++i) one(i);
    }
  });
  return out;
}

namespace {

// y = residual + x W^T + bias. With gate != 0 and on the row-chunked path, act_out is
// allocated and each chunk's x sigmoid(gate x) written to it while the chunk is in L2.
Tensor linear_impl(const Tensor& x, const Tensor& weight, const Tensor* bias, const Tensor* residual, float gate,
                   Tensor* act_out) {
  const int64_t I = x.shape.back(), O = weight.shape[0];
  Shape ys = x.shape;
  ys.back() = O;
  Tensor y = Tensor::empty(ys, x.dtype, Device::CPU);
  if (y.numel() == 0) return y;
  const Tensor x2 = rows_view(x);
  const int64_t R = x2.shape[0];
  const Operand lx = operand(x2), lw = operand(weight);
  const Tensor res = residual ? contiguous(*residual) : Tensor();
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    T* Y = y.data<T>();
    // Rows r0..r0+m of C before the GEMM adds x W^T: bias + residual (either may be absent).
    const T* bp = bias ? bias->data<T>() : nullptr;
    const int64_t bs = bias ? bias->strides[0] : 0;
    const T* rp = residual ? res.data<T>() : nullptr;
    auto start_rows = [&](int64_t r0, int64_t m) {
      T* Yc = Y + r0 * O;
      const T* Rc = rp ? rp + r0 * O : nullptr;
      for (int64_t r = 0; r < m; ++r) {
        T* yr = Yc + r * O;
        if (bp && Rc) for (int64_t j = 0; j < O; ++j) yr[j] = Rc[r * O + j] + bp[j * bs];
        else if (Rc) for (int64_t j = 0; j < O; ++j) yr[j] = Rc[r * O + j];
        else for (int64_t j = 0; j < O; ++j) yr[j] = bp[j * bs];
      }
    };
    if constexpr (std::is_same_v<T, float>) {
      // Many rows with a bias or residual: fixed chunks of rows, each filled with them and
      // then accumulated into by a one-thread GEMM while it is still in L2, the chunks
      // spread over the threads. One pass over y instead of two (the fill wrote all of y
      // to memory and the GEMM read it back: ~0.3 ms of a [8320, 128] output's 1.6 ms in
      // the CLIP step), and a residual costs no separate add. Chunks depend on the shape
      // only, so the bits do not depend on the thread count.
      const int64_t chunk = std::max<int64_t>(64, (int64_t{192} << 10) / (4 * O));
      if ((bias || residual) && R >= 8 * chunk && !lx.flip && !omp_in_parallel() && num_threads() > 1 && !gemm_uses_bf16()) {
        const float* X = lx.tensor().data<float>();
        const float* Wp = lw.tensor().data<float>();
        const int64_t nchunks = (R + chunk - 1) / chunk;
        const int nt = num_threads();
        float* A = nullptr;
        if (gate != 0.f) {
          *act_out = Tensor::empty(y.shape, y.dtype, Device::CPU);
          A = act_out->data<float>();
        }
#pragma omp parallel num_threads(nt)
        {
          omp_set_num_threads(1);  // the GEMMs below run on this thread only
          const int t = omp_get_thread_num(), tn = omp_get_num_threads();
          for (int64_t c = nchunks * t / tn; c < nchunks * (t + 1) / tn; ++c) {
            const int64_t r0 = c * chunk, m = std::min(chunk, R - r0);
            start_rows(r0, m);
            gemm(false, !lw.flip, m, O, I, 1.f, X + r0 * lx.ld, lx.ld, Wp, lw.ld, 1.f, Y + r0 * O, O);
            if (A) gate_forward_avx512(Y + r0 * O, A + r0 * O, m * O, gate, true);
          }
        }
        return;
      }
    }
    T beta = T(0);
    if (bias || residual) {  // C starts as bias + residual; the GEMM adds x W^T to it
      beta = T(1);
      parallel_for(R, std::max<int64_t>(1, 16384 / O), [&](int64_t r0, int64_t r1) { start_rows(r0, r1 - r0); });
    }
    // y [R, O] = x [R, I] . (W [O, I])^T
    gemm(lx.flip, !lw.flip, R, O, I, T(1), lx.tensor().data<T>(), lx.ld, lw.tensor().data<T>(), lw.ld, beta, Y, O);
  });
  return y;
}

// The gate constant of a sigmoid-gated activation (x sigmoid(a x)), or 0 for any other.
float gate_of(UnaryOp act) { return act == UnaryOp::QuickGelu ? 1.702f : act == UnaryOp::Silu ? 1.f : 0.f; }

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor* bias, const Tensor* residual) {
  return linear_impl(x, weight, bias, residual, 0.f, nullptr);
}

LinearActivation linear_activation(const Tensor& x, const Tensor& weight, const Tensor* bias, UnaryOp act) {
  LinearActivation r;
  const float gate = x.dtype == DType::F32 && gate_avx512_available() ? gate_of(act) : 0.f;
  r.pre = linear_impl(x, weight, bias, nullptr, gate, &r.out);
  if (!r.out.storage) r.out = unary(act, r.pre);  // not fused: the elementwise family's kernel
  return r;
}

LinearGrads linear_backward(const Tensor& x, const Tensor& weight, const Tensor& gy, bool need_x, bool need_weight,
                            bool need_bias, Tensor* dx_into) {
  const int64_t I = x.shape.back(), O = weight.shape[0];
  LinearGrads out;
  const Tensor g2 = rows_view(gy);
  const int64_t R = g2.shape[0];
  const Operand lg = operand(g2);
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* G = lg.tensor().data<T>();
    if constexpr (std::is_same_v<T, float>) {
      // bf16 GEMMs (matmul precision medium): g feeds both products, so it is rounded
      // once here instead of once per GEMM ([R, O] is the largest operand of either).
      if (gemm_uses_bf16() && need_x && need_weight && bf16_pays(R, I, O) && bf16_pays(O, I, R)) {
        const int64_t gr = lg.flip ? O : R, gc = lg.flip ? R : O;
        std::vector<uint16_t> gh(static_cast<size_t>(gr * gc));
        to_bf16(G, gr, gc, lg.ld, gh.data());
        const Operand lw = operand(weight);
        const Tensor x2 = rows_view(x);
        const Operand lx = operand(x2);
        const int64_t wr = lw.flip ? I : O, wc = lw.flip ? O : I;
        const int64_t xr = lx.flip ? I : R, xc = lx.flip ? R : I;
        std::vector<uint16_t> wh(static_cast<size_t>(wr * wc)), xh(static_cast<size_t>(xr * xc));
        to_bf16(lw.tensor().data<T>(), wr, wc, lw.ld, wh.data());
        to_bf16(lx.tensor().data<T>(), xr, xc, lx.ld, xh.data());
        if (!dx_into) out.dx = Tensor::empty(x.shape, x.dtype, Device::CPU);
        gemm(lg.flip, lw.flip, R, I, O, 1.f, gh.data(), gc, wh.data(), wc, dx_into ? 1.f : 0.f,
             (dx_into ? *dx_into : out.dx).data<T>(), I);
        out.dweight = Tensor::empty({O, I}, x.dtype, Device::CPU);
        gemm(!lg.flip, lx.flip, O, I, R, 1.f, gh.data(), gc, xh.data(), xc, 0.f, out.dweight.data<T>(), I);
        need_x = need_weight = false;  // done; the bias below still runs
      }
    }
    if (need_x) {  // dx [R, I] = g [R, O] . W [O, I] (+ dx_into)
      if (!dx_into) out.dx = Tensor::empty(x.shape, x.dtype, Device::CPU);
      Tensor& dst = dx_into ? *dx_into : out.dx;
      if (dst.numel() > 0) {
        const Operand lw = operand(weight);
        gemm(lg.flip, lw.flip, R, I, O, T(1), G, lg.ld, lw.tensor().data<T>(), lw.ld, T(dx_into ? 1 : 0), dst.data<T>(), I);
      }
    }
    if (need_weight) {  // dW [O, I] = g^T [O, R] . x [R, I]: the sum over rows is the GEMM's K
      out.dweight = Tensor::empty({O, I}, x.dtype, Device::CPU);
      if (O * I > 0) {
        const Tensor x2 = rows_view(x);  // outlives lx, which may point to it
        const Operand lx = operand(x2);
        gemm(!lg.flip, lx.flip, O, I, R, T(1), G, lg.ld, lx.tensor().data<T>(), lx.ld, T(0), out.dweight.data<T>(), I);
      }
    }
    if (need_bias) {  // db [O]: each column summed over rows 0..R-1 in a fixed order
      out.dbias = Tensor::empty({O}, x.dtype, Device::CPU);
      T* db = out.dbias.data<T>();
      const T* gp = g2.data<T>();
      const int64_t sr = g2.strides[0], sc = g2.strides[1];
      // Blocks of kBlock rows are summed in T (a vectorised add per row), then each
      // block's sums are added into double: the order depends on the sizes only, and
      // float32 rounding stays that of 64-term sums (converting every element to double
      // made db of a [8320, 512] gradient cost 1.1 ms, as much as a fifth of its GEMMs).
      constexpr int64_t kBlock = 64;
      parallel_for(O, 64, [&](int64_t j0, int64_t j1) {
        const int64_t n = j1 - j0;
        std::vector<double> acc(static_cast<size_t>(n), 0.0);
        std::vector<T> part(static_cast<size_t>(n));
        for (int64_t r0 = 0; r0 < R; r0 += kBlock) {
          std::fill(part.begin(), part.end(), T(0));
          T* pp = part.data();
          for (int64_t r = r0; r < std::min(R, r0 + kBlock); ++r) {
            const T* row = gp + r * sr + j0 * sc;
            if (sc == 1) for (int64_t j = 0; j < n; ++j) pp[j] += row[j];
            else for (int64_t j = 0; j < n; ++j) pp[j] += row[j * sc];
          }
          for (int64_t j = 0; j < n; ++j) acc[j] += pp[j];
        }
        for (int64_t j = 0; j < n; ++j) db[j0 + j] = static_cast<T>(acc[j]);
      });
    }
  });
  return out;
}

}  // namespace cpu
}  // namespace vlm
