// dropout family, CPU: one kernel serves forward (on x) and backward (on gy): both
// apply the mask regenerated from Philox. Each Philox call gives four draws, used for
// four consecutive elements of the stream; the mask never depends on the partition.
#include "ops/dropout.h"
#include "core/parallel.h"
#include "core/rng.h"

namespace vlm {
namespace cpu {

// N elements: x, y [N]
void dropout_apply(const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset) {
  const int64_t n = x.numel();
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    if (p >= 1.0) {  // every draw is < 1: all dropped
      parallel_for(n, 65536, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) yp[i] = T(0);
      });
      return;
    }
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    parallel_for(n, 16384, [&](int64_t b, int64_t e) {
      int64_t i = b;
      while (i < e) {
        uint64_t g = offset + static_cast<uint64_t>(i);
        uint32_t r[4];
        Philox::draw(seed, g >> 2, r);
        for (unsigned lane = static_cast<unsigned>(g & 3); lane < 4 && i < e; ++lane, ++i)
          yp[i] = Philox::to_unit(r[lane]) >= p ? xp[i] * scale : T(0);
      }
    });
  });
}

}  // namespace cpu
}  // namespace vlm
