// device family, CUDA: the storage allocator, host<->device transfers, and the
// strided copy / fill kernels (the only CUDA kernels so far; the op families follow).
#include <cuda_runtime.h>
#include <cstdint>
#include <string>
#include "core/error.h"
#include "ops/copy.h"
#include "ops/device.h"

namespace vlm {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw_error(std::string("CUDA ") + what + " failed: " + cudaGetErrorString(e));
}

constexpr int kMaxDims = 8;
struct Layout {
  int nd;
  int64_t shape[kMaxDims];
  int64_t src_strides[kMaxDims];
  int64_t dst_strides[kMaxDims];
};

// One thread per element; the offset of each operand is rebuilt from the linear index.
template <typename T>
__global__ void copy_kernel(const T* __restrict__ src, T* __restrict__ dst, Layout lay, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = lay.nd - 1; d >= 0; --d) {
      int64_t k = rem % lay.shape[d];
      rem /= lay.shape[d];
      so += k * lay.src_strides[d];
      dof += k * lay.dst_strides[d];
    }
    dst[dof] = src[so];
  }
}

template <typename T>
__global__ void fill_kernel(T* dst, Layout lay, int64_t n, T v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, dof = 0;
    for (int d = lay.nd - 1; d >= 0; --d) {
      dof += (rem % lay.shape[d]) * lay.dst_strides[d];
      rem /= lay.shape[d];
    }
    dst[dof] = v;
  }
}

Layout make_layout(const Tensor& dst, const Tensor* src) {
  if (dst.dim() > kMaxDims) throw_range("cuda copy: at most 8 dimensions, got " + std::to_string(dst.dim()));
  Layout l{};
  l.nd = static_cast<int>(dst.dim());
  for (int d = 0; d < l.nd; ++d) {
    l.shape[d] = dst.shape[d];
    l.dst_strides[d] = dst.strides[d];
    l.src_strides[d] = src ? src->strides[d] : 0;
  }
  return l;
}

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 65535)); }

}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    if (why) *why = std::string("no usable CUDA device: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device found";
  return n;
}

void* cuda_alloc(size_t nbytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, nbytes), "cudaMalloc");
  return p;
}
void cuda_free(void* p) { if (p) cudaFree(p); }
void cuda_copy_to_device(void* dst, const void* src, size_t n) { check(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), "copy to device"); }
void cuda_copy_to_host(void* dst, const void* src, size_t n) { check(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), "copy to host"); }

namespace cuda {

void copy(const Tensor& src, Tensor& dst) {
  int64_t n = dst.numel();
  if (n == 0) return;
  if (src.dtype != dst.dtype) throw_type("cuda copy: dtype conversion on the device is not supported yet");
  Layout l = make_layout(dst, &src);
  switch (dst.dtype) {
    case DType::F32: copy_kernel<float><<<blocks_for(n), 256>>>(src.data<float>(), dst.data<float>(), l, n); break;
    case DType::F64: copy_kernel<double><<<blocks_for(n), 256>>>(src.data<double>(), dst.data<double>(), l, n); break;
    case DType::I32: copy_kernel<int32_t><<<blocks_for(n), 256>>>(src.data<int32_t>(), dst.data<int32_t>(), l, n); break;
    case DType::U8: copy_kernel<uint8_t><<<blocks_for(n), 256>>>(src.data<uint8_t>(), dst.data<uint8_t>(), l, n); break;
  }
  check(cudaGetLastError(), "copy kernel");
}

void fill(Tensor& dst, double v) {
  int64_t n = dst.numel();
  if (n == 0) return;
  Layout l = make_layout(dst, nullptr);
  switch (dst.dtype) {
    case DType::F32: fill_kernel<float><<<blocks_for(n), 256>>>(dst.data<float>(), l, n, (float)v); break;
    case DType::F64: fill_kernel<double><<<blocks_for(n), 256>>>(dst.data<double>(), l, n, v); break;
    case DType::I32: fill_kernel<int32_t><<<blocks_for(n), 256>>>(dst.data<int32_t>(), l, n, (int32_t)v); break;
    case DType::U8: fill_kernel<uint8_t><<<blocks_for(n), 256>>>(dst.data<uint8_t>(), l, n, (uint8_t)v); break;
  }
  check(cudaGetLastError(), "fill kernel");
}

}  // namespace cuda
}  // namespace vlm
