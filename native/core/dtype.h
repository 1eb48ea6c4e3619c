// Element types and devices known to the core.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace vlm {

enum class DType : uint8_t { F32 = 0, F64 = 1, I32 = 2, U8 = 3 };
enum class Device : uint8_t { CPU = 0, CUDA = 1 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "?";
}
inline bool parse_dtype(const std::string& s, DType& out) {
  if (s == "float32") out = DType::F32;
  else if (s == "float64") out = DType::F64;
  else if (s == "int32") out = DType::I32;
  else if (s == "uint8") out = DType::U8;
  else return false;
  return true;
}
inline bool is_float(DType t) { return t == DType::F32 || t == DType::F64; }

inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
inline bool parse_device(const std::string& s, Device& out) {
  if (s == "cpu") out = Device::CPU;
  else if (s == "cuda") out = Device::CUDA;
  else return false;
  return true;
}

// Calls f(T{}) with T the C++ type of a floating dtype. Kernels are templates over T.
template <typename F>
inline void dispatch_float(DType t, F&& f) {
  if (t == DType::F64) f(double{});
  else f(float{});
}

}  // namespace vlm
