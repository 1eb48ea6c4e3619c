// A strided view onto a Storage: what every kernel receives.
#pragma once
#include <cstdint>
#include <vector>
#include "core/dtype.h"
#include "core/storage.h"

namespace vlm {

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i] > 0 ? s[i] : 1;
  }
  return st;
}

struct Tensor {
  StoragePtr storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Shape strides;       // in elements
  DType dtype = DType::F32;

  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const { return shape_numel(shape); }
  Device device() const { return storage->device; }
  bool is_contiguous() const {
    int64_t acc = 1;
    for (size_t i = shape.size(); i-- > 0;) {
      if (shape[i] != 1 && strides[i] != acc) return false;
      acc *= shape[i];
    }
    return true;
  }
  template <typename T>
  T* data() const { return static_cast<T*>(storage->data) + offset; }
  void* raw() const { return static_cast<char*>(storage->data) + offset * dtype_size(dtype); }

  // A fresh contiguous tensor (uninitialised memory).
  static Tensor empty(const Shape& shape, DType dtype, Device device) {
    Tensor t;
    t.storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
    t.shape = shape;
    t.strides = contiguous_strides(shape);
    t.dtype = dtype;
    return t;
  }
};

}  // namespace vlm
