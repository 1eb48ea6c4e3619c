// Each binding file registers its functions with VLM_EXPORT; addon.cc puts them on
// the module object. Every call runs behind one guard that turns vlm::Error and
// std::exception into a JS TypeError / RangeError / Error, so nothing escapes as a crash.
#pragma once
#include <napi.h>
#include <vector>

namespace vlm::js {

using NativeFn = Napi::Value (*)(const Napi::CallbackInfo&);

struct Export {
  const char* name;
  NativeFn fn;
};
std::vector<Export>& exports();

struct Registrar {
  Registrar(const char* name, NativeFn fn) { exports().push_back({name, fn}); }
};

}  // namespace vlm::js

#define VLM_EXPORT(jsname, fn) static ::vlm::js::Registrar vlm_registrar_##fn(jsname, fn)
