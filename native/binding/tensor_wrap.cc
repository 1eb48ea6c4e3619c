#include "binding/tensor_wrap.h"
#include "binding/args.h"

namespace vlm::js {
namespace {
// V8 is told how much host memory the tensor allocator holds (host_held_bytes: in use
// or cached), so that garbage handles holding large storages get finalized before the
// machine runs out. Not each tensor's bytes: V8 starts a major GC whenever external
// memory rises ~64 MiB above its level at the last one, and a training step that
// allocates and disposes 500 MB of activations through the cache then ran a
// mark-compact every ~35 ms whose marker thread took a core from the GEMMs (CLIP
// step 510 -> 432 ms without them). Cache hits hold no new memory, so a loop that
// disposes its tensors reports nothing; one that leaks allocates afresh and is
// reported, and its garbage, once finalized, is freed to the OS (~JsTensor), so the
// held bytes fall again. Changes under 1 MiB wait for the next sync.
constexpr int64_t kReportStep = int64_t{1} << 20;

void sync_external_memory(napi_env env, AddonData* data) {
  const int64_t now = host_held_bytes();
  const int64_t delta = now - data->reported;
  if (delta >= kReportStep || delta <= -kReportStep) {
    Napi::MemoryManagement::AdjustExternalMemory(Napi::Env(env), delta);
    data->reported = now;
  }
}

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
                      InstanceAccessor<&JsTensor::get_contiguous>("contiguous"),
                      InstanceAccessor<&JsTensor::get_sole_owner>("soleOwner")});
}

JsTensor::JsTensor(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<JsTensor>(info), env_(info.Env()), data_(info.Env().GetInstanceData<AddonData>()) {
  if (!data_ || !data_->pending) {
    throw Napi::TypeError::New(info.Env(), "NativeTensor: handles are made by vlmkit functions, not by new");
  }
  t_ = std::move(data_->pending);
  data_->pending.reset();
  data_->live.insert(this);
  sync_external_memory(env_, data_);
}

JsTensor::~JsTensor() {
  if (data_) data_->live.erase(this);
  // Finalized without dispose(): its storage returns to the OS, not the cache, so
  // host_held_bytes falls and V8's external-memory baseline does not creep upward.
  HostCacheBypass bypass;
  t_.reset();
}

void JsTensor::release() {
  t_.reset();
  if (data_) sync_external_memory(env_, data_);
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

// True when this handle is the only reference to its storage and covers all of it,
// contiguously: the tensor can be taken over (autograd stores such a gradient in a
// leaf's .grad without copying it).
Napi::Value JsTensor::get_sole_owner(const Napi::CallbackInfo& info) {
  VLM_LIVE(info);
  const Tensor& t = *t_;
  const bool sole = t.storage.use_count() == 1 && t.offset == 0 && t.is_contiguous() &&
                    static_cast<size_t>(t.numel()) * dtype_size(t.dtype) == t.storage->nbytes;
  return Napi::Boolean::New(info.Env(), sole);
}

Napi::Value wrap(Napi::Env env, Tensor t) {
  AddonData* data = env.GetInstanceData<AddonData>();
  data->pending = std::move(t);
  return data->tensor_ctor.New({});
}

}  // namespace vlm::js
