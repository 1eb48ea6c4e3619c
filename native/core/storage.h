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

}  // namespace vlm
