// Device memory: allocation and transfers. CPU storage uses aligned_alloc (core/storage.cc);
// CUDA storage uses these, implemented in cuda/device.cu (or refusing, in a CPU-only build).
#pragma once
#include <cstddef>
#include <string>

namespace vlm {

bool cuda_compiled();
// Number of usable CUDA devices; 0 with the reason in *why when there is none
// (no driver, no device, CPU-only build).
int cuda_device_count(std::string* why);
void* cuda_alloc(size_t nbytes);  // throws vlm::Error with the CUDA error text
void cuda_free(void* p);
void cuda_copy_to_device(void* dst, const void* src, size_t nbytes);
void cuda_copy_to_host(void* dst, const void* src, size_t nbytes);

}  // namespace vlm
