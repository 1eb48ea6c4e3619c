// Counter-based randomness (Philox4x32-10, Salmon et al. 2011). A draw is a pure
// function of (seed, counter): the same seed gives the same numbers on any thread
// count, and a CUDA kernel can produce the same stream.
#pragma once
#include <cmath>
#include <cstdint>

namespace vlm {

struct Philox {
  // Four 32-bit outputs for counter `ctr` under key `seed`.
  static inline void draw(uint64_t seed, uint64_t ctr, uint32_t out[4]) {
    uint32_t c0 = static_cast<uint32_t>(ctr), c1 = static_cast<uint32_t>(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
      uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
      uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      uint32_t n1 = static_cast<uint32_t>(p1);
      uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      uint32_t n3 = static_cast<uint32_t>(p0);
      c0 = n0; c1 = n1; c2 = n2; c3 = n3;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
  }
  // Uniform in (0, 1): never exactly 0 so log() is safe.
  static inline double to_unit(uint32_t x) { return (static_cast<double>(x) + 0.5) * (1.0 / 4294967296.0); }
  // Element i of the stream (seed, offset): uniform in (0, 1).
  static inline double uniform(uint64_t seed, uint64_t index) {
    uint32_t o[4];
    draw(seed, index >> 2, o);
    return to_unit(o[index & 3]);
  }
  // Element i of a standard normal stream: Box-Muller on the pair (2k, 2k+1).
  static inline double normal(uint64_t seed, uint64_t index) {
    uint32_t o[4];
    draw(seed, index >> 1, o);
    double u1 = to_unit(o[0]), u2 = to_unit(o[1]);
    double r = std::sqrt(-2.0 * std::log(u1));
    double a = 6.283185307179586 * u2;
    return (index & 1) ? r * std::sin(a) : r * std::cos(a);
  }
};

}  // namespace vlm
