// A block of device memory, shared by every tensor view onto it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include "core/dtype.h"

namespace vlm {

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;
  Storage(size_t nbytes, Device device);  // throws vlm::Error when out of memory
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

using StoragePtr = std::shared_ptr<Storage>;

// Freed host blocks of 1 MiB and more are cached for reuse (storage.cc says why).
size_t host_cache_bytes();
void host_cache_release();
// Host bytes the allocator holds from the OS, in use or cached: what the JS binding
// reports to V8 as external memory (tensor_wrap.cc says why not per tensor).
int64_t host_held_bytes();
// While one is alive on a thread, host blocks freed there go back to the OS instead of
// the cache: the binding frees garbage-collected tensors this way, so that memory a
// program leaks to the GC shows up as freed (tensor_wrap.cc).
class HostCacheBypass {
 public:
  HostCacheBypass();
  ~HostCacheBypass();
  HostCacheBypass(const HostCacheBypass&) = delete;
  HostCacheBypass& operator=(const HostCacheBypass&) = delete;
};

}  // namespace vlm
