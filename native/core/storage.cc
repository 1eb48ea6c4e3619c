#include "core/storage.h"
#include <cstdlib>
#include <string>
#include "core/error.h"
#include "core/memory.h"
#include "ops/device.h"

namespace vlm {

// 64-byte alignment: a cache line and an AVX-512 register.
static constexpr size_t kAlign = 64;

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) {
  size_t padded = ((n == 0 ? 1 : n) + kAlign - 1) / kAlign * kAlign;
  if (d == Device::CPU) {
    data = std::aligned_alloc(kAlign, padded);
    if (!data) throw_range("out of host memory: could not allocate " + std::to_string(n) + " bytes");
  } else {
    data = cuda_alloc(padded);  // throws with the CUDA error text
  }
  memory_add(d, static_cast<int64_t>(n));
}

Storage::~Storage() {
  if (device == Device::CPU) std::free(data);
  else cuda_free(data);
  memory_add(device, -static_cast<int64_t>(nbytes));
}

}  // namespace vlm
