// elementwise family, CPU: unary activations and their gradients, broadcasting binary
// arithmetic, affine / scalar power / axpy / in-place scale.
//
// Every kernel walks its operands with StridedLayout (dims merged where all operands
// are laid out back to back) and has a contiguous fast path whose loop the compiler
// vectorises. float32 transcendental functions (exp, log, tanh, erfc) are written
// branch-free below so that these loops vectorise too (glibc's expf/logf do not);
// they are within ~1-2 ulp. float64 uses the C library (it is the reference dtype of
// gradient checks).
//
// Trapping math is off for this file only: without it GCC will not if-convert a
// select whose arm holds a floating-point operation, and no loop with a select would
// vectorise. Nothing here enables floating-point exceptions, so values are unchanged.
#pragma GCC optimize("no-trapping-math")

#include "ops/elementwise.h"
#include <cmath>
#include <cstring>
#include <limits>
#include "core/iter.h"
#include "core/parallel.h"
#include "core/vec_math.h"
#include "cpu/elementwise_avx512.h"

#define VLM_INLINE inline __attribute__((always_inline))

namespace vlm {

bool parse_unary_op(const std::string& s, UnaryOp& out) {
  static const char* names[] = {"neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu",
                                "gelu", "gelu_tanh", "quick_gelu", "silu", "abs"};
  for (int i = 0; i < 12; ++i)
    if (s == names[i]) { out = static_cast<UnaryOp>(i); return true; }
  return false;
}

bool parse_binary_op(const std::string& s, BinaryOp& out) {
  static const char* names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum"};
  for (int i = 0; i < 7; ++i)
    if (s == names[i]) { out = static_cast<BinaryOp>(i); return true; }
  return false;
}

bool broadcast_shapes(const Shape& a, const Shape& b, Shape& out) {
  size_t n = std::max(a.size(), b.size());
  out.assign(n, 1);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1) return false;
    out[i] = da == 1 ? db : da;
  }
  return true;
}

Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  Tensor v = t;
  size_t lead = shape.size() - t.shape.size();
  v.shape = shape;
  v.strides.assign(shape.size(), 0);
  for (size_t i = 0; i < t.shape.size(); ++i)
    if (t.shape[i] == shape[lead + i]) v.strides[lead + i] = t.strides[i];
  return v;
}

namespace {

// ---- branch-free float32 math ------------------------------------------------------

VLM_INLINE float as_float(int32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
VLM_INLINE int32_t as_int(float f) { int32_t i; std::memcpy(&i, &f, 4); return i; }

// exp: every input (denormal results, overflow to inf, NaN in NaN out); core/vec_math.h.
VLM_INLINE float fexp(float x) { return vec::exp_f32_full(x); }

// log: Cephes polynomial on the mantissa in [sqrt(1/2), sqrt(2)). log(0) = -inf,
// log(x < 0) = NaN, log(inf) = inf; denormals are scaled up first.
VLM_INLINE float flog(float x) {
  bool sub = x < 1.17549435e-38f;
  float xs = sub ? x * 8388608.f : x;
  int32_t bits = as_int(xs);
  int32_t e = ((bits >> 23) & 0xff) - 126;
  float m = as_float((bits & 0x007fffff) | 0x3f000000);  // in [0.5, 1)
  float ef = static_cast<float>(e) - (sub ? 23.f : 0.f);
  bool lo = m < 0.707106781186547524f;
  ef = lo ? ef - 1.f : ef;
  float t = lo ? m + m - 1.f : m - 1.f;
  float z = t * t;
  float y = 7.0376836292E-2f;
  y = y * t - 1.1514610310E-1f;
  y = y * t + 1.1676998740E-1f;
  y = y * t - 1.2420140846E-1f;
  y = y * t + 1.4249322787E-1f;
  y = y * t - 1.6668057665E-1f;
  y = y * t + 2.0000714765E-1f;
  y = y * t - 2.4999993993E-1f;
  y = y * t + 3.3333331174E-1f;
  y = y * t * z;
  y += -2.12194440e-4f * ef;
  y += -0.5f * z;
  float r = t + y;
  r += 0.693359375f * ef;
  r = x == 0.f ? -std::numeric_limits<float>::infinity() : r;
  r = x < 0.f ? std::numeric_limits<float>::quiet_NaN() : r;
  r = x == std::numeric_limits<float>::infinity() ? x : r;
  return x == x ? r : x;
}

// tanh: odd polynomial (Cephes) below 0.625, else 1 - 2/(e^{2|x|} + 1).
VLM_INLINE float ftanh(float x) {
  float a = std::fabs(x);
  float z = x * x;
  float p = -5.70498872745E-3f;
  p = p * z + 2.06390887954E-2f;
  p = p * z - 5.37397155531E-2f;
  p = p * z + 1.33314422036E-1f;
  p = p * z - 3.33332819422E-1f;
  float small = p * z * x + x;
  float e = fexp(a + a);
  float big = 1.f - 2.f / (e + 1.f);
  big = x < 0.f ? -big : big;
  return a < 0.625f ? small : big;
}

// erfc(z) for z >= 0 with relative error ~1e-7 (Numerical Recipes' Chebyshev fit), so
// the far left tail of GELU keeps its relative accuracy.
VLM_INLINE float ferfc_pos(float z) {
  float t = 1.f / (1.f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return t * fexp(p - z * z);
}

// Per-dtype math: float32 uses the functions above, float64 the C library.
template <typename T> struct M;
template <> struct M<float> {
  static VLM_INLINE float exp(float x) { return fexp(x); }
  static VLM_INLINE float log(float x) { return flog(x); }
  static VLM_INLINE float tanh(float x) { return ftanh(x); }
  // Phi(x), the standard normal CDF = 0.5 erfc(-x/sqrt 2)
  static VLM_INLINE float cdf(float x) {
    float ec = ferfc_pos(std::fabs(x) * 0.70710678118654752f);
    return x >= 0.f ? 1.f - 0.5f * ec : 0.5f * ec;
  }
};
template <> struct M<double> {
  static double exp(double x) { return std::exp(x); }
  static double log(double x) { return std::log(x); }
  static double tanh(double x) { return std::tanh(x); }
  static double cdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752440); }
};

// Stable for large |x|: exp only ever sees -|x|.
template <typename T>
VLM_INLINE T sigmoid(T x) {
  T e = M<T>::exp(-std::fabs(x));
  T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : e * s;
}

constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1/sqrt(2 pi)
constexpr double kGeluC = 0.044715;
constexpr double kQuick = 1.702;

// ---- unary forward / backward ------------------------------------------------------

// Runs y[i] = f(x[i]) over x's shape; the contiguous run is a plain loop.
template <typename T, typename F>
Tensor map1(const Tensor& x, F f) {
  Tensor out = Tensor::empty(x.shape, x.dtype, Device::CPU);
  StridedLayout<2> lay(x.shape, {&out.strides, &x.strides});
  T* o = out.data<T>();
  const T* a = x.data<T>();
  lay.parallel_runs([&](const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& in, int64_t n) {
    T* op = o + off[0];
    const T* ap = a + off[1];
    if (in[1] == 1) {
      for (int64_t i = 0; i < n; ++i) op[i] = f(ap[i]);
    } else {
      const int64_t s = in[1];
      for (int64_t i = 0; i < n; ++i) op[i] = f(ap[i * s]);
    }
  }, 16384);
  return out;
}

// map1 / map3 for float32 whose unit-stride runs go to a vector kernel
// vec(in..., out, n); strided runs use the scalar f.
template <typename F, typename V>
Tensor map1v(const Tensor& x, F f, V vec) {
  Tensor out = Tensor::empty(x.shape, x.dtype, Device::CPU);
  StridedLayout<2> lay(x.shape, {&out.strides, &x.strides});
  float* o = out.data<float>();
  const float* a = x.data<float>();
  lay.parallel_runs([&](const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& in, int64_t n) {
    if (in[1] == 1) return vec(a + off[1], o + off[0], n);
    for (int64_t i = 0; i < n; ++i) o[off[0] + i] = f(a[off[1] + i * in[1]]);
  }, 16384);
  return out;
}
template <typename F, typename V>
Tensor map3v(const Tensor& x, const Tensor& gy, F f, V vec) {
  Tensor out = Tensor::empty(x.shape, x.dtype, Device::CPU);
  StridedLayout<3> lay(x.shape, {&out.strides, &x.strides, &gy.strides});
  float* o = out.data<float>();
  const float* xa = x.data<float>();
  const float* ga = gy.data<float>();
  lay.parallel_runs([&](const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& in, int64_t n) {
    if (in[1] == 1 && in[2] == 1) return vec(xa + off[1], ga + off[2], o + off[0], n);
    for (int64_t i = 0; i < n; ++i) o[off[0] + i] = f(xa[off[1] + i * in[1]], ga[off[2] + i * in[2]]);
  }, 16384);
  return out;
}

// Sigmoid, SiLU and QuickGELU in float32 on AVX-512 CPUs (elementwise_avx512.h);
// an empty Tensor when op is not one of them or the CPU lacks AVX-512.
Tensor gate_forward_f32(UnaryOp op, const Tensor& x) {
  if (!cpu::gate_avx512_available()) return Tensor();
  auto run = [&](float a, bool times_x) {
    return map1v(x,
                 [a, times_x](float v) {
                   float s = sigmoid(a * v);
                   return !times_x ? s : s == 0.f ? -0.f : v * s;
                 },
                 [a, times_x](const float* in, float* out, int64_t n) { cpu::gate_forward_avx512(in, out, n, a, times_x); });
  };
  switch (op) {
    case UnaryOp::Sigmoid: return run(1.f, false);
    case UnaryOp::Silu: return run(1.f, true);
    case UnaryOp::QuickGelu: return run(static_cast<float>(kQuick), true);
    default: return Tensor();
  }
}
Tensor gate_backward_f32(UnaryOp op, const Tensor& x, const Tensor& gy) {
  if (!cpu::gate_avx512_available() || (op != UnaryOp::Silu && op != UnaryOp::QuickGelu)) return Tensor();
  const float a = op == UnaryOp::Silu ? 1.f : static_cast<float>(kQuick);
  return map3v(x, gy,
               [a](float xv, float g) {
                 float s = sigmoid(a * xv);
                 return g * std::fma(a * xv * s, 1.f - s, s);
               },
               [a](const float* in, const float* g, float* out, int64_t n) { cpu::gate_backward_avx512(in, g, out, n, a); });
}

template <typename T>
Tensor unary_typed(UnaryOp op, const Tensor& x) {
  using Mt = M<T>;
  if constexpr (std::is_same_v<T, float>) {
    Tensor y = gate_forward_f32(op, x);
    if (y.storage) return y;
  }
  switch (op) {
    case UnaryOp::Neg: return map1<T>(x, [](T v) { return -v; });
    case UnaryOp::Exp: return map1<T>(x, [](T v) { return Mt::exp(v); });
    case UnaryOp::Log: return map1<T>(x, [](T v) { return Mt::log(v); });
    case UnaryOp::Sqrt: return map1<T>(x, [](T v) { return std::sqrt(v); });
    case UnaryOp::Tanh: return map1<T>(x, [](T v) { return Mt::tanh(v); });
    case UnaryOp::Sigmoid: return map1<T>(x, [](T v) { return sigmoid(v); });
    // NaN stays NaN (v > 0 is false, so the select returns v).
    case UnaryOp::Relu: return map1<T>(x, [](T v) { return v < T(0) ? T(0) : v; });
    case UnaryOp::Gelu:
      return map1<T>(x, [](T v) {
        T c = Mt::cdf(v);
        return c == T(0) ? T(-0.0) : v * c;  // -inf gives -0, not -inf * 0
      });
    case UnaryOp::GeluTanh:
      // 0.5 x (1 + tanh u) = x sigmoid(2u): no cancellation in the left tail
      return map1<T>(x, [](T v) {
        T u2 = T(2 * kSqrt2OverPi) * (v + T(kGeluC) * v * v * v);
        T s = sigmoid(u2);
        return s == T(0) ? T(-0.0) : v * s;
      });
    case UnaryOp::QuickGelu:
      return map1<T>(x, [](T v) {
        T s = sigmoid(T(kQuick) * v);
        return s == T(0) ? T(-0.0) : v * s;
      });
    case UnaryOp::Silu:
      return map1<T>(x, [](T v) {
        T s = sigmoid(v);
        return s == T(0) ? T(-0.0) : v * s;
      });
    case UnaryOp::Abs: return map1<T>(x, [](T v) { return std::fabs(v); });
  }
  return Tensor();
}

// dx[i] = f(x[i], y[i], gy[i]) over x's shape.
template <typename T, typename F>
Tensor map3(const Tensor& x, const Tensor& y, const Tensor& gy, F f) {
  Tensor out = Tensor::empty(x.shape, x.dtype, Device::CPU);
  StridedLayout<4> lay(x.shape, {&out.strides, &x.strides, &y.strides, &gy.strides});
  T* o = out.data<T>();
  const T* xa = x.data<T>();
  const T* ya = y.data<T>();
  const T* ga = gy.data<T>();
  lay.parallel_runs([&](const std::array<int64_t, 4>& off, const std::array<int64_t, 4>& in, int64_t n) {
    T* op = o + off[0];
    const T* xp = xa + off[1];
    const T* yp = ya + off[2];
    const T* gp = ga + off[3];
    if (in[1] == 1 && in[2] == 1 && in[3] == 1) {
      for (int64_t i = 0; i < n; ++i) op[i] = f(xp[i], yp[i], gp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) op[i] = f(xp[i * in[1]], yp[i * in[2]], gp[i * in[3]]);
    }
  }, 16384);
  return out;
}

template <typename T>
Tensor unary_backward_typed(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy) {
  using Mt = M<T>;
  if constexpr (std::is_same_v<T, float>) {
    Tensor dx = gate_backward_f32(op, x, gy);
    if (dx.storage) return dx;
  }
  switch (op) {
    case UnaryOp::Neg: return map3<T>(x, y, gy, [](T, T, T g) { return -g; });
    case UnaryOp::Exp: return map3<T>(x, y, gy, [](T, T yv, T g) { return g * yv; });
    case UnaryOp::Log: return map3<T>(x, y, gy, [](T xv, T, T g) { return g / xv; });
    case UnaryOp::Sqrt: return map3<T>(x, y, gy, [](T, T yv, T g) { return g * T(0.5) / yv; });
    case UnaryOp::Tanh: return map3<T>(x, y, gy, [](T, T yv, T g) { return g * (T(1) - yv * yv); });
    case UnaryOp::Sigmoid: return map3<T>(x, y, gy, [](T, T yv, T g) { return g * yv * (T(1) - yv); });
    case UnaryOp::Relu: return map3<T>(x, y, gy, [](T xv, T, T g) { return xv > T(0) ? g : T(0); });
    case UnaryOp::Gelu:
      // d/dx x Phi(x) = Phi(x) + x phi(x)
      return map3<T>(x, y, gy, [](T xv, T, T g) {
        T pdf = T(kInvSqrt2Pi) * Mt::exp(T(-0.5) * xv * xv);
        return g * (Mt::cdf(xv) + xv * pdf);
      });
    case UnaryOp::GeluTanh:
      // y = x s(2u): dy/dx = s + x s (1 - s) 2u'
      return map3<T>(x, y, gy, [](T xv, T, T g) {
        T u2 = T(2 * kSqrt2OverPi) * (xv + T(kGeluC) * xv * xv * xv);
        T du2 = T(2 * kSqrt2OverPi) * (T(1) + T(3 * kGeluC) * xv * xv);
        T s = sigmoid(u2);
        return g * (s + xv * s * (T(1) - s) * du2);
      });
    case UnaryOp::QuickGelu:
      return map3<T>(x, y, gy, [](T xv, T, T g) {
        T s = sigmoid(T(kQuick) * xv);
        return g * (s + T(kQuick) * xv * s * (T(1) - s));
      });
    case UnaryOp::Silu:
      return map3<T>(x, y, gy, [](T xv, T, T g) {
        T s = sigmoid(xv);
        return g * (s * (T(1) + xv * (T(1) - s)));
      });
    case UnaryOp::Abs:
      return map3<T>(x, y, gy, [](T xv, T, T g) { return xv > T(0) ? g : (xv < T(0) ? -g : T(0)); });
  }
  return Tensor();
}

// ---- binary ------------------------------------------------------------------------

template <typename T, typename F>
Tensor map2(const Tensor& a, const Tensor& b, F f) {
  Shape shape;
  broadcast_shapes(a.shape, b.shape, shape);
  Tensor out = Tensor::empty(shape, a.dtype, Device::CPU);
  Tensor av = broadcast_view(a, shape), bv = broadcast_view(b, shape);
  StridedLayout<3> lay(shape, {&out.strides, &av.strides, &bv.strides});
  T* o = out.data<T>();
  const T* pa = av.data<T>();
  const T* pb = bv.data<T>();
  lay.parallel_runs([&](const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& in, int64_t n) {
    T* op = o + off[0];
    const T* ap = pa + off[1];
    const T* bp = pb + off[2];
    if (in[1] == 1 && in[2] == 1) {
      for (int64_t i = 0; i < n; ++i) op[i] = f(ap[i], bp[i]);
    } else if (in[1] == 1 && in[2] == 0) {  // b broadcast along the run (x * scale, x + bias)
      const T bs = bp[0];
      for (int64_t i = 0; i < n; ++i) op[i] = f(ap[i], bs);
    } else if (in[1] == 0 && in[2] == 1) {
      const T as = ap[0];
      for (int64_t i = 0; i < n; ++i) op[i] = f(as, bp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) op[i] = f(ap[i * in[1]], bp[i * in[2]]);
    }
  });
  return out;
}

template <typename T>
Tensor binary_typed(BinaryOp op, const Tensor& a, const Tensor& b) {
  switch (op) {
    case BinaryOp::Add: return map2<T>(a, b, [](T u, T v) { return u + v; });
    case BinaryOp::Sub: return map2<T>(a, b, [](T u, T v) { return u - v; });
    case BinaryOp::Mul: return map2<T>(a, b, [](T u, T v) { return u * v; });
    case BinaryOp::Div: return map2<T>(a, b, [](T u, T v) { return u / v; });
    case BinaryOp::Pow: return map2<T>(a, b, [](T u, T v) { return std::pow(u, v); });
    // NaN in either operand gives NaN (like torch.maximum / minimum).
    case BinaryOp::Maximum: return map2<T>(a, b, [](T u, T v) { return (u > v || u != u) ? u : v; });
    case BinaryOp::Minimum: return map2<T>(a, b, [](T u, T v) { return (u < v || u != u) ? u : v; });
  }
  return Tensor();
}

template <typename T>
Tensor pow_scalar_typed(const Tensor& x, double p) {
  if (p == 0) return map1<T>(x, [](T) { return T(1); });
  if (p == 1) return map1<T>(x, [](T v) { return v; });
  if (p == 2) return map1<T>(x, [](T v) { return v * v; });
  if (p == 3) return map1<T>(x, [](T v) { return v * v * v; });
  if (p == 0.5) return map1<T>(x, [](T v) { return std::sqrt(v); });
  if (p == -0.5) return map1<T>(x, [](T v) { return T(1) / std::sqrt(v); });
  if (p == -1) return map1<T>(x, [](T v) { return T(1) / v; });
  const T pt = static_cast<T>(p);
  return map1<T>(x, [pt](T v) { return std::pow(v, pt); });
}

template <typename T>
Tensor pow_scalar_backward_typed(const Tensor& x, double p, const Tensor& gy) {
  const T pt = static_cast<T>(p);
  if (p == 0) return map3<T>(x, x, gy, [](T, T, T) { return T(0); });
  if (p == 1) return map3<T>(x, x, gy, [](T, T, T g) { return g; });
  if (p == 2) return map3<T>(x, x, gy, [](T v, T, T g) { return T(2) * v * g; });
  if (p == 3) return map3<T>(x, x, gy, [](T v, T, T g) { return T(3) * v * v * g; });
  if (p == 0.5) return map3<T>(x, x, gy, [](T v, T, T g) { return g * T(0.5) / std::sqrt(v); });
  const T pm1 = static_cast<T>(p - 1);
  return map3<T>(x, x, gy, [pt, pm1](T v, T, T g) { return g * pt * std::pow(v, pm1); });
}

}  // namespace

namespace cpu {

Tensor unary(UnaryOp op, const Tensor& x) {
  Tensor out;
  dispatch_float(x.dtype, [&](auto zero) { out = unary_typed<decltype(zero)>(op, x); });
  return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy) {
  Tensor out;
  dispatch_float(x.dtype, [&](auto zero) { out = unary_backward_typed<decltype(zero)>(op, x, y, gy); });
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out;
  dispatch_float(a.dtype, [&](auto zero) { out = binary_typed<decltype(zero)>(op, a, b); });
  return out;
}

Tensor affine(const Tensor& x, double alpha, double beta) {
  Tensor out;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
    out = map1<T>(x, [al, be](T v) { return al * v + be; });
  });
  return out;
}

Tensor pow_scalar(const Tensor& x, double p) {
  Tensor out;
  dispatch_float(x.dtype, [&](auto zero) { out = pow_scalar_typed<decltype(zero)>(x, p); });
  return out;
}

Tensor pow_scalar_backward(const Tensor& x, double p, const Tensor& gy) {
  Tensor out;
  dispatch_float(x.dtype, [&](auto zero) { out = pow_scalar_backward_typed<decltype(zero)>(x, p, gy); });
  return out;
}

void axpy(Tensor& dst, const Tensor& src, double alpha) {
  dispatch_float(dst.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T al = static_cast<T>(alpha);
    StridedLayout<2> lay(dst.shape, {&dst.strides, &src.strides});
    T* d = dst.data<T>();
    const T* s = src.data<T>();
    lay.parallel_runs([&](const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& in, int64_t n) {
      T* dp = d + off[0];
      const T* sp = s + off[1];
      if (in[0] == 1 && in[1] == 1) {
        for (int64_t i = 0; i < n; ++i) dp[i] += al * sp[i];
      } else {
        for (int64_t i = 0; i < n; ++i) dp[i * in[0]] += al * sp[i * in[1]];
      }
    });
  });
}

void scale_inplace(Tensor& x, double s) {
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T sc = static_cast<T>(s);
    T* p = x.data<T>();
    parallel_for(x.numel(), 32768, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] *= sc;
    });
  });
}

}  // namespace cpu
}  // namespace vlm
