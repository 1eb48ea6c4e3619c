// Live and peak bytes per device, counted by every Storage allocation.
#pragma once
#include <cstdint>
#include "core/dtype.h"

namespace vlm {

struct MemoryStats {
  int64_t live_bytes;
  int64_t peak_bytes;
};

void memory_add(Device d, int64_t bytes);  // negative to release
MemoryStats memory_stats(Device d);
void memory_reset_peak(Device d);

}  // namespace vlm
