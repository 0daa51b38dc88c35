// tevatron-ts's extensions to tfjs-node's binding. scripts/setup-tensorflow.ts compiles every native/*.cc
// with the binding's own sources, after native/tfjs-node.patch has made the binding call the three
// functions below. An extension file defines N-API entry points and registers them by name; one that
// keeps TensorFlow handles keyed by tensor id also registers a listener, so they go when the tensor does:
//
//   static napi_value MixedMatMul(napi_env env, napi_callback_info info) { ... }
//   TEVATRON_EXPORT(mixedMatMul, MixedMatMul);   // binding.mixedMatMul(...) in JavaScript
//   TEVATRON_LISTEN(OnTensorDeleted, OnBackendDestroyed);
//
// A file that must act on TensorFlow's context before any op runs (and before the binding lists its devices)
// registers a hook: TEVATRON_ON_CONTEXT(OnContextCreated), called with each new context.
//
// The module also gets `tevatronExports`, the list of registered names, which setup:tensorflow checks
// against the TEVATRON_EXPORT lines of native/*.cc and lib/ checks before it uses an entry point.
#ifndef TEVATRON_H_
#define TEVATRON_H_

#include <node_api.h>

#include <utility>
#include <vector>

#include "tfjs_backend.h"

namespace tevatron {

using Entry = napi_value (*)(napi_env, napi_callback_info);

using ContextHook = void (*)(TFE_Context *context);

struct Listener {
  void (*tensor_deleted)(tfnodejs::TFJSBackend *backend, int32_t tensor_id);
  void (*backend_destroyed)(tfnodejs::TFJSBackend *backend);
};

// Filled by static initialisers before the module is loaded, read-only afterwards.
inline std::vector<std::pair<const char *, Entry>> &Entries() {
  static std::vector<std::pair<const char *, Entry>> entries;
  return entries;
}
inline std::vector<Listener> &Listeners() {
  static std::vector<Listener> listeners;
  return listeners;
}
inline std::vector<ContextHook> &ContextHooks() {
  static std::vector<ContextHook> hooks;
  return hooks;
}
inline bool Register(const char *name, Entry entry) {
  Entries().emplace_back(name, entry);
  return true;
}
inline bool Listen(Listener listener) {
  Listeners().push_back(listener);
  return true;
}

inline bool OnContext(ContextHook hook) {
  ContextHooks().push_back(hook);
  return true;
}

// The backend of this environment (tfjs_binding.cc stores it as the module's instance data).
inline tfnodejs::TFJSBackend *Backend(napi_env env) {
  void *data = nullptr;
  if (napi_get_instance_data(env, &data) != napi_ok) return nullptr;
  return static_cast<tfnodejs::TFJSBackend *>(data);
}

// ---- called by the patched binding

inline void ContextCreated(TFE_Context *context) {
  for (ContextHook hook : ContextHooks()) hook(context);
}

inline void TensorDeleted(tfnodejs::TFJSBackend *backend, int32_t tensor_id) {
  for (const Listener &l : Listeners())
    if (l.tensor_deleted) l.tensor_deleted(backend, tensor_id);
}

inline void BackendDestroyed(tfnodejs::TFJSBackend *backend) {
  for (const Listener &l : Listeners())
    if (l.backend_destroyed) l.backend_destroyed(backend);
}

inline void DefineExports(napi_env env, napi_value exports) {
  napi_value names;
  if (napi_create_array_with_length(env, Entries().size(), &names) != napi_ok) return;
  uint32_t i = 0;
  for (const auto &entry : Entries()) {
    napi_value fn, name;
    if (napi_create_function(env, entry.first, NAPI_AUTO_LENGTH, entry.second, nullptr, &fn) != napi_ok ||
        napi_set_named_property(env, exports, entry.first, fn) != napi_ok ||
        napi_create_string_utf8(env, entry.first, NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_set_element(env, names, i++, name) != napi_ok) {
      return;
    }
  }
  napi_set_named_property(env, exports, "tevatronExports", names);
}

}  // namespace tevatron

#define TEVATRON_EXPORT(name, fn) static const bool tevatron_export_##name = ::tevatron::Register(#name, fn)
#define TEVATRON_ON_CONTEXT(hook) static const bool tevatron_on_context_##hook = ::tevatron::OnContext(hook)
#define TEVATRON_LISTEN(on_tensor_deleted, on_backend_destroyed) \
  static const bool tevatron_listen_##on_tensor_deleted = ::tevatron::Listen({on_tensor_deleted, on_backend_destroyed})

#endif  // TEVATRON_H_
