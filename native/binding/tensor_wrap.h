// The JS handle of a native tensor. Every live handle is in its addon's registry, so a
// foreign object (even one wrapped by another addon) is refused; and disposable: after
// dispose() every use is a TypeError, never a dangling pointer.
#pragma once
#include <napi.h>
#include <optional>
#include <unordered_set>
#include "core/tensor.h"

namespace vlm::js {

struct AddonData;

class JsTensor : public Napi::ObjectWrap<JsTensor> {
 public:
  static Napi::Function define(Napi::Env env);
  // The JsTensor behind v, or nullptr when v is not a vlmkit tensor handle.
  static JsTensor* unwrap_or_null(const Napi::Value& v);

  explicit JsTensor(const Napi::CallbackInfo& info);
  ~JsTensor() override;

  bool disposed() const { return !t_.has_value(); }
  const Tensor& tensor() const { return *t_; }
  void release();

 private:
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value get_disposed(const Napi::CallbackInfo& info);
  Napi::Value get_shape(const Napi::CallbackInfo& info);
  Napi::Value get_strides(const Napi::CallbackInfo& info);
  Napi::Value get_offset(const Napi::CallbackInfo& info);
  Napi::Value get_dtype(const Napi::CallbackInfo& info);
  Napi::Value get_device(const Napi::CallbackInfo& info);
  Napi::Value get_storage_bytes(const Napi::CallbackInfo& info);
  Napi::Value get_contiguous(const Napi::CallbackInfo& info);
  Napi::Value get_sole_owner(const Napi::CallbackInfo& info);

  std::optional<Tensor> t_;
  napi_env env_;
  AddonData* data_;
};

struct AddonData {
  Napi::FunctionReference tensor_ctor;
  std::optional<Tensor> pending;  // handed from wrap() to the constructor
  // Live handles. A registry lookup is ~20x cheaper than napi type tags, which
  // dominated the cost of making a handle (measured: 3.5 -> ~2 us per tiny op).
  std::unordered_set<const JsTensor*> live;
  int64_t reported = 0;  // host bytes last reported to V8 as external memory
};

}  // namespace vlm::js
