// Thread pool (OpenMP) with a fixed partition: chunk boundaries depend only on the
// range, the grain and the thread count, so reductions are reproducible.
#pragma once
#include <omp.h>
#include <algorithm>
#include <cstdint>

namespace vlm {

void set_num_threads(int n);
int num_threads();

// f(begin, end) over [0, n) in chunks of at least `grain`; runs inline when small
// or when already inside a parallel region (no nested oversubscription).
template <typename F>
inline void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int nt = num_threads();
  int64_t chunks = std::min<int64_t>(nt, (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1 || omp_in_parallel()) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    if (b < e) f(b, e);
  }
}

}  // namespace vlm
