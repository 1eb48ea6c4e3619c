// Creation, views, copies, transfers and the runtime queries (memory, threads, build).
#include <cmath>
#include <cstring>
#include "binding/args.h"
#include "binding/registry.h"
#include "binding/tensor_wrap.h"
#include "core/gemm.h"
#include "core/gemm_dnnl.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "ops/copy.h"
#include "ops/device.h"

#ifdef VLMKIT_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif

namespace vlm::js {
namespace {

void check_device_usable(const char* op, Device d) {
  if (d != Device::CUDA) return;
  std::string why;
  if (cuda_device_count(&why) == 0) throw_error(std::string(op) + ": cannot use device 'cuda': " + why);
}

Tensor make(const char* op, const Shape& shape, DType dtype, Device device) {
  check_device_usable(op, device);
  return Tensor::empty(shape, dtype, device);
}

void fill_any(Tensor& t, double v) {
  if (t.device() == Device::CPU) cpu::fill(t, v);
  else cuda::fill(t, v);
}

// empty(shape, dtype, device)
Napi::Value empty(const Napi::CallbackInfo& info) {
  Args a(info, "empty");
  return wrap(info.Env(), make("empty", a.shape(0, "shape"), a.dtype(1, "dtype"), a.device(2, "device")));
}

// full(shape, value, dtype, device)
Napi::Value full(const Napi::CallbackInfo& info) {
  Args a(info, "full");
  Shape s = a.shape(0, "shape");
  double v = a.number(1, "value");
  DType d = a.dtype(2, "dtype");
  if (!is_float(d) && !std::isfinite(v)) range_error("full", "value", "a finite number for an integer dtype", describe(info[1]));
  Tensor t = make("full", s, d, a.device(3, "device"));
  fill_any(t, v);
  return wrap(info.Env(), std::move(t));
}

// fromData(typedArray, shape, dtype, device): the typed array's element type must match dtype.
Napi::Value from_data(const Napi::CallbackInfo& info) {
  Args a(info, "tensor");
  if (!info[0].IsTypedArray()) type_error("tensor", "data", "a typed array", describe(info[0]));
  Shape s = a.shape(1, "shape");
  DType d = a.dtype(2, "dtype");
  Device dev = a.device(3, "device");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  napi_typedarray_type want = d == DType::F32 ? napi_float32_array : d == DType::F64 ? napi_float64_array
                             : d == DType::I32 ? napi_int32_array : napi_uint8_array;
  if (ta.TypedArrayType() != want && !(d == DType::U8 && ta.TypedArrayType() == napi_uint8_clamped_array))
    type_error("tensor", "data", std::string("a typed array of ") + dtype_name(d), "another kind of typed array");
  if (static_cast<int64_t>(ta.ElementLength()) != shape_numel(s))
    range_error("tensor", "data", std::to_string(shape_numel(s)) + " elements for shape " + shape_str(s),
                std::to_string(ta.ElementLength()) + " elements");
  Tensor t = make("tensor", s, d, dev);
  const void* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  size_t nbytes = static_cast<size_t>(shape_numel(s)) * dtype_size(d);
  if (nbytes) {
    if (dev == Device::CPU) std::memcpy(t.storage->data, src, nbytes);
    else cuda_copy_to_device(t.storage->data, src, nbytes);
  }
  return wrap(info.Env(), std::move(t));
}

// toArray(t) -> a new typed array with t's values in row-major order.
Napi::Value to_array(const Napi::CallbackInfo& info) {
  Args a(info, "toArray");
  const Tensor& t = a.tensor(0, "tensor");
  Tensor c = contiguous(t);
  size_t n = static_cast<size_t>(c.numel());
  size_t nbytes = n * dtype_size(c.dtype);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(info.Env(), nbytes);
  if (nbytes) {
    if (c.device() == Device::CPU) std::memcpy(buf.Data(), c.raw(), nbytes);
    else cuda_copy_to_host(buf.Data(), c.raw(), nbytes);
  }
  switch (c.dtype) {
    case DType::F32: return Napi::Float32Array::New(info.Env(), n, buf, 0);
    case DType::F64: return Napi::Float64Array::New(info.Env(), n, buf, 0);
    case DType::I32: return Napi::Int32Array::New(info.Env(), n, buf, 0);
    default: return Napi::Uint8Array::New(info.Env(), n, buf, 0);
  }
}

// arange(start, step, n, dtype)
Napi::Value arange(const Napi::CallbackInfo& info) {
  Args a(info, "arange");
  double start = a.finite(0, "start"), step = a.finite(1, "step");
  int64_t n = a.integer(2, "count", 0, kMaxNumel);
  DType d = a.dtype(3, "dtype");
  Tensor t = make("arange", {n}, d, Device::CPU);
  for (int64_t i = 0; i < n; ++i) {
    double v = start + step * static_cast<double>(i);
    switch (d) {
      case DType::F32: t.data<float>()[i] = static_cast<float>(v); break;
      case DType::F64: t.data<double>()[i] = v; break;
      case DType::I32: t.data<int32_t>()[i] = static_cast<int32_t>(v); break;
      case DType::U8: t.data<uint8_t>()[i] = static_cast<uint8_t>(v); break;
    }
  }
  return wrap(info.Env(), std::move(t));
}

// random(kind, shape, dtype, seed, offset, a, b): kind 'normal' (mean a, std b) or
// 'uniform' (in [a, b)). Element i is a function of (seed, offset + i) only.
Napi::Value random(const Napi::CallbackInfo& info) {
  Args a(info, "random");
  std::string kind = a.string(0, "kind");
  if (kind != "normal" && kind != "uniform") type_error("random", "kind", "'normal' or 'uniform'", describe(info[0]));
  Shape s = a.shape(1, "shape");
  DType d = a.dtype(2, "dtype");
  if (!is_float(d)) type_error("random", "dtype", "'float32' or 'float64'", std::string("'") + dtype_name(d) + "'");
  uint64_t seed = static_cast<uint64_t>(a.integer(3, "seed", 0, 9007199254740991LL));
  uint64_t offset = static_cast<uint64_t>(a.integer(4, "offset", 0, 9007199254740991LL));
  double p = a.finite(5, kind == "normal" ? "mean" : "low"), q = a.finite(6, kind == "normal" ? "std" : "high");
  Tensor t = make("random", s, d, Device::CPU);
  bool normal = kind == "normal";
  dispatch_float(d, [&](auto zero) {
    using T = decltype(zero);
    T* out = t.data<T>();
    parallel_for(t.numel(), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        double u = normal ? p + q * Philox::normal(seed, offset + i) : p + (q - p) * Philox::uniform(seed, offset + i);
        out[i] = static_cast<T>(u);
      }
    });
  });
  return wrap(info.Env(), std::move(t));
}

// view(t, shape, strides, offset): a new handle onto t's storage. Every element the
// view can reach must lie inside the storage.
Napi::Value view(const Napi::CallbackInfo& info) {
  Args a(info, "view");
  const Tensor& t = a.tensor(0, "tensor");
  Shape s = a.shape(1, "shape");
  Shape st = a.ints(2, "strides");
  int64_t off = a.integer(3, "offset", 0, kMaxNumel);
  if (st.size() != s.size())
    range_error("view", "strides", std::to_string(s.size()) + " strides (one per dimension)", shape_str(st));
  int64_t cap = static_cast<int64_t>(t.storage->nbytes / dtype_size(t.dtype));
  int64_t lo = off, hi = off;
  bool empty = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == 0) empty = true;
    if (st[i] >= 0) hi += st[i] * (s[i] - 1);
    else lo += st[i] * (s[i] - 1);
  }
  if (!empty && (lo < 0 || hi >= cap))
    range_error("view", "shape/strides/offset", "a view inside the storage of " + std::to_string(cap) + " elements",
                "one reaching elements " + std::to_string(lo) + ".." + std::to_string(hi));
  Tensor v = t;
  v.shape = s;
  v.strides = st;
  v.offset = off;
  return wrap(info.Env(), std::move(v));
}

// copy(dst, src): dst = src where src's shape broadcasts to dst's; casts dtype.
Napi::Value copy(const Napi::CallbackInfo& info) {
  Args a(info, "copy");
  const Tensor& dst = a.tensor(0, "dst");
  const Tensor& src = a.tensor(1, "src");
  expect_same_device("copy", "src", src, dst, "dst");
  if (src.dim() > dst.dim())
    range_error("copy", "src", "a shape broadcastable to " + shape_str(dst.shape), "shape " + shape_str(src.shape));
  Tensor b = src;  // broadcast view of src
  b.shape = dst.shape;
  b.strides.assign(dst.dim(), 0);
  int64_t lead = dst.dim() - src.dim();
  for (int64_t i = 0; i < src.dim(); ++i) {
    int64_t sd = src.shape[i], dd = dst.shape[lead + i];
    if (sd == dd) b.strides[lead + i] = src.strides[i];
    else if (sd != 1)
      range_error("copy", "src", "a shape broadcastable to " + shape_str(dst.shape), "shape " + shape_str(src.shape));
  }
  if (dst.device() == Device::CUDA && src.dtype != dst.dtype)
    type_error("copy", "src", std::string("a ") + dtype_name(dst.dtype) + " tensor on cuda", dtype_name(src.dtype));
  Tensor d = dst;
  if (d.device() == Device::CPU) cpu::copy(b, d);
  else cuda::copy(b, d);
  return info.Env().Undefined();
}

// cast(t, dtype) -> a new contiguous tensor
Napi::Value cast(const Napi::CallbackInfo& info) {
  Args a(info, "cast");
  const Tensor& t = a.tensor(0, "tensor");
  DType d = a.dtype(1, "dtype");
  expect_cpu("cast", "tensor", t);
  Tensor out = Tensor::empty(t.shape, d, Device::CPU);
  cpu::copy(t, out);
  return wrap(info.Env(), std::move(out));
}

// contiguous(t) -> t's values in a fresh row-major tensor (always a copy)
Napi::Value contiguous_copy(const Napi::CallbackInfo& info) {
  Args a(info, "contiguous");
  const Tensor& t = a.tensor(0, "tensor");
  Tensor out = Tensor::empty(t.shape, t.dtype, t.device());
  if (t.device() == Device::CPU) cpu::copy(t, out);
  else cuda::copy(t, out);
  return wrap(info.Env(), std::move(out));
}

// toDevice(t, device) -> a contiguous copy on the device
Napi::Value to_device(const Napi::CallbackInfo& info) {
  Args a(info, "to");
  const Tensor& t = a.tensor(0, "tensor");
  Device d = a.device(1, "device");
  check_device_usable("to", d);
  Tensor c = contiguous(t);
  Tensor out = Tensor::empty(t.shape, t.dtype, d);
  size_t nbytes = static_cast<size_t>(t.numel()) * dtype_size(t.dtype);
  if (nbytes == 0) return wrap(info.Env(), std::move(out));
  if (c.device() == Device::CPU && d == Device::CPU) std::memcpy(out.raw(), c.raw(), nbytes);
  else if (c.device() == Device::CPU) cuda_copy_to_device(out.raw(), c.raw(), nbytes);
  else if (d == Device::CPU) cuda_copy_to_host(out.raw(), c.raw(), nbytes);
  else cuda::copy(c, out);
  return wrap(info.Env(), std::move(out));
}

Napi::Object stats(Napi::Env env, Device d) {
  MemoryStats m = memory_stats(d);
  Napi::Object o = Napi::Object::New(env);
  o.Set("liveBytes", static_cast<double>(m.live_bytes));
  o.Set("peakBytes", static_cast<double>(m.peak_bytes));
  return o;
}

Napi::Value memory(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  Napi::Object cpu = stats(info.Env(), Device::CPU);
  cpu.Set("cachedBytes", static_cast<double>(host_cache_bytes()));
  o.Set("cpu", cpu);
  o.Set("cuda", stats(info.Env(), Device::CUDA));
  return o;
}

Napi::Value reset_peak(const Napi::CallbackInfo& info) {
  memory_reset_peak(Device::CPU);
  memory_reset_peak(Device::CUDA);
  return info.Env().Undefined();
}

// Frees the cached host blocks (memory the process keeps for reuse).
Napi::Value empty_cache(const Napi::CallbackInfo& info) {
  host_cache_release();
  return info.Env().Undefined();
}

Napi::Value set_threads(const Napi::CallbackInfo& info) {
  Args a(info, "setNumThreads");
  int n = static_cast<int>(a.integer(0, "threads", 1, 1024));
  set_num_threads(n);
#ifdef VLMKIT_HAVE_OPENBLAS
  openblas_set_num_threads(n);
#endif
  return info.Env().Undefined();
}

// 'highest' (float32) or 'medium' (bf16 operands, float32 accumulation), as PyTorch's
// set_float32_matmul_precision; 'high' (TF32 on GPUs) has no CPU counterpart and keeps float32.
Napi::Value set_matmul_precision_js(const Napi::CallbackInfo& info) {
  Args a(info, "setFloat32MatmulPrecision");
  std::string p = a.string(0, "precision");
  if (p == "highest" || p == "high") set_matmul_precision(MatmulPrecision::kHighest);
  else if (p == "medium") set_matmul_precision(MatmulPrecision::kMedium);
  else range_error("setFloat32MatmulPrecision", "precision", "'highest', 'high' or 'medium'", "'" + p + "'");
  return info.Env().Undefined();
}

// Weights that few-row products (decode steps) may use prepacked until weightPackingEnd
// (core/gemm_dnnl.cc). Tensors that are not dense 2-D float32 CPU tensors are skipped:
// vlm.generate passes every parameter of the model. The registry holds a reference to
// each weight's storage, so none can be freed and its address reused inside the scope.
std::vector<Tensor> g_packed_weights;

Napi::Value weight_packing_begin_js(const Napi::CallbackInfo& info) {
  Args a(info, "weightPackingBegin");
  Napi::Value v = info.Length() > 0 ? info[0] : info.Env().Undefined();
  if (!v.IsArray()) type_error(a.op(), "weights", "an array of tensors", describe(v));
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<Tensor> keep;
  std::vector<WeightRef> refs;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string name = "weights[" + std::to_string(i) + "]";
    Napi::Value e = arr.Get(i);
    JsTensor* t = JsTensor::unwrap_or_null(e);
    if (!t) type_error(a.op(), name.c_str(), "a tensor", describe(e));
    if (t->disposed()) type_error(a.op(), name.c_str(), "a live tensor", "a disposed tensor");
    const Tensor& w = t->tensor();
    if (w.dtype != DType::F32 || w.device() != Device::CPU || w.dim() != 2 || !w.is_contiguous() || w.numel() == 0) continue;
    refs.push_back(WeightRef{w.data<float>(), w.shape[0], w.shape[1]});
    keep.push_back(w);
  }
  weight_packing_begin(refs);
  g_packed_weights = std::move(keep);
  return info.Env().Undefined();
}

Napi::Value weight_packing_end_js(const Napi::CallbackInfo& info) {
  weight_packing_end();
  g_packed_weights.clear();
  return info.Env().Undefined();
}

Napi::Value get_matmul_precision_js(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), matmul_precision() == MatmulPrecision::kMedium ? "medium" : "highest");
}

Napi::Value get_threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), num_threads()); }

Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("gemm", VLMKIT_GEMM_NAME);
#if defined(__AVX512F__)
  o.Set("isa", "avx512");
#elif defined(__AVX2__)
  o.Set("isa", "avx2");
#else
  o.Set("isa", "generic");
#endif
  o.Set("cpuAvx512", static_cast<bool>(__builtin_cpu_supports("avx512f")));
  o.Set("threads", num_threads());
  o.Set("bf16Matmul", matmul_bf16_available());
  o.Set("cudaCompiled", cuda_compiled());
  std::string why;
  int n = cuda_device_count(&why);
  o.Set("cudaDevices", n);
  if (n == 0) o.Set("cudaReason", why);
  o.Set("napiVersion", NAPI_VERSION);
  o.Set("compiler", __VERSION__);
  return o;
}

}  // namespace

VLM_EXPORT("empty", empty);
VLM_EXPORT("full", full);
VLM_EXPORT("fromData", from_data);
VLM_EXPORT("toArray", to_array);
VLM_EXPORT("arange", arange);
VLM_EXPORT("random", random);
VLM_EXPORT("view", view);
VLM_EXPORT("copy", copy);
VLM_EXPORT("cast", cast);
VLM_EXPORT("contiguous", contiguous_copy);
VLM_EXPORT("toDevice", to_device);
VLM_EXPORT("memory", memory);
VLM_EXPORT("resetPeak", reset_peak);
VLM_EXPORT("emptyCache", empty_cache);
VLM_EXPORT("setNumThreads", set_threads);
VLM_EXPORT("getNumThreads", get_threads);
VLM_EXPORT("buildInfo", build_info);
VLM_EXPORT("setFloat32MatmulPrecision", set_matmul_precision_js);
VLM_EXPORT("getFloat32MatmulPrecision", get_matmul_precision_js);
VLM_EXPORT("weightPackingBegin", weight_packing_begin_js);
VLM_EXPORT("weightPackingEnd", weight_packing_end_js);

}  // namespace vlm::js
