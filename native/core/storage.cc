#include "core/storage.h"
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>
#include "core/error.h"
#include "core/memory.h"
#include "ops/device.h"

namespace vlm {

// 64-byte alignment: a cache line and an AVX-512 register.
static constexpr size_t kAlign = 64;

namespace {

std::atomic<int64_t> g_host_held{0};
thread_local int t_bypass = 0;

void host_free(void* p, size_t cls) {
  std::free(p);
  g_host_held.fetch_sub(static_cast<int64_t>(cls), std::memory_order_relaxed);
}

// Host blocks of 1 MiB and more are kept for reuse. glibc returns blocks above its
// mmap threshold (at most 32 MiB) to the OS on free, so every large allocation
// re-faulted fresh zero pages: bandwidth-bound kernels on 4096-wide rows ran ~3x
// slower than on warm memory. A training step allocates the same shapes every
// step, so size classes (1/8 of a power of two, at most 12.5% slack) hit almost always.
class HostCache {
 public:
  static constexpr size_t kMin = size_t{1} << 20;
  static constexpr size_t kMaxCached = size_t{2} << 30;

  static size_t size_class(size_t n) {
    if (n < kMin) return (n + kAlign - 1) / kAlign * kAlign;
    size_t top = size_t{1} << (63 - __builtin_clzll(n));
    size_t step = std::max(kMin, top / 8);
    return (n + step - 1) / step * step;
  }
  void* take(size_t cls) {
    if (cls < kMin) return nullptr;
    std::lock_guard<std::mutex> g(mu_);
    auto it = free_.find(cls);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= cls;
    return p;
  }
  // Keeps p for reuse; false when it should be freed instead.
  bool put(void* p, size_t cls) {
    if (cls < kMin) return false;
    std::lock_guard<std::mutex> g(mu_);
    if (cached_ + cls > kMaxCached) return false;
    free_[cls].push_back(p);
    cached_ += cls;
    return true;
  }
  void release_all() {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& [cls, v] : free_)
      for (void* p : v) host_free(p, cls);
    free_.clear();
    cached_ = 0;
  }
  size_t cached() {
    std::lock_guard<std::mutex> g(mu_);
    return cached_;
  }

 private:
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

HostCache& host_cache() {
  static HostCache* c = new HostCache();  // never destroyed: storages may outlive static teardown
  return *c;
}

}  // namespace

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) {
  if (d == Device::CPU) {
    size_t cls = HostCache::size_class(n == 0 ? 1 : n);
    data = host_cache().take(cls);
    if (!data) {
      data = std::aligned_alloc(kAlign, cls);
      if (!data) throw_range("out of host memory: could not allocate " + std::to_string(n) + " bytes");
      g_host_held.fetch_add(static_cast<int64_t>(cls), std::memory_order_relaxed);
    }
  } else {
    data = cuda_alloc(((n == 0 ? 1 : n) + kAlign - 1) / kAlign * kAlign);  // throws with the CUDA error text
  }
  memory_add(d, static_cast<int64_t>(n));
}

Storage::~Storage() {
  if (device == Device::CPU) {
    size_t cls = HostCache::size_class(nbytes == 0 ? 1 : nbytes);
    if (t_bypass > 0 || !host_cache().put(data, cls)) host_free(data, cls);
  } else {
    cuda_free(data);
  }
  memory_add(device, -static_cast<int64_t>(nbytes));
}

size_t host_cache_bytes() { return host_cache().cached(); }
void host_cache_release() { host_cache().release_all(); }
HostCacheBypass::HostCacheBypass() { ++t_bypass; }
HostCacheBypass::~HostCacheBypass() { --t_bypass; }
int64_t host_held_bytes() { return g_host_held.load(std::memory_order_relaxed); }

}  // namespace vlm
