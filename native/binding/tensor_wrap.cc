#include "binding/tensor_wrap.h"
#include "binding/args.h"

namespace vlm::js {
namespace {
// Below this, a storage is too small to matter to V8's GC heuristics; skipping the
// report keeps tiny ops cheap.
constexpr int64_t kReportBytes = 64 * 1024;

Napi::Array to_array(Napi::Env env, const Shape& s) {
  Napi::Array a = Napi::Array::New(env, s.size());
  for (size_t i = 0; i < s.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(s[i])));
  return a;
}
}  // namespace

Napi::Function JsTensor::define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {InstanceMethod<&JsTensor::dispose>("dispose"),
                      InstanceAccessor<&JsTensor::get_disposed>("disposed"),
                      InstanceAccessor<&JsTensor::get_shape>("shape"),
                      InstanceAccessor<&JsTensor::get_strides>("strides"),
                      InstanceAccessor<&JsTensor::get_offset>("offset"),
                      InstanceAccessor<&JsTensor::get_dtype>("dtype"),
                      InstanceAccessor<&JsTensor::get_device>("device"),
                      InstanceAccessor<&JsTensor::get_storage_bytes>("storageBytes"),
                      InstanceAccessor<&JsTensor::get_contiguous>("contiguous")});
}

JsTensor::JsTensor(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<JsTensor>(info), env_(info.Env()), data_(info.Env().GetInstanceData<AddonData>()) {
  if (!data_ || !data_->pending) {
    throw Napi::TypeError::New(info.Env(), "NativeTensor: handles are made by vlmkit functions, not by new");
  }
  t_ = std::move(data_->pending);
  data_->pending.reset();
  data_->live.insert(this);
  // The first handle onto a fresh storage tells V8 how much memory it holds, so
  // the garbage collector runs finalizers before the machine runs out.
  if (t_->storage.use_count() == 1 && t_->device() == Device::CPU &&
      static_cast<int64_t>(t_->storage->nbytes) >= kReportBytes) {
    reported_ = static_cast<int64_t>(t_->storage->nbytes);
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), reported_);
  }
}

JsTensor::~JsTensor() {
  if (data_) data_->live.erase(this);
  t_.reset();
}

void JsTensor::release() {
  t_.reset();
  if (reported_) {
    Napi::MemoryManagement::AdjustExternalMemory(Napi::Env(env_), -reported_);
    reported_ = 0;
  }
}

JsTensor* JsTensor::unwrap_or_null(const Napi::Value& v) {
  if (!v.IsObject()) return nullptr;
  void* p = nullptr;
  if (napi_unwrap(v.Env(), v, &p) != napi_ok || !p) return nullptr;
  AddonData* data = v.Env().GetInstanceData<AddonData>();
  auto* t = static_cast<JsTensor*>(p);
  return data && data->live.count(t) ? t : nullptr;
}

Napi::Value JsTensor::dispose(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

Napi::Value JsTensor::get_disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed()); }

#define VLM_LIVE(info)                                                                          \
  if (disposed()) throw Napi::TypeError::New((info).Env(), "Tensor: this tensor has been disposed");

Napi::Value JsTensor::get_shape(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  return to_array(info.Env(), t_->shape);
}
Napi::Value JsTensor::get_strides(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  return to_array(info.Env(), t_->strides);
}
Napi::Value JsTensor::get_offset(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  return Napi::Number::New(info.Env(), static_cast<double>(t_->offset));
}
Napi::Value JsTensor::get_dtype(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  return Napi::String::New(info.Env(), dtype_name(t_->dtype));
}
Napi::Value JsTensor::get_device(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  return Napi::String::New(info.Env(), device_name(t_->device()));
}
Napi::Value JsTensor::get_storage_bytes(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  return Napi::Number::New(info.Env(), static_cast<double>(t_->storage->nbytes));
}
Napi::Value JsTensor::get_contiguous(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  return Napi::Boolean::New(info.Env(), t_->is_contiguous());
}

Napi::Value wrap(Napi::Env env, Tensor t) {
  AddonData* data = env.GetInstanceData<AddonData>();
  data->pending = std::move(t);
  return data->tensor_ctor.New({});
}

}  // namespace vlm::js
