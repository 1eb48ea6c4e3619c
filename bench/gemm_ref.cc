// The libraries' own speed, without vlmkit: times oneDNN's dnnl_sgemm and OpenBLAS's
// cblas_sgemm on square row-major float32 products and prints one JSON line.
// Built and run by bench/matmul.ts:
//   g++ -O3 -fopenmp bench/gemm_ref.cc -o gemm_ref -ldnnl -lopenblas
//   ./gemm_ref SIZES THREADS     e.g. ./gemm_ref 512,1024,2048,4096 1,2
// Either library may be left out at build time with -DNO_DNNL or -DNO_OPENBLAS.
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifndef NO_DNNL
#include <dnnl.h>
#endif
#ifndef NO_OPENBLAS
#include <cblas.h>
#endif

static std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  std::string cur;
  for (const char* p = s;; ++p) {
    if (*p == ',' || *p == 0) {
      if (!cur.empty()) v.push_back(std::atoi(cur.c_str()));
      cur.clear();
      if (*p == 0) break;
    } else {
      cur += *p;
    }
  }
  return v;
}

// Median seconds of `repeats` calls after one warm-up call.
template <typename F>
static double median_time(F&& f, int repeats) {
  f();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

static int repeats_for(int n) { return n >= 4096 ? 2 : n >= 2048 ? 4 : n >= 1024 ? 8 : 16; }

int main(int argc, char** argv) {
  std::vector<int> sizes = parse_list(argc > 1 ? argv[1] : "512,1024,2048");
  std::vector<int> threads = parse_list(argc > 2 ? argv[2] : "1,2");
  std::printf("{\"results\": [");
  bool first = true;
  for (int n : sizes) {
    std::vector<float> A(size_t(n) * n), B(size_t(n) * n), C(size_t(n) * n);
    std::mt19937 g(1);
    std::normal_distribution<float> d;
    for (auto& x : A) x = d(g);
    for (auto& x : B) x = d(g);
    const double flop = 2.0 * n * double(n) * n;
    for (int nt : threads) {
      auto emit = [&](const char* lib, double s) {
        std::printf("%s{\"lib\": \"%s\", \"n\": %d, \"threads\": %d, \"median_s\": %.6g, \"gflops\": %.4g}", first ? "" : ", ",
                    lib, n, nt, s, flop / s / 1e9);
        std::fflush(stdout);
        first = false;
      };
#ifndef NO_DNNL
      omp_set_num_threads(nt);  // oneDNN's OpenMP runtime takes omp_get_max_threads()
      emit("onednn", median_time([&] { dnnl_sgemm('N', 'N', n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n); },
                                 repeats_for(n)));
#endif
#ifndef NO_OPENBLAS
      openblas_set_num_threads(nt);
      emit("openblas", median_time([&] {
             cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
           }, repeats_for(n)));
#endif
    }
  }
  std::printf("]}\n");
  return 0;
}
