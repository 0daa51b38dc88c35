// TensorFlow's collective runtime for lib/dist/tensorflow.ts (the tensorflow process group):
//
//   (at context creation) TEVATRON_TF_SERVER_DEF, a hex-encoded tensorflow.ServerDef, makes the first
//       context of the process a collective worker (TFE_EnableCollectiveOps: its gRPC server starts and
//       its devices become /job:worker/replica:0/task:<i>/...) before any op runs.
//   collectiveServer() -> {requested, error}: whether this binding's context was made a worker, and why not.
//   collective(tensor, kind, groupSize, groupKey, instanceKey, divide, hint, timeoutSeconds, subdivs)
//       -> Promise<tensor info>: kind 0 CollectiveReduceV2 (sum; mean when `divide`), 1 CollectiveGatherV2,
//       2 CollectiveBcastSendV2, 3 CollectiveBcastRecvV2 (`tensor` gives the shape and device only).
//   collectivePeerHealth(task, timeoutMs) -> Promise<void>: rejects when the peer does not answer.
//   collectiveAbort(message): fails every pending and later collective with `message`.
//
// A collective blocks until every rank joins, so it runs on a thread of its own and settles a promise:
// the event loop stays free (a peer-health watchdog, several collectives in flight). Its input handle is
// shared, not borrowed, so that JavaScript may dispose the tensor while the collective runs. A rejection
// is an Error with `code`, TensorFlow's status code (e.g. 14 UNAVAILABLE, 4 DEADLINE_EXCEEDED).
#include <node_api.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensorflow/c/c_api_experimental.h"
#include "tensorflow/c/eager/c_api.h"
#include "tensorflow/c/eager/c_api_experimental.h"
#include "tevatron.h"
#include "tf_auto_status.h"
#include "utils.h"

namespace {

using tfnodejs::EnsureNapiOK;
using tfnodejs::NapiThrowError;
using tfnodejs::TF_AutoStatus;
using tfnodejs::TFJSBackend;

constexpr const char *kServerDefVar = "TEVATRON_TF_SERVER_DEF";

// The context that TEVATRON_TF_SERVER_DEF was applied to (one per process: the server owns its port).
std::atomic<bool> server_claimed{false};
TFE_Context *server_context = nullptr;
std::string server_error;

bool DecodeHex(const char *hex, std::string *out) {
  size_t n = std::strlen(hex);
  if (n % 2 != 0) return false;
  out->resize(n / 2);
  for (size_t i = 0; i < n / 2; i++) {
    int v = 0;
    for (int k = 0; k < 2; k++) {
      char c = hex[2 * i + k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return false;
      v = v * 16 + d;
    }
    (*out)[i] = static_cast<char>(v);
  }
  return true;
}

void OnContextCreated(TFE_Context *context) {
  const char *hex = std::getenv(kServerDefVar);
  if (context == nullptr || hex == nullptr || *hex == '\0' || server_claimed.exchange(true)) return;
  server_context = context;
  std::string proto;
  if (!DecodeHex(hex, &proto)) {
    server_error = std::string(kServerDefVar) + " is not a hex string";
    return;
  }
  TF_AutoStatus status;
  TFE_EnableCollectiveOps(context, proto.data(), proto.size(), status.status);
  if (TF_GetCode(status.status) != TF_OK) server_error = TF_Message(status.status);
}

TEVATRON_ON_CONTEXT(OnContextCreated);

struct HandleList {
  std::vector<TFE_TensorHandle *> handles;
  ~HandleList() {
    for (TFE_TensorHandle *h : handles) TFE_DeleteTensorHandle(h);
  }
  TFE_TensorHandle *Keep(TFE_TensorHandle *h) {
    if (h) handles.push_back(h);
    return h;
  }
};

TFE_TensorHandle *Int32Tensor(const std::vector<int32_t> &values, bool scalar, TF_Status *status) {
  int64_t dims[1] = {static_cast<int64_t>(values.size())};
  TF_Tensor *t = TF_AllocateTensor(TF_INT32, scalar ? nullptr : dims, scalar ? 0 : 1, values.size() * sizeof(int32_t));
  if (!values.empty()) std::memcpy(TF_TensorData(t), values.data(), values.size() * sizeof(int32_t));
  TFE_TensorHandle *h = TFE_NewTensorHandle(t, status);
  TF_DeleteTensor(t);
  return h;
}

// Work done on a thread of its own; its outcome settles the promise on the JavaScript thread.
struct AsyncCall {
  napi_deferred deferred = nullptr;
  napi_threadsafe_function tsfn = nullptr;
  TFJSBackend *backend = nullptr;
  std::function<void(AsyncCall *)> work;
  TF_Code code = TF_OK;
  std::string message;
  TFE_TensorHandle *out = nullptr;  // a result tensor, handed to the backend on settling
};

void Settle(napi_env env, napi_value /*js_callback*/, void * /*context*/, void *data) {
  AsyncCall *call = static_cast<AsyncCall *>(data);
  if (env != nullptr) {
    napi_value value = nullptr;
    if (call->code == TF_OK) {
      if (call->out) {
        value = call->backend->OutputTensorInfo(env, call->out);  // the backend owns `out` from here
        call->out = nullptr;
      } else {
        napi_get_undefined(env, &value);
      }
      if (value != nullptr) {
        napi_resolve_deferred(env, call->deferred, value);
      } else {
        napi_get_and_clear_last_exception(env, &value);
        napi_reject_deferred(env, call->deferred, value);
      }
    } else {
      napi_value message, code;
      napi_create_string_utf8(env, call->message.c_str(), NAPI_AUTO_LENGTH, &message);
      napi_create_error(env, nullptr, message, &value);
      napi_create_int32(env, call->code, &code);
      napi_set_named_property(env, value, "code", code);
      napi_reject_deferred(env, call->deferred, value);
    }
  }
  if (call->out) TFE_DeleteTensorHandle(call->out);
  delete call;
}

void *RunCall(void *arg) {
  AsyncCall *call = static_cast<AsyncCall *>(arg);
  call->work(call);
  napi_threadsafe_function tsfn = call->tsfn;
  napi_call_threadsafe_function(tsfn, call, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return nullptr;
}

// Starts `work` on a new thread; returns the promise it settles (nullptr with an error pending on failure).
napi_value RunAsync(napi_env env, TFJSBackend *backend, std::function<void(AsyncCall *)> work) {
  AsyncCall *call = new AsyncCall();
  call->backend = backend;
  call->work = std::move(work);
  napi_value promise, name;
  if (napi_create_promise(env, &call->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "tevatron collective", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr, Settle, &call->tsfn) != napi_ok) {
    delete call;
    NAPI_THROW_ERROR(env, "collective: could not start the call");
    return nullptr;
  }
  pthread_attr_t attr;
  pthread_t thread;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  const int failed = pthread_create(&thread, &attr, RunCall, call);
  pthread_attr_destroy(&attr);
  if (failed != 0) {  // no thread to be had: settle the promise here
    napi_release_threadsafe_function(call->tsfn, napi_tsfn_abort);
    call->code = TF_RESOURCE_EXHAUSTED;
    call->message = std::string("collective: could not start a thread: ") + std::strerror(failed);
    Settle(env, nullptr, nullptr, call);
  }
  return promise;
}

TFJSBackend *WorkerBackend(napi_env env, const char *what) {
  TFJSBackend *backend = tevatron::Backend(env);
  if (backend == nullptr) {
    NAPI_THROW_ERROR(env, "%s: the binding has no backend", what);
    return nullptr;
  }
  if (backend->Context() != server_context || !server_error.empty()) {
    NAPI_THROW_ERROR(env, "%s: this context runs no collective server (%s was not set when the binding loaded, or failed)", what, kServerDefVar);
    return nullptr;
  }
  return backend;
}

bool GetString(napi_env env, napi_value value, std::string *out) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) return false;
  out->resize(length + 1);
  if (napi_get_value_string_utf8(env, value, &(*out)[0], length + 1, &length) != napi_ok) return false;
  out->resize(length);
  return true;
}

napi_value CollectiveServer(napi_env env, napi_callback_info /*info*/) {
  TFJSBackend *backend = tevatron::Backend(env);
  const bool requested = backend != nullptr && backend->Context() == server_context;
  napi_value out, flag, error;
  ENSURE_NAPI_OK_RETVAL(env, napi_create_object(env, &out), nullptr);
  ENSURE_NAPI_OK_RETVAL(env, napi_get_boolean(env, requested, &flag), nullptr);
  if (requested && !server_error.empty()) {
    ENSURE_NAPI_OK_RETVAL(env, napi_create_string_utf8(env, server_error.c_str(), NAPI_AUTO_LENGTH, &error), nullptr);
  } else {
    ENSURE_NAPI_OK_RETVAL(env, napi_get_null(env, &error), nullptr);
  }
  ENSURE_NAPI_OK_RETVAL(env, napi_set_named_property(env, out, "requested", flag), nullptr);
  ENSURE_NAPI_OK_RETVAL(env, napi_set_named_property(env, out, "error", error), nullptr);
  return out;
}

enum Kind { kReduce = 0, kGather = 1, kBcastSend = 2, kBcastRecv = 3 };
const char *const kOpNames[] = {"CollectiveReduceV2", "CollectiveGatherV2", "CollectiveBcastSendV2", "CollectiveBcastRecvV2"};

napi_value Collective(napi_env env, napi_callback_info info) {
  const char *usage = "collective(tensor, kind, groupSize, groupKey, instanceKey, divide, hint, timeoutSeconds, subdivs)";
  size_t argc = 9;
  napi_value args[9];
  ENSURE_NAPI_OK_RETVAL(env, napi_get_cb_info(env, info, &argc, args, nullptr, nullptr), nullptr);
  int32_t kind, id, group_size, group_key, instance_key, subdivs;
  bool divide;
  double timeout_seconds;
  std::string hint;
  if (argc < 9 || napi_get_value_int32(env, args[0], &id) != napi_ok || napi_get_value_int32(env, args[1], &kind) != napi_ok ||
      napi_get_value_int32(env, args[2], &group_size) != napi_ok || napi_get_value_int32(env, args[3], &group_key) != napi_ok ||
      napi_get_value_int32(env, args[4], &instance_key) != napi_ok || napi_get_value_bool(env, args[5], &divide) != napi_ok ||
      !GetString(env, args[6], &hint) || napi_get_value_double(env, args[7], &timeout_seconds) != napi_ok ||
      napi_get_value_int32(env, args[8], &subdivs) != napi_ok || kind < kReduce || kind > kBcastRecv) {
    NAPI_THROW_ERROR(env, "%s: bad arguments", usage);
    return nullptr;
  }
  TFJSBackend *backend = WorkerBackend(env, "collective");
  if (backend == nullptr) return nullptr;
  TFE_TensorHandle *source = backend->Handle(id);
  if (source == nullptr) {
    NAPI_THROW_ERROR(env, "collective: no tensor with id %d", id);
    return nullptr;
  }
  TF_AutoStatus status;
  auto inputs = std::make_shared<HandleList>();
  TFE_Op *op = TFE_NewOp(backend->Context(), kOpNames[kind], status.status);
  ENSURE_TF_OK_RETVAL(env, status, nullptr);
  auto fail = [&](const char *what) {
    TFE_DeleteOp(op);
    NAPI_THROW_ERROR(env, "collective: %s: %s", what, TF_Message(status.status));
    return nullptr;
  };
  const TF_DataType dtype = TFE_TensorHandleDataType(source);
  // the op runs where its tensor lives: NCCL needs it on the GPU
  const char *device = TFE_TensorHandleDeviceName(source, status.status);
  if (TF_GetCode(status.status) != TF_OK) return fail("the tensor's device");
  TFE_OpSetDevice(op, device, status.status);
  if (TF_GetCode(status.status) != TF_OK) return fail("the op's device");
  if (kind != kBcastRecv) {
    TFE_OpAddInput(op, inputs->Keep(TFE_TensorHandleCopySharingTensor(source, status.status)), status.status);
    if (TF_GetCode(status.status) != TF_OK) return fail("the input");
  }
  for (int32_t v : {group_size, group_key, instance_key}) {
    TFE_OpAddInput(op, inputs->Keep(Int32Tensor({v}, true, status.status)), status.status);
    if (TF_GetCode(status.status) != TF_OK) return fail("the keys");
  }
  TFE_OpSetAttrType(op, "T", dtype);
  TFE_OpSetAttrString(op, "communication_hint", hint.data(), hint.size());
  TFE_OpSetAttrFloat(op, "timeout_seconds", static_cast<float>(timeout_seconds));
  if (kind == kReduce || kind == kGather) {
    TFE_OpSetAttrInt(op, "Nordering_token", 0);  // the empty ordering_token list
    TFE_OpSetAttrBool(op, "is_stateless", 0);
  }
  if (kind == kReduce) {
    TFE_OpSetAttrString(op, "merge_op", "Add", 3);
    TFE_OpSetAttrString(op, "final_op", divide ? "Div" : "Id", divide ? 3 : 2);
    TFE_OpSetAttrInt(op, "max_subdivs_per_device", subdivs);
  }
  if (kind == kBcastRecv) {
    const int rank = TFE_TensorHandleNumDims(source, status.status);
    std::vector<int32_t> shape;
    for (int i = 0; i < rank && TF_GetCode(status.status) == TF_OK; i++) {
      shape.push_back(static_cast<int32_t>(TFE_TensorHandleDim(source, i, status.status)));
    }
    if (TF_GetCode(status.status) != TF_OK) return fail("the shape");
    TFE_OpAddInput(op, inputs->Keep(Int32Tensor(shape, false, status.status)), status.status);
    if (TF_GetCode(status.status) != TF_OK) return fail("the shape");
    TFE_OpSetAttrType(op, "Tshape", TF_INT32);
  }
  return RunAsync(env, backend, [op, inputs](AsyncCall *call) {
    TF_AutoStatus s;
    int n = 1;
    TFE_Execute(op, &call->out, &n, s.status);
    TFE_DeleteOp(op);
    call->code = TF_GetCode(s.status);
    if (call->code != TF_OK) {
      call->message = TF_Message(s.status);
      call->out = nullptr;
    }
  });
}

napi_value CollectivePeerHealth(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  ENSURE_NAPI_OK_RETVAL(env, napi_get_cb_info(env, info, &argc, args, nullptr, nullptr), nullptr);
  std::string task;
  int64_t timeout_ms;
  if (argc < 2 || !GetString(env, args[0], &task) || napi_get_value_int64(env, args[1], &timeout_ms) != napi_ok) {
    NAPI_THROW_ERROR(env, "collectivePeerHealth(task, timeoutMs): a string and a number expected");
    return nullptr;
  }
  TFJSBackend *backend = WorkerBackend(env, "collectivePeerHealth");
  if (backend == nullptr) return nullptr;
  TFE_Context *context = backend->Context();
  return RunAsync(env, backend, [context, task, timeout_ms](AsyncCall *call) {
    TF_AutoStatus s;
    TFE_CollectiveOpsCheckPeerHealth(context, task.c_str(), timeout_ms, s.status);
    call->code = TF_GetCode(s.status);
    if (call->code != TF_OK) call->message = TF_Message(s.status);
  });
}

napi_value CollectiveAbort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  ENSURE_NAPI_OK_RETVAL(env, napi_get_cb_info(env, info, &argc, args, nullptr, nullptr), nullptr);
  std::string message;
  if (argc < 1 || !GetString(env, args[0], &message)) {
    NAPI_THROW_ERROR(env, "collectiveAbort(message): a string expected");
    return nullptr;
  }
  TFJSBackend *backend = WorkerBackend(env, "collectiveAbort");
  if (backend == nullptr) return nullptr;
  TF_AutoStatus status;
  TF_SetStatus(status.status, TF_ABORTED, message.c_str());  // the status every pending and later collective fails with
  TFE_AbortCollectiveOps(backend->Context(), status.status);
  return nullptr;
}

}  // namespace

TEVATRON_EXPORT(collectiveServer, CollectiveServer);
TEVATRON_EXPORT(collective, Collective);
TEVATRON_EXPORT(collectivePeerHealth, CollectivePeerHealth);
TEVATRON_EXPORT(collectiveAbort, CollectiveAbort);
