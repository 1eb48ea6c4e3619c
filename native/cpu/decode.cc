// decode family, CPU: KV-cache writes and in-place beam reorder, the incremental attention
// step over the cache, the HF logits processors and warpers, and token selection (argmax,
// top-k / top-p sampling, beam candidates, sampled beam candidates). Contracts and shapes:
// ops/decode.h.
//
// decode_attention: one work item per (row, head, query) computes the scores of its visible
// keys into a per-thread row buffer, the softmax, and the weighted sum of values; with
// T = 1 that is a matrix-vector product pair per head, memory-bound on reading the cache,
// where a GEMM would not help. Items are independent and each runs in a fixed order.
//
// Selection runs per row; exp(x - max) is computed once per row (8 lanes with vec::exp8 for
// float32) and sums are float64 in index order. The filters never sort the vocabulary:
// top-k keeps a buffer of at most 2k candidates (nth_element trims it), top-p is a
// quickselect on the mass of the better tokens (expected O(V)), and the draw walks the kept
// tokens in a fixed order. Row n's uniform is Philox element offset + n, so draws do not
// depend on threads or on the other rows.
//
// Threads: rows (or (row, head, query) items) are split only when there is enough work for
// two chunks of kChunkWork; every item is computed in a fixed order by one thread.
#include "ops/decode.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#include "core/parallel.h"
#include "core/rng.h"
#include "core/vec_math.h"

namespace vlm {
namespace cpu {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
// Elements (or multiply-adds) per thread chunk at least: a decoding step's kernels are small,
// and waking a second thread costs more than it saves below this (far more when the machine
// is shared and the other core is busy: every barrier then waits for a time slice).
constexpr int64_t kChunkWork = int64_t{1} << 19;

// f(begin, end) over [0, n) items of `work` each: inline when there is not enough work for two
// chunks, else parallel_for in chunks of at least kChunkWork.
template <typename F>
void run_rows(int64_t n, int64_t work, F&& f) {
  work = std::max<int64_t>(work, 1);
  if (n * work < 2 * kChunkWork) {
    if (n > 0) f(int64_t{0}, n);
    return;
  }
  parallel_for(n, std::max<int64_t>(1, kChunkWork / work), f);
}

// Dot product of n elements; float accumulates in 8 lanes (fixed order), double plainly.
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#ifdef VLM_VEC_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  s = vec::hsum8(acc);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
inline double dot(const double* a, const double* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
inline float exp_of(float x) { return vec::exp_f32(x); }
inline double exp_of(double x) { return std::exp(x); }

// A candidate of a selection: its value and flat index; better = larger value, then lower index.
struct Cand {
  double v;
  int64_t i;
};
inline bool better(const Cand& a, const Cand& b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }
inline double clean(double x) { return x == x ? x : kNegInf; }  // NaN ranks last

// The `count` best of n candidates value(i), i in [0, n), sorted best first (count <= n).
// Keeps at most 2 * count in `buf` between trims: O(n) plus O(count log count).
template <typename F>
void top_count(int64_t n, int64_t count, F&& value, std::vector<Cand>& buf) {
  buf.clear();
  if (count <= 0) return;
  buf.reserve(static_cast<size_t>(2 * count));
  bool have_thr = false;
  Cand thr{0.0, 0};
  for (int64_t i = 0; i < n; ++i) {
    Cand c{clean(value(i)), i};
    if (have_thr && !better(c, thr)) continue;
    buf.push_back(c);
    if (static_cast<int64_t>(buf.size()) == 2 * count) {
      std::nth_element(buf.begin(), buf.begin() + (count - 1), buf.end(), better);
      buf.resize(static_cast<size_t>(count));
      thr = buf[static_cast<size_t>(count - 1)];  // after nth_element: the worst of those kept
      have_thr = true;
    }
  }
  std::sort(buf.begin(), buf.end(), better);
  if (static_cast<int64_t>(buf.size()) > count) buf.resize(static_cast<size_t>(count));
}

template <typename T>
void attention_impl(const Tensor& q, const Tensor& k, const Tensor& v, const DecodeAttentionOptions& o, Tensor& out) {
  const int64_t N = q.shape[0], T_ = q.shape[1], E = q.shape[2];
  const int64_t H = k.shape[1], Dh = k.shape[3];
  const int64_t qs0 = q.strides[0], qs1 = q.strides[1];
  const int64_t ks0 = k.strides[0], ks1 = k.strides[1], ks2 = k.strides[2];
  const int64_t vs0 = v.strides[0], vs1 = v.strides[1], vs2 = v.strides[2];
  const T* qd = q.data<T>();
  const T* kd = k.data<T>();
  const T* vd = v.data<T>();
  T* od = out.data<T>();
  const uint8_t* md = o.key_mask ? o.key_mask->data<uint8_t>() : nullptr;
  const int64_t ms0 = o.key_mask ? (o.key_mask->shape[0] == 1 ? 0 : o.key_mask->strides[0]) : 0;
  const int64_t ms1 = o.key_mask ? o.key_mask->strides[1] : 0;
  const T scale = static_cast<T>(o.scale);
  const int64_t L = o.length;
  const int64_t items = N * H * T_;
  run_rows(items, 2 * L * Dh, [&](int64_t begin, int64_t end) {
    std::vector<T> s(static_cast<size_t>(std::max<int64_t>(L, 1)));
    std::vector<T> acc(static_cast<size_t>(Dh));
    for (int64_t it = begin; it < end; ++it) {
      const int64_t t = it % T_, h = (it / T_) % H, n = it / (T_ * H);
      const T* qp = qd + n * qs0 + t * qs1 + h * Dh;
      T* op = od + (n * T_ + t) * E + h * Dh;
      const int64_t vis = o.causal ? std::min(L, L - T_ + t + 1) : L;
      const T* kb = kd + n * ks0 + h * ks1;
      const T* vb = vd + n * vs0 + h * vs1;
      const uint8_t* mrow = md ? md + n * ms0 : nullptr;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < vis; ++j) {
        if (mrow && !mrow[j * ms1]) {
          s[j] = -std::numeric_limits<T>::infinity();
          continue;
        }
        const T x = scale * dot(qp, kb + j * ks2, Dh);
        s[j] = x;
        if (x > m) m = x;
      }
      std::fill(acc.begin(), acc.end(), T(0));
      if (m == -std::numeric_limits<T>::infinity()) {  // sees no key: zeros
        std::memcpy(op, acc.data(), static_cast<size_t>(Dh) * sizeof(T));
        continue;
      }
      T l = 0;
      for (int64_t j = 0; j < vis; ++j) {
        const T p = exp_of(s[j] - m);
        l += p;
        if (p == T(0)) continue;
        const T* vp = vb + j * vs2;
        for (int64_t d = 0; d < Dh; ++d) acc[d] += p * vp[d];
      }
      const T inv = T(1) / l;
      for (int64_t d = 0; d < Dh; ++d) op[d] = acc[d] * inv;
    }
  });
}

// e[t] = exp(x[t] - m) for t < n (m >= every x, finite): 8 lanes at a time for float32
// (vec::exp8, ~1 ulp), libm for float64. Returns the sum in float64, added in index order.
double exp_shift(const float* x, float m, float* e, int64_t n) {
  int64_t t = 0;
#ifdef VLM_VEC_AVX2
  const __m256 mv = _mm256_set1_ps(m);
  for (; t + 8 <= n; t += 8) _mm256_storeu_ps(e + t, vec::exp8(_mm256_sub_ps(_mm256_loadu_ps(x + t), mv)));
#endif
  for (; t < n; ++t) e[t] = vec::exp_f32(x[t] - m);
  double z = 0.0;
  for (int64_t i = 0; i < n; ++i) z += e[i];
  return z;
}
double exp_shift(const double* x, double m, double* e, int64_t n) {
  double z = 0.0;
  for (int64_t t = 0; t < n; ++t) z += (e[t] = std::exp(x[t] - m));
  return z;
}

// The largest entry (NaN ignored; -inf when there is none) and its first index.
template <typename T>
T row_max(const T* x, int64_t n, int64_t* arg) {
  T m = -std::numeric_limits<T>::infinity();
  int64_t a = 0;
  for (int64_t t = 0; t < n; ++t)
    if (x[t] > m) {
      m = x[t];
      a = t;
    }
  if (arg) *arg = a;
  return m;
}

// The tokens that survive HF's top-k then top-p filters of one row x [V] (already divided by
// the temperature; e = exp(x - max)), in `kept` in no particular order. Returns false when
// nothing filters (kept is then left empty: the whole vocabulary survives).
template <typename T>
bool filter_kept(const T* x, const T* e, int64_t V, const SampleOptions& o, std::vector<Cand>& buf,
                 std::vector<Cand>& kept) {
  const int64_t min_keep = std::max<int64_t>(1, o.min_keep);
  bool filtered = false;
  kept.clear();
  if (o.top_k > 0 && o.top_k < V) {
    const int64_t kk = std::min<int64_t>(V, std::max(o.top_k, min_keep));
    top_count(V, kk, [&](int64_t i) { return static_cast<double>(x[i]); }, buf);
    const T kth = static_cast<T>(buf.back().v);
    for (int64_t t = 0; t < V; ++t)  // ties with the k-th value stay (HF removes only scores < kth)
      if (x[t] >= kth) kept.push_back({static_cast<double>(x[t]), t});
    filtered = true;
  }
  if (o.top_p < 1.0) {
    if (!filtered) {
      kept.resize(static_cast<size_t>(V));
      for (int64_t t = 0; t < V; ++t) kept[t] = {static_cast<double>(x[t]), t};
    }
    double z = 0.0;
    for (const Cand& c : kept) z += e[c.i];
    const double target = o.top_p * z;
    // HF keeps a token while the mass of the better tokens is below top_p (its cumulative
    // ascending mass > 1 - top_p). Quickselect on that mass: each round partitions the open
    // range around its middle rank (better first) and keeps or drops the better half, so
    // the nucleus comes out as kept[0, lo) in expected O(V), never sorting the vocabulary.
    size_t lo = 0, hi = kept.size();
    double before = 0.0;
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      std::nth_element(kept.begin() + lo, kept.begin() + mid, kept.begin() + hi, better);
      double left = 0.0;
      for (size_t r = lo; r < mid; ++r) left += e[kept[r].i];
      if (before + left >= target) {
        hi = mid;  // the token at mid, and every worse one, has mass >= top_p before it
      } else {
        before += left + e[kept[mid].i];  // [lo, mid] all kept
        lo = mid + 1;
      }
    }
    const size_t need = static_cast<size_t>(std::min<int64_t>(min_keep, static_cast<int64_t>(kept.size())));
    if (lo < need) {  // at least min_keep: the next best ones
      std::nth_element(kept.begin() + lo, kept.begin() + (need - 1), kept.end(), better);
      lo = need;
    }
    kept.resize(lo);
    filtered = true;
  }
  return filtered;
}

template <typename T>
void process_impl(Tensor& scores, bool log_softmax, const int32_t* history, int64_t hl, double penalty,
                  const int32_t* suppress, int64_t ns, const SampleOptions* warp) {
  const int64_t N = scores.shape[0], V = scores.shape[1];
  T* sd = scores.data<T>();
  const T inv_t = static_cast<T>(warp ? 1.0 / warp->temperature : 1.0);
  run_rows(N, V, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> ids;
    std::vector<T> e(log_softmax || warp ? static_cast<size_t>(V) : 0);
    std::vector<Cand> buf, kept;
    std::vector<uint8_t> keep(warp ? static_cast<size_t>(V) : 0);
    for (int64_t n = begin; n < end; ++n) {
      T* row = sd + n * V;
      if (log_softmax) {
        const T m = row_max(row, V, nullptr);
        if (std::isfinite(static_cast<double>(m))) {  // a row of -inf (or with +inf / NaN) stays as it is
          const double lse = static_cast<double>(m) + std::log(exp_shift(row, m, e.data(), V));
          for (int64_t t = 0; t < V; ++t) row[t] = static_cast<T>(static_cast<double>(row[t]) - lse);
        }
      }
      if (history && hl > 0 && penalty != 1.0) {
        ids.assign(history + n * hl, history + (n + 1) * hl);
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        for (int32_t id : ids) {
          if (id < 0) continue;
          const double x = static_cast<double>(row[id]);
          row[id] = static_cast<T>(x < 0 ? x * penalty : x / penalty);
        }
      }
      for (int64_t i = 0; i < ns; ++i) row[suppress[i]] = -std::numeric_limits<T>::infinity();
      if (warp) {  // HF's temperature, top-k and top-p warpers: the dropped tokens become -inf
        for (int64_t t = 0; t < V; ++t) {
          const T xv = row[t] * inv_t;
          row[t] = xv == xv ? xv : -std::numeric_limits<T>::infinity();
        }
        const T m = row_max(row, V, nullptr);
        if (!std::isfinite(static_cast<double>(m))) continue;  // nothing to filter (or +inf)
        exp_shift(row, m, e.data(), V);
        if (!filter_kept(row, e.data(), V, *warp, buf, kept)) continue;
        std::fill(keep.begin(), keep.end(), uint8_t{0});
        for (const Cand& c : kept) keep[c.i] = 1;
        for (int64_t t = 0; t < V; ++t)
          if (!keep[t]) row[t] = -std::numeric_limits<T>::infinity();
      }
    }
  });
}

template <typename T>
void argmax_impl(const Tensor& scores, int32_t* out) {
  const int64_t N = scores.shape[0], V = scores.shape[1];
  const T* sd = scores.data<T>();
  for (int64_t n = 0; n < N; ++n) {
    const T* row = sd + n * V;
#ifdef VLM_VEC_AVX2
    if constexpr (std::is_same_v<T, float>) {
      // Two vector passes (the max, then its first index) instead of a branchy scalar one:
      // a decode step's [16, 30524] took 0.33 ms. NaN never wins (max_ps returns its second
      // operand, the running max, when x is NaN); with no number at all the answer is 0.
      __m256 mv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      int64_t t = 0;
      for (; t + 8 <= V; t += 8) mv = _mm256_max_ps(_mm256_loadu_ps(row + t), mv);
      float m = vec::hmax8(mv);
      for (; t < V; ++t) m = row[t] > m ? row[t] : m;
      int64_t best = 0;
      const __m256 mb = _mm256_set1_ps(m);
      for (t = 0; t + 8 <= V; t += 8) {
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + t), mb, _CMP_EQ_OQ));
        if (mask) break;
      }
      for (; t < V; ++t)
        if (row[t] == m) {
          best = t;
          break;
        }
      out[n] = static_cast<int32_t>(best);
      continue;
    }
#endif
    int64_t best = 0;
    T bv = -std::numeric_limits<T>::infinity();
    bool found = false;
    for (int64_t t = 0; t < V; ++t)
      if (row[t] > bv || (!found && row[t] == bv)) {
        bv = row[t];
        best = t;
        found = true;
      }
    out[n] = static_cast<int32_t>(best);
  }
}

// One row's draw. x = scores / temperature (T precision), e = exp(x - max) computed once and
// reused by every filter and by the walk, so the kept mass and the draw agree exactly.
template <typename T>
void sample_impl(const Tensor& scores, const SampleOptions& o, int32_t* out) {
  const int64_t N = scores.shape[0], V = scores.shape[1];
  const T* sd = scores.data<T>();
  const T inv_t = static_cast<T>(1.0 / o.temperature);
  run_rows(N, V, [&](int64_t begin, int64_t end) {
    std::vector<T> x(static_cast<size_t>(V)), e(static_cast<size_t>(V));
    std::vector<Cand> buf, kept_buf;
    for (int64_t n = begin; n < end; ++n) {
      const T* row = sd + n * V;
      for (int64_t t = 0; t < V; ++t) {
        const T xv = row[t] * inv_t;
        x[t] = xv == xv ? xv : -std::numeric_limits<T>::infinity();  // NaN is never drawn
      }
      int64_t arg = 0;
      const T m = row_max(x.data(), V, &arg);
      const double u = Philox::uniform(o.seed, o.offset + static_cast<uint64_t>(n));
      if (!std::isfinite(static_cast<double>(m))) {  // nothing to draw from (or +inf): the arg-max
        out[n] = static_cast<int32_t>(arg);
        continue;
      }
      const double z_all = exp_shift(x.data(), m, e.data(), V);
      std::vector<Cand>& kept = kept_buf;
      const bool filtered = filter_kept(x.data(), e.data(), V, o, buf, kept);
      // draw: walk the kept tokens (or the vocabulary in index order) until the mass passes u * total
      int64_t pick = arg;
      if (filtered) {
        double z = 0.0;
        for (const Cand& c : kept) z += e[c.i];
        const double target = u * z;
        double acc = 0.0;
        pick = kept.back().i;
        for (const Cand& c : kept) {
          acc += e[c.i];
          if (acc >= target) {
            pick = c.i;
            break;
          }
        }
      } else {
        const double target = u * z_all;
        double acc = 0.0;
        for (int64_t t = 0; t < V; ++t) {
          if (e[t] == T(0)) continue;
          acc += e[t];
          pick = t;
          if (acc >= target) break;
        }
      }
      out[n] = static_cast<int32_t>(pick);
    }
  });
}

template <typename T>
void beam_impl(const Tensor& scores, const double* beam_scores, int64_t beams, int64_t count, double* out_scores,
               int32_t* tokens, int32_t* beam_of, const BeamSampleOptions* sample) {
  const int64_t N = scores.shape[0], V = scores.shape[1], B = N / beams;
  const T* sd = scores.data<T>();
  run_rows(B, beams * V, [&](int64_t begin, int64_t end) {
    std::vector<Cand> buf;
    for (int64_t b = begin; b < end; ++b) {
      const T* base = sd + b * beams * V;
      const double* bs = beam_scores + b * beams;
      auto value = [&](int64_t i) { return bs[i / V] + static_cast<double>(base[i]); };
      if (sample) {
        // Gumbel-top-k: the `count` largest s + Gumbel noise are a draw without replacement
        // from softmax(s); then they are ranked by s itself (HF sorts the drawn scores)
        const uint64_t at = sample->offset + static_cast<uint64_t>(b * beams * V);
        top_count(beams * V, count, [&](int64_t i) {
          const double s = value(i);
          if (!(s > kNegInf)) return kNegInf;  // -inf and NaN are never drawn before the others
          return s - std::log(-std::log(Philox::uniform(sample->seed, at + static_cast<uint64_t>(i))));
        }, buf);
        for (Cand& c : buf) c.v = clean(value(c.i));
        std::sort(buf.begin(), buf.end(), better);
      } else {
        top_count(beams * V, count, value, buf);
      }
      for (int64_t c = 0; c < count; ++c) {
        out_scores[b * count + c] = buf[c].v;
        tokens[b * count + c] = static_cast<int32_t>(buf[c].i % V);
        beam_of[b * count + c] = static_cast<int32_t>(buf[c].i / V);
      }
    }
  });
}

// One step of an in-place row gather: copy src -> dst, or save a row to / restore from scratch.
struct Move {
  enum Kind { Copy, Save, Restore } kind;
  int64_t src, dst;
};

}  // namespace

void kv_cache_write(Tensor& cache_k, Tensor& cache_v, const Tensor& k, const Tensor& v, int64_t position) {
  const int64_t N = cache_k.shape[0], H = cache_k.shape[1], Lmax = cache_k.shape[2], Dh = cache_k.shape[3];
  const int64_t T_ = k.shape[1];
  const size_t es = dtype_size(cache_k.dtype), bytes = static_cast<size_t>(Dh) * es;
  auto one = [&](Tensor& cache, const Tensor& x) {
    char* cd = static_cast<char*>(cache.raw());
    const char* xd = static_cast<const char*>(x.raw());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T_; ++t)
          std::memcpy(cd + (((n * H + h) * Lmax) + position + t) * Dh * static_cast<int64_t>(es),
                      xd + (n * x.strides[0] + t * x.strides[1] + h * Dh) * static_cast<int64_t>(es), bytes);
  };
  one(cache_k, k);
  one(cache_v, v);
}

void kv_cache_reorder(Tensor& cache, const int32_t* index, int64_t length) {
  const int64_t N = cache.shape[0], H = cache.shape[1], Lmax = cache.shape[2], Dh = cache.shape[3];
  if (length <= 0 || N == 0) return;
  // plan the moves: Kahn-style peel of rows nobody still reads, then the remaining cycles
  std::vector<int64_t> refs(static_cast<size_t>(N), 0);
  std::vector<char> pending(static_cast<size_t>(N), 0);
  for (int64_t i = 0; i < N; ++i)
    if (index[i] != i) {
      pending[i] = 1;
      ++refs[index[i]];
    }
  std::vector<Move> moves;
  std::vector<int64_t> ready;
  for (int64_t i = 0; i < N; ++i)
    if (pending[i] && refs[i] == 0) ready.push_back(i);
  while (!ready.empty()) {
    const int64_t i = ready.back();
    ready.pop_back();
    moves.push_back({Move::Copy, index[i], i});
    pending[i] = 0;
    const int64_t s = index[i];
    if (--refs[s] == 0 && pending[s]) ready.push_back(s);
  }
  for (int64_t i = 0; i < N; ++i) {
    if (!pending[i]) continue;  // what is left are permutation cycles
    moves.push_back({Move::Save, i, -1});
    int64_t cur = i;
    while (index[cur] != i) {
      moves.push_back({Move::Copy, index[cur], cur});
      pending[cur] = 0;
      cur = index[cur];
    }
    moves.push_back({Move::Restore, -1, cur});
    pending[cur] = 0;
  }
  if (moves.empty()) return;
  const size_t es = dtype_size(cache.dtype);
  const size_t chunk = static_cast<size_t>(length * Dh) * es;           // one head's valid positions
  const int64_t head_stride = Lmax * Dh * static_cast<int64_t>(es);     // bytes
  const int64_t row_stride = H * head_stride;
  char* base = static_cast<char*>(cache.raw());
  std::vector<char> scratch(static_cast<size_t>(H) * chunk);
  for (const Move& mv : moves) {
    for (int64_t h = 0; h < H; ++h) {
      char* scr = scratch.data() + h * chunk;
      switch (mv.kind) {
        case Move::Copy:
          std::memcpy(base + mv.dst * row_stride + h * head_stride, base + mv.src * row_stride + h * head_stride, chunk);
          break;
        case Move::Save:
          std::memcpy(scr, base + mv.src * row_stride + h * head_stride, chunk);
          break;
        case Move::Restore:
          std::memcpy(base + mv.dst * row_stride + h * head_stride, scr, chunk);
          break;
      }
    }
  }
}

void decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, const DecodeAttentionOptions& o,
                      Tensor& out) {
  dispatch_float(q.dtype, [&](auto zero) {
    using T = decltype(zero);
    attention_impl<T>(q, k, v, o, out);
  });
}

void decode_process_logits(Tensor& scores, bool log_softmax, const int32_t* history, int64_t history_len,
                           double penalty, const int32_t* suppress, int64_t n_suppress, const SampleOptions* warp) {
  dispatch_float(scores.dtype, [&](auto zero) {
    using T = decltype(zero);
    process_impl<T>(scores, log_softmax, history, history_len, penalty, suppress, n_suppress, warp);
  });
}

void decode_argmax(const Tensor& scores, int32_t* out) {
  dispatch_float(scores.dtype, [&](auto zero) {
    using T = decltype(zero);
    argmax_impl<T>(scores, out);
  });
}

void decode_sample(const Tensor& scores, const SampleOptions& o, int32_t* out) {
  dispatch_float(scores.dtype, [&](auto zero) {
    using T = decltype(zero);
    sample_impl<T>(scores, o, out);
  });
}

void decode_beam_candidates(const Tensor& scores, const double* beam_scores, int64_t beams, int64_t count,
                            double* out_scores, int32_t* tokens, int32_t* beam_of, const BeamSampleOptions* sample) {
  dispatch_float(scores.dtype, [&](auto zero) {
    using T = decltype(zero);
    beam_impl<T>(scores, beam_scores, beams, count, out_scores, tokens, beam_of, sample);
  });
}

}  // namespace cpu
}  // namespace vlm
