// The device entry points of a build without CUDA: every request is refused clearly.
#ifndef VLMKIT_HAVE_CUDA
#include "core/error.h"
#include "ops/copy.h"
#include "ops/device.h"

namespace vlm {
static const char* kNoCuda = "vlmkit was built without CUDA (nvcc not found at build time, or VLMKIT_CUDA=off)";
bool cuda_compiled() { return false; }
int cuda_device_count(std::string* why) {
  if (why) *why = kNoCuda;
  return 0;
}
void* cuda_alloc(size_t) { throw_error(kNoCuda); }
void cuda_free(void*) {}
void cuda_copy_to_device(void*, const void*, size_t) { throw_error(kNoCuda); }
void cuda_copy_to_host(void*, const void*, size_t) { throw_error(kNoCuda); }
namespace cuda {
void copy(const Tensor&, Tensor&) { throw_error(kNoCuda); }
void fill(Tensor&, double) { throw_error(kNoCuda); }
}  // namespace cuda
}  // namespace vlm
#endif
