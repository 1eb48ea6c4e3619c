// Module entry: the tensor class and every VLM_EXPORT-ed function, each behind the
// error guard.
#include <napi.h>
#include <new>
#include "binding/registry.h"
#include "binding/tensor_wrap.h"
#include "core/error.h"

namespace vlm::js {

std::vector<Export>& exports() {
  static std::vector<Export> all;
  return all;
}

namespace {

Napi::Value guarded(const Napi::CallbackInfo& info) {
  auto fn = reinterpret_cast<NativeFn>(info.Data());
  Napi::Env env = info.Env();
  try {
    return fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const vlm::Error& e) {
    switch (e.kind) {
      case ErrorKind::Type: throw Napi::TypeError::New(env, e.what());
      case ErrorKind::Range: throw Napi::RangeError::New(env, e.what());
      default: throw Napi::Error::New(env, e.what());
    }
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, "vlmkit: out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("vlmkit: ") + e.what());
  }
}

}  // namespace

Napi::Object init(Napi::Env env, Napi::Object module) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function ctor = JsTensor::define(env);
  data->tensor_ctor = Napi::Persistent(ctor);
  module.Set("NativeTensor", ctor);
  for (const Export& e : exports()) {
    module.Set(e.name, Napi::Function::New(env, guarded, e.name, reinterpret_cast<void*>(e.fn)));
  }
  return module;
}

}  // namespace vlm::js

static Napi::Object vlmkit_init(Napi::Env env, Napi::Object exports) { return vlm::js::init(env, exports); }
NODE_API_MODULE(vlmkit, vlmkit_init)
