#include "core/memory.h"
#include <atomic>

namespace vlm {
namespace {
std::atomic<int64_t> g_live[2];
std::atomic<int64_t> g_peak[2];
}  // namespace

void memory_add(Device d, int64_t bytes) {
  int i = static_cast<int>(d);
  int64_t now = g_live[i].fetch_add(bytes) + bytes;
  int64_t peak = g_peak[i].load();
  while (now > peak && !g_peak[i].compare_exchange_weak(peak, now)) {
  }
}

MemoryStats memory_stats(Device d) {
  int i = static_cast<int>(d);
  return {g_live[i].load(), g_peak[i].load()};
}

void memory_reset_peak(Device d) {
  int i = static_cast<int>(d);
  g_peak[i].store(g_live[i].load());
}

}  // namespace vlm
