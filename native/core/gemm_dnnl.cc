// oneDNN matmul primitives for core/gemm (see gemm_dnnl.h).
//
// A primitive is specialised to its shapes, strides, beta and thread count, so each
// distinct call site creates one (tens of microseconds) and then finds it in the cache.
// oneDNN 2.6's brgemm takes no runtime output scale, so with beta == 0 the product is
// computed unscaled and then multiplied by alpha (one pass over C), so that a learned
// temperature does not create a primitive per step; with beta != 0 alpha is baked into
// the primitive (attention's fixed 1/sqrt(d)). Scratchpads are per thread (user mode), so one primitive may run from every
// thread of a parallel region at once: the tiled kernels (infonce, lm_head, attention)
// call gemm from inside their own parallel_for.
#include "core/gemm_dnnl.h"
#include "core/gemm.h"
#include "core/parallel.h"
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifdef VLMKIT_HAVE_DNNL
#include <dnnl.hpp>
#endif

namespace vlm {

namespace {

inline uint16_t bf16_scalar(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  // NaN stays a quiet NaN; everything else rounds to nearest, ties to even
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

#if defined(__x86_64__) && defined(__GNUC__)
// 32 floats per instruction on CPUs with avx512_bf16 (the only ones that take the bf16
// route); the same rounding as bf16_scalar. The target attribute keeps the rest of the
// build at x86-64-v3.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void row_bf16_avx512(const float* s, int64_t n, uint16_t* d) {
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    __m512 lo = _mm512_loadu_ps(s + c), hi = _mm512_loadu_ps(s + c + 16);
    _mm512_storeu_si512(reinterpret_cast<void*>(d + c), reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
  }
  for (; c < n; ++c) d[c] = bf16_scalar(s[c]);
}
const bool kAvx512Bf16 = __builtin_cpu_supports("avx512bf16");
#endif

}  // namespace

void to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst) {
  parallel_for(rows, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* s = src + r * ld;
      uint16_t* d = dst + r * cols;
#if defined(__x86_64__) && defined(__GNUC__)
      if (kAvx512Bf16) {
        row_bf16_avx512(s, cols, d);
        continue;
      }
#endif
      for (int64_t c = 0; c < cols; ++c) d[c] = bf16_scalar(s[c]);
    }
  });
}

#ifndef VLMKIT_HAVE_DNNL

bool gemm_dnnl(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
               int64_t, bool) {
  return false;
}
bool gemm_dnnl_bf16(bool, bool, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t, float,
                    float*, int64_t) {
  return false;
}
bool dnnl_bf16_native() { return false; }
void weight_packing_begin(const std::vector<WeightRef>&) {}
void weight_packing_end() {}

#else

namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct Key {
  int64_t M, N, K, lda, ldb, ldc;
  bool ta, tb, bf16;
  float alpha, beta;
  int threads;
  bool packed = false;  // B in the primitive's own layout (a packed weight, see below)
  bool operator==(const Key& o) const {
    return M == o.M && N == o.N && K == o.K && lda == o.lda && ldb == o.ldb && ldc == o.ldc && ta == o.ta &&
           tb == o.tb && bf16 == o.bf16 && alpha == o.alpha && beta == o.beta && threads == o.threads &&
           packed == o.packed;
  }
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(k.M); mix(k.N); mix(k.K); mix(k.lda); mix(k.ldb); mix(k.ldc);
    mix((k.ta ? 1 : 0) | (k.tb ? 2 : 0) | (k.bf16 ? 4 : 0) | (k.packed ? 8 : 0));
    uint32_t b;
    std::memcpy(&b, &k.beta, 4);
    mix(b);
    std::memcpy(&b, &k.alpha, 4);
    mix(b);
    mix(static_cast<uint64_t>(k.threads));
    return h;
  }
};

struct Entry {
  bool usable = false;  // false: oneDNN only offers a reference kernel here
  dnnl::matmul prim;
  memory::desc a, b, c, scratch;
};

std::mutex cache_mutex;
std::unordered_map<Key, std::shared_ptr<Entry>, KeyHash> cache;
constexpr size_t kMaxEntries = 512;

// Strided 2-D descriptor of a row-major block stored as rows x cols (row stride ld),
// seen as its transpose when `trans`.
memory::desc desc2d(int64_t rows_op, int64_t cols_op, bool trans, int64_t ld, memory::data_type dt) {
  memory::dims strides = trans ? memory::dims{1, ld} : memory::dims{ld, 1};
  return memory::desc({rows_op, cols_op}, dt, strides);
}

std::shared_ptr<Entry> make_entry(const Key& k) {
  auto e = std::make_shared<Entry>();
  const auto in = k.bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  e->a = desc2d(k.M, k.K, k.ta, k.lda, in);
  e->b = k.packed ? memory::desc({k.K, k.N}, in, memory::format_tag::any) : desc2d(k.K, k.N, k.tb, k.ldb, in);
  e->c = desc2d(k.M, k.N, false, k.ldc, memory::data_type::f32);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (k.alpha != 1.f) attr.set_output_scales(0, {k.alpha});
  if (k.beta != 0.f) {
    dnnl::post_ops po;
    po.append_sum(k.beta);
    attr.set_post_ops(po);
  }
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(e->a, e->b, e->c), attr, cpu_engine());
    const std::string impl = pd.impl_info_str();
    // Only the brgemm kernels are worth it; gemm:jit and ref are what dnnl_sgemm does better.
    if (impl.rfind("brg:", 0) != 0) return e;
    if (k.bf16 && impl.find("bf16") == std::string::npos && impl.find("amx") == std::string::npos) return e;
    if (k.packed) e->b = pd.weights_desc();
    e->scratch = pd.scratchpad_desc();
    e->prim = dnnl::matmul(pd);
    e->usable = true;
  } catch (const dnnl::error&) {
    e->usable = false;
  }
  return e;
}

std::shared_ptr<Entry> lookup(const Key& k) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  if (cache.size() >= kMaxEntries) cache.clear();  // shapes churn only in odd workloads
  auto e = make_entry(k);
  cache.emplace(k, e);
  return e;
}

// Per-thread buffers: the bf16 operands and the primitive's scratchpad.
struct ThreadBuffers {
  std::vector<uint16_t> a, b;
  std::vector<uint8_t> scratch;
};
ThreadBuffers& buffers() {
  thread_local ThreadBuffers t;
  return t;
}

// Converts the stored block of an operand (rows x cols with row stride ld) to bf16 into dst.
void convert(const float* src, int64_t rows, int64_t cols, int64_t ld, std::vector<uint16_t>& dst) {
  if (dst.size() < static_cast<size_t>(rows * cols)) dst.resize(static_cast<size_t>(rows * cols));
  to_bf16(src, rows, cols, ld, dst.data());
}

}  // namespace

bool dnnl_bf16_native() {
  static const bool native = [] {
    Key k{64, 64, 64, 64, 64, 64, false, false, true, 1.f, 0.f, 1};
    return make_entry(k)->usable;
  }();
  return native;
}

namespace {

// Runs a usable entry on this thread's stream and scratchpad: C = A . weights.
void execute(const Entry& e, const void* A, const memory& weights, float* C) {
  ThreadBuffers& tb = buffers();
  const size_t scratch_bytes = e.scratch.get_size();
  if (tb.scratch.size() < scratch_bytes) tb.scratch.resize(scratch_bytes);
  dnnl::engine& eng = cpu_engine();
  thread_local dnnl::stream stream(eng);
  memory ma(e.a, eng, const_cast<void*>(A));
  memory mc(e.c, eng, C);
  memory mscratch(e.scratch, eng, tb.scratch.data());
  e.prim.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, mc}, {DNNL_ARG_SCRATCHPAD, mscratch}});
  stream.wait();
}

// The key's (usable) entry on A and the weights, then alpha where the key left it out.
void run_entry(const Key& k, const Entry& e, const void* A, const memory& weights, float alpha, float* C) {
  execute(e, A, weights, C);
  if (k.alpha != alpha) {  // beta == 0 and alpha != 1: scaled here (see the file comment)
    const int64_t M = k.M, N = k.N, ldc = k.ldc;
    parallel_for(M, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(N, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * ldc + j] *= alpha;
    });
  }
}

// The primitive for the key, run on operands already in the key's type and layout.
bool run_primitive(const Key& k, const void* A, const void* B, float alpha, float* C) {
  std::shared_ptr<Entry> e = lookup(k);
  if (!e->usable) return false;
  run_entry(k, *e, A, memory(e->b, cpu_engine(), const_cast<void*>(B)), alpha, C);
  return true;
}

Key make_key(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, int64_t lda, int64_t ldb, float beta,
             int64_t ldc, bool bf16, int threads) {
  const bool post_scale = beta == 0.f && alpha != 1.f;
  return Key{M, N, K, lda, ldb, ldc, ta, tb, bf16, post_scale ? 1.f : alpha, beta, threads};
}

}  // namespace

// ---- packed weights (decode steps) --------------------------------------------------------
//
// A few-row product x W^T makes brgemm repack W on every call: for a decode step's
// [16, 256] x [256, 30524] that is half the call (6.2 ms against 3.3 ms prepacked, cold
// cache, one thread). Between weight_packing_begin and _end (vlm.generate), products whose
// B is one of the registered weights use a copy of W reordered once into the primitive's
// own layout. Only registered tensors qualify, so a temporary that happens to reuse a
// freed address can never hit a stale copy; the caller promises the weights do not change
// inside the scope (generation does not train).

namespace {

struct PackedWeight {
  int64_t rows = 0, cols = 0;  // W [rows, cols] = [N, K], dense
  std::vector<std::pair<memory::desc, memory>> copies;  // one per layout asked for
};
std::unordered_map<const float*, PackedWeight> packed;  // guarded by cache_mutex; empty outside the scope

// C = alpha * A B^T + beta * C with B a registered weight; false when B is not one.
bool run_packed(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
                float beta, float* C, int64_t ldc, int threads) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = packed.find(B);
    if (it == packed.end() || it->second.rows != N || it->second.cols != K || ldb != K) return false;
  }
  Key k = make_key(false, true, M, N, K, alpha, lda, ldb, beta, ldc, false, threads);
  k.packed = true;
  std::shared_ptr<Entry> e = lookup(k);
  if (!e->usable) return false;
  memory wmem;
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = packed.find(B);
    if (it == packed.end()) return false;  // the scope ended meanwhile
    PackedWeight& pw = it->second;
    for (auto& [d, m] : pw.copies)
      if (d == e->b) wmem = m;
    if (!wmem) {  // first use of this weight in this layout: reorder it once
      memory src(desc2d(K, N, true, K, memory::data_type::f32), cpu_engine(), const_cast<float*>(B));
      wmem = memory(e->b, cpu_engine());
      dnnl::stream s(cpu_engine());
      dnnl::reorder(src, wmem).execute(s, src, wmem);
      s.wait();
      pw.copies.emplace_back(e->b, wmem);
    }
  }
  run_entry(k, *e, A, wmem, alpha, C);
  return true;
}

}  // namespace

void weight_packing_begin(const std::vector<WeightRef>& weights) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  packed.clear();
  for (const WeightRef& w : weights) packed[w.data] = PackedWeight{w.rows, w.cols, {}};
}

void weight_packing_end() {
  std::lock_guard<std::mutex> lock(cache_mutex);
  packed.clear();
}

bool gemm_dnnl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc, bool bf16) {
  if (bf16 && !dnnl_bf16_native()) return false;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (!bf16 && !ta && tb && M <= 64 && run_packed(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads)) return true;
  if (!bf16) return run_primitive(make_key(ta, tb, M, N, K, alpha, lda, ldb, beta, ldc, false, threads), A, B, alpha, C);
  // bf16: the operands are converted into dense per-thread buffers first
  const Key k = make_key(ta, tb, M, N, K, alpha, ta ? M : K, tb ? K : N, beta, ldc, true, threads);
  if (!lookup(k)->usable) return false;
  ThreadBuffers& t = buffers();
  convert(A, ta ? K : M, ta ? M : K, lda, t.a);
  convert(B, tb ? N : K, tb ? K : N, ldb, t.b);
  return run_primitive(k, t.a.data(), t.b.data(), alpha, C);
}

bool gemm_dnnl_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                    const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (!dnnl_bf16_native()) return false;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  return run_primitive(make_key(ta, tb, M, N, K, alpha, lda, ldb, beta, ldc, true, threads), A, B, alpha, C);
}

#endif

}  // namespace vlm
