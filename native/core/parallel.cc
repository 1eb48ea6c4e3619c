#include "core/parallel.h"
#include <atomic>

namespace vlm {
namespace {
std::atomic<int> g_threads{0};
}

void set_num_threads(int n) {
  g_threads.store(n);
  omp_set_num_threads(n);
}

int num_threads() {
  int n = g_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

}  // namespace vlm
