// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C (see core/gemm.h).
// float32 goes to oneDNN's dnnl_sgemm when built with it, else OpenBLAS, else the
// built-in kernel below; float64 goes to OpenBLAS when present, else the built-in
// kernel. Inside an OpenMP parallel region every path runs single-threaded:
// oneDNN (OpenMP runtime) checks omp_in_parallel itself, the built-in kernel's
// parallel_for runs inline, and the pthread OpenBLAS (which cannot be told per call)
// is only used there for products it runs single-threaded anyway.
//
// The built-in kernel is the classic Goto/BLIS blocking: B is packed into KC x NR
// column slivers, A into MC x KC blocks of MR-row slivers, and an MR x NR register
// tile (GCC vector extensions, so it compiles everywhere and vectorises on x86-64-v3)
// accumulates over KC. Each C element sums its k terms in the same order whatever
// the thread count, so results are reproducible across thread counts.
#include "core/gemm.h"
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>
#include "core/gemm_dnnl.h"
#include "core/parallel.h"
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#ifdef VLMKIT_HAVE_DNNL
#include <dnnl.h>
#endif
#ifdef VLMKIT_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace vlm {
namespace {

// ---- built-in blocked kernel ---------------------------------------------------------

typedef float vf8 __attribute__((vector_size(32)));
typedef double vd4 __attribute__((vector_size(32)));

template <typename T> struct Vec;
template <> struct Vec<float> { using V = vf8; static constexpr int L = 8; };
template <> struct Vec<double> { using V = vd4; static constexpr int L = 4; };

// A vector of *p in every lane. With AVX a broadcast straight from memory keeps the
// register tile free of temporaries (GCC otherwise stages the scalar in a register).
inline vf8 bcast(const float* p) {
#if defined(__AVX2__)
  return _mm256_broadcast_ss(p);
#else
  return vf8{} + *p;
#endif
}
inline vd4 bcast(const double* p) {
#if defined(__AVX2__)
  return _mm256_broadcast_sd(p);
#else
  return vd4{} + *p;
#endif
}

constexpr int64_t MR = 6;   // rows of the register tile
constexpr int64_t KC = 256; // depth of a packed panel
template <typename T> constexpr int64_t NR = 2 * Vec<T>::L;       // columns of the register tile
template <typename T> constexpr int64_t MC = 96;                  // rows of a packed A block (multiple of MR)
template <typename T> constexpr int64_t NC = 2048 * 4 / sizeof(T); // columns of a packed B panel

// A 64-byte aligned scratch buffer.
template <typename T>
struct Buf {
  T* p = nullptr;
  explicit Buf(size_t n) {
    size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64));
    if (!p) throw std::bad_alloc();
  }
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// op(A)(i, k) for row-major A.
template <typename T>
inline T at_a(bool ta, const T* A, int64_t lda, int64_t i, int64_t k) { return ta ? A[k * lda + i] : A[i * lda + k]; }
// op(B)(k, j) for row-major B.
template <typename T>
inline T at_b(bool tb, const T* B, int64_t ldb, int64_t k, int64_t j) { return tb ? B[j * ldb + k] : B[k * ldb + j]; }

// Packs op(B)[pc:pc+kc, jc+j0 : jc+j1] into NR-wide slivers: dst[s][k][NR], zero-padded.
template <typename T>
void pack_b(bool tb, const T* B, int64_t ldb, int64_t pc, int64_t kc, int64_t jc, int64_t nc, int64_t s0, int64_t s1,
            T* dst) {
  constexpr int64_t nr = NR<T>;
  for (int64_t s = s0; s < s1; ++s) {
    T* d = dst + s * kc * nr;
    int64_t j0 = jc + s * nr, w = std::min(nr, nc - s * nr);
    if (!tb) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = B + (pc + k) * ldb + j0;
        int64_t j = 0;
        for (; j < w; ++j) d[k * nr + j] = src[j];
        for (; j < nr; ++j) d[k * nr + j] = T(0);
      }
    } else {
      for (int64_t j = 0; j < nr; ++j) {
        if (j < w) {
          const T* src = B + (j0 + j) * ldb + pc;
          for (int64_t k = 0; k < kc; ++k) d[k * nr + j] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) d[k * nr + j] = T(0);
        }
      }
    }
  }
}

// Packs op(A)[ic:ic+mc, pc:pc+kc] into MR-row slivers: dst[s][k][MR], zero-padded.
template <typename T>
void pack_a(bool ta, const T* A, int64_t lda, int64_t ic, int64_t mc, int64_t pc, int64_t kc, T* dst) {
  for (int64_t s = 0; s * MR < mc; ++s) {
    T* d = dst + s * kc * MR;
    int64_t i0 = ic + s * MR, h = std::min(MR, mc - s * MR);
    if (ta) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = A + (pc + k) * lda + i0;
        int64_t i = 0;
        for (; i < h; ++i) d[k * MR + i] = src[i];
        for (; i < MR; ++i) d[k * MR + i] = T(0);
      }
    } else {
      for (int64_t i = 0; i < MR; ++i) {
        if (i < h) {
          const T* src = A + (i0 + i) * lda + pc;
          for (int64_t k = 0; k < kc; ++k) d[k * MR + i] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) d[k * MR + i] = T(0);
        }
      }
    }
  }
}

// acc[MR][NR] = sum_k Ap[k][:] (outer) Bp[k][:]
template <typename T>
__attribute__((noinline)) void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* __restrict acc) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  V c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{}, c40{}, c41{}, c50{}, c51{};
  for (int64_t k = 0; k < kc; ++k) {
    V b0, b1;
    std::memcpy(&b0, Bp + k * 2 * L, sizeof(V));
    std::memcpy(&b1, Bp + k * 2 * L + L, sizeof(V));
    const T* a = Ap + k * MR;
    V x = bcast(a + 0);
    c00 += x * b0; c01 += x * b1;
    x = bcast(a + 1);
    c10 += x * b0; c11 += x * b1;
    x = bcast(a + 2);
    c20 += x * b0; c21 += x * b1;
    x = bcast(a + 3);
    c30 += x * b0; c31 += x * b1;
    x = bcast(a + 4);
    c40 += x * b0; c41 += x * b1;
    x = bcast(a + 5);
    c50 += x * b0; c51 += x * b1;
  }
  auto put = [&](int i, const V& x0, const V& x1) {
    std::memcpy(acc + i * 2 * L, &x0, sizeof(V));
    std::memcpy(acc + i * 2 * L + L, &x1, sizeof(V));
  };
  put(0, c00, c01); put(1, c10, c11); put(2, c20, c21);
  put(3, c30, c31); put(4, c40, c41); put(5, c50, c51);
}

// C = beta * C over an M x N block (beta == 0 writes zeros without reading C).
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  if (beta == T(1)) return;
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) std::fill(c, c + N, T(0));
    else for (int64_t j = 0; j < N; ++j) c[j] *= beta;
  }
}

template <typename T>
void gemm_builtin(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T beta, T* C, int64_t ldc) {
  constexpr int64_t nr = NR<T>;
  const int nt = omp_in_parallel() ? 1 : num_threads();
  const int64_t ncap = std::min<int64_t>(NC<T>, (N + nr - 1) / nr * nr);
  const int64_t kcap = std::min<int64_t>(KC, K);
  Buf<T> bp(static_cast<size_t>(ncap * kcap));
  for (int64_t jc = 0; jc < N; jc += NC<T>) {
    const int64_t nc = std::min(NC<T>, N - jc);
    const int64_t slivers = (nc + nr - 1) / nr;
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const T beta_k = pc == 0 ? beta : T(1);  // later panels accumulate
      parallel_for(slivers, 8, [&](int64_t s0, int64_t s1) { pack_b(tb, B, ldb, pc, kc, jc, nc, s0, s1, bp.p); });
      // Tasks: row blocks of A, split further along the slivers when there are fewer
      // row blocks than threads (tall-skinny and short-wide products).
      int64_t mc = MC<T>;
      if (nt > 1 && (M + mc - 1) / mc < nt) mc = std::max<int64_t>(MR, ((M + nt - 1) / nt + MR - 1) / MR * MR);
      const int64_t nblocks = (M + mc - 1) / mc;
      const int64_t nsplit = std::max<int64_t>(1, std::min<int64_t>(slivers, (nt + nblocks - 1) / nblocks));
      parallel_for(nblocks * nsplit, 1, [&](int64_t t0, int64_t t1) {
        Buf<T> ap(static_cast<size_t>((mc + MR - 1) / MR * MR * kc));
        alignas(64) T acc[MR * nr];
        int64_t packed = -1;
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t blk = t / nsplit, part = t % nsplit;
          const int64_t ic = blk * mc, mcb = std::min(mc, M - ic);
          if (packed != blk) {
            pack_a(ta, A, lda, ic, mcb, pc, kc, ap.p);
            packed = blk;
          }
          const int64_t sb = slivers * part / nsplit, se = slivers * (part + 1) / nsplit;
          for (int64_t s = sb; s < se; ++s) {
            const int64_t j0 = jc + s * nr, w = std::min(nr, N - j0);
            for (int64_t r = 0; r * MR < mcb; ++r) {
              const int64_t i0 = ic + r * MR, h = std::min(MR, M - i0);
              micro_kernel<T>(kc, ap.p + r * MR * kc, bp.p + s * nr * kc, acc);
              for (int64_t i = 0; i < h; ++i) {
                T* c = C + (i0 + i) * ldc + j0;
                const T* v = acc + i * nr;
                if (beta_k == T(0)) for (int64_t j = 0; j < w; ++j) c[j] = alpha * v[j];
                else if (beta_k == T(1)) for (int64_t j = 0; j < w; ++j) c[j] += alpha * v[j];
                else for (int64_t j = 0; j < w; ++j) c[j] = alpha * v[j] + beta_k * c[j];
              }
            }
          }
        }
      });
    }
  }
}

// ---- OpenBLAS ----------------------------------------------------------------------------

#ifdef VLMKIT_HAVE_OPENBLAS
// OpenBLAS 0.3.21 runs a GEMM single-threaded below this many multiply-adds
// (SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD); above it a call made inside a
// parallel region would start its own threads on top of ours.
constexpr double kOpenblasSingleThreadMnk = 65536.0 * 4.0;

// Brings OpenBLAS's pool to vlm::num_threads() (outside parallel regions only).
void sync_openblas_threads() {
  int want = num_threads();
  if (openblas_get_num_threads() != want) openblas_set_num_threads(want);
}

// Whether OpenBLAS may take this call: true outside parallel regions, and inside one
// only when it would run single-threaded anyway.
bool openblas_ok(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  constexpr int64_t kMaxInt = 2147483647;  // cblas takes 32-bit ints
  if (std::max({M, N, K, lda, ldb, ldc}) > kMaxInt) return false;
  if (!omp_in_parallel()) {
    sync_openblas_threads();
    return true;
  }
  return openblas_get_num_threads() == 1 ||
         static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K) <= kOpenblasSingleThreadMnk;
}
#endif

// Libraries want ld >= the stored row length even when there is a single row.
inline int64_t fix_ld(int64_t ld, int64_t rows, int64_t cols) {
  int64_t need = std::max<int64_t>(cols, 1);
  return rows <= 1 ? std::max(ld, need) : ld;
}

// Shared front: degenerate sizes. Returns true when nothing is left to do.
template <typename T>
bool trivial(int64_t M, int64_t N, int64_t K, T alpha, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return true;
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return true;
  }
  return false;
}

// The front of every overload: degenerate sizes (true: nothing left to do), then the
// leading dimensions libraries accept.
template <typename T>
bool front(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, T beta, T* C, int64_t& lda, int64_t& ldb,
           int64_t& ldc) {
  if (trivial(M, N, K, alpha, beta, C, ldc)) return true;
  lda = fix_ld(lda, ta ? K : M, ta ? M : K);
  ldb = fix_ld(ldb, tb ? N : K, tb ? K : N);
  ldc = fix_ld(ldc, M, N);
  return false;
}

// Below this many multiply-adds a GEMM runs single-threaded.
constexpr double kSmallGemm = 4.0 * (1 << 20);

std::atomic<MatmulPrecision> g_precision{MatmulPrecision::kHighest};

}  // namespace

// Rounding op(A) and op(B) costs ~0.4 ns per element, (1/M + 1/N) elements per
// multiply-add, against ~5 ps saved per multiply-add by the bf16 kernel: it pays when
// both M and N are at least ~200 (a [8320, 128] x [128, 128] weight gradient ran 30%
// slower in bf16), and not at all for small products (attention's per-tile GEMMs).
bool bf16_pays(int64_t M, int64_t N, int64_t K) {
  return M >= 192 && N >= 192 && static_cast<double>(M) * N * K >= kSmallGemm;
}

namespace {

// Where oneDNN's matmul primitive beats dnnl_sgemm in float32 (measured on 2 cores,
// AVX-512): thin products (M or N <= 64, e.g. a decode step's vocabulary projection,
// 111 vs 62 GFLOP/s), and deep, narrow x W^T (K >= 256, N <= 128: the MLP's second
// linear, [8320, 512] x [512, 128]: 203 vs 172 GFLOP/s alone, 5.6 vs 6.6 ms in the CLIP
// step). Other deep products (weight gradients) were as fast or slower in the step.
// VLMKIT_GEMM_PRIMITIVES=0 keeps float32 on dnnl_sgemm (for comparisons).
bool prefer_primitive(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  static const bool off = [] {
    const char* e = std::getenv("VLMKIT_GEMM_PRIMITIVES");
    return e && std::string(e) == "0";
  }();
  if (off) return false;
  return M <= 64 || N <= 64 || (!ta && tb && K >= 256 && N <= 128);
}

}  // namespace

void set_matmul_precision(MatmulPrecision p) { g_precision.store(p); }
MatmulPrecision matmul_precision() { return g_precision.load(); }
bool gemm_uses_bf16() { return g_precision.load(std::memory_order_relaxed) == MatmulPrecision::kMedium && matmul_bf16_available(); }

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
          const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (front(ta, tb, M, N, K, alpha, beta, C, lda, ldb, ldc)) return;
  if (gemm_dnnl_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  // No bf16 kernel: widen the (already rounded) operands and run the float32 GEMM.
  auto widen = [](const uint16_t* src, int64_t rows, int64_t cols, int64_t ld) {
    std::vector<float> out(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        uint32_t u = static_cast<uint32_t>(src[r * ld + c]) << 16;
        std::memcpy(&out[static_cast<size_t>(r * cols + c)], &u, 4);
      }
    return out;
  };
  const std::vector<float> a = widen(A, ta ? K : M, ta ? M : K, lda), b = widen(B, tb ? N : K, tb ? K : N, ldb);
  gemm(ta, tb, M, N, K, alpha, a.data(), ta ? M : K, b.data(), tb ? K : N, beta, C, ldc);
}

bool matmul_bf16_available() {
#if defined(VLMKIT_HAVE_DNNL)
  return dnnl_bf16_native();
#else
  return false;
#endif
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  if (front(ta, tb, M, N, K, alpha, beta, C, lda, ldb, ldc)) return;
#if defined(VLMKIT_HAVE_DNNL)
  // oneDNN (OpenMP runtime) uses omp_get_max_threads() threads, one inside a parallel
  // region. Small products run on one thread: waking the pool costs more than they do
  // (a [16,256]x[256,256] decode step waited ~8 ms for the other core on a busy machine).
  // Few-row products (decode steps) stream their weight once and finish in ~0.1 ms at 4M
  // multiply-adds: they split well over threads only well above that.
  const double small_limit = M <= 64 ? 4 * kSmallGemm : kSmallGemm;
  const bool small = static_cast<double>(M) * N * K < small_limit && !omp_in_parallel() && omp_get_max_threads() > 1;
  const int prev = small ? omp_get_max_threads() : 0;
  if (small) omp_set_num_threads(1);
  const bool bf16 = g_precision.load(std::memory_order_relaxed) == MatmulPrecision::kMedium && bf16_pays(M, N, K);
  bool done = (bf16 || prefer_primitive(ta, tb, M, N, K)) && gemm_dnnl(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bf16);
  if (!done) done = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) == dnnl_success;
  if (small) omp_set_num_threads(prev);
  if (done) return;
  // oneDNN refuses only arguments it considers invalid; the built-in kernel takes anything.
#elif defined(VLMKIT_HAVE_OPENBLAS)
  if (openblas_ok(M, N, K, lda, ldb, ldc)) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
                static_cast<blasint>(N), static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B,
                static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
    return;
  }
#endif
  gemm_builtin<float>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (front(ta, tb, M, N, K, alpha, beta, C, lda, ldb, ldc)) return;
#if defined(VLMKIT_HAVE_OPENBLAS)
  if (openblas_ok(M, N, K, lda, ldb, ldc)) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
                static_cast<blasint>(N), static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B,
                static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
    return;
  }
#endif
  gemm_builtin<double>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* gemm_library(bool float64) {
#if defined(VLMKIT_HAVE_OPENBLAS)
  if (float64) return "openblas";
#else
  if (float64) return "builtin";
#endif
#if defined(VLMKIT_HAVE_DNNL)
  return "onednn";
#elif defined(VLMKIT_HAVE_OPENBLAS)
  return "openblas";
#else
  return "builtin";
#endif
}

}  // namespace vlm
