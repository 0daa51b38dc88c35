// Reduced-precision matrix products on float32 tensors, for lib/precision.ts (--bf16, --fp16):
//
//   mixedMatMul(a, b, bias, transposeA, transposeB, dtype, cache) -> float32 tensor info
//
// casts both operands to bfloat16 or float16 (dtype: TF_BFLOAT16 or TF_HALF), multiplies them (MatMul for
// rank 2, BatchMatMulV2 above; oneDNN's bf16 kernels on CPUs with AVX512_BF16 or AMX, cuBLAS on GPUs, both
// accumulating in float32), casts the result back and adds the optional float32 bias [n] (id -1: none):
// no reduced-precision tensor ever reaches JavaScript. `cache` keeps an operand's cast, keyed by its tensor
// id, until that tensor is deleted (bit 1: a, bit 2: b), so a weight is cast once however many products
// of a step read it. mixedCacheSize() counts the casts kept.
#include <node_api.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "tensorflow/c/eager/c_api.h"
#include "tevatron.h"
#include "tf_auto_status.h"
#include "tfe_auto_op.h"
#include "utils.h"

namespace {

using tfnodejs::TF_AutoStatus;
using tfnodejs::TFE_AutoOp;
using tfnodejs::EnsureNapiOK;
using tfnodejs::EnsureTFOK;
using tfnodejs::NapiThrowError;
using tfnodejs::TFJSBackend;

struct HandleDeleter {
  void operator()(TFE_TensorHandle *h) const {
    if (h) TFE_DeleteTensorHandle(h);
  }
};
using OwnedHandle = std::unique_ptr<TFE_TensorHandle, HandleDeleter>;

// The casts kept for each backend (one per Node.js environment), by the source tensor's id.
std::mutex cache_mutex;
std::unordered_map<TFJSBackend *, std::unordered_map<int32_t, TFE_TensorHandle *>> caches;

void OnTensorDeleted(TFJSBackend *backend, int32_t tensor_id) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto cache = caches.find(backend);
  if (cache == caches.end()) return;
  auto entry = cache->second.find(tensor_id);
  if (entry == cache->second.end()) return;
  TFE_DeleteTensorHandle(entry->second);
  cache->second.erase(entry);
}

void OnBackendDestroyed(TFJSBackend *backend) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto cache = caches.find(backend);
  if (cache == caches.end()) return;
  for (auto &entry : cache->second) TFE_DeleteTensorHandle(entry.second);
  caches.erase(cache);
}

TEVATRON_LISTEN(OnTensorDeleted, OnBackendDestroyed);

// Runs an op with one output; nullptr (and `status` set) on failure.
TFE_TensorHandle *Execute(TFE_Op *op, TF_Status *status) {
  TFE_TensorHandle *out = nullptr;
  int n = 1;
  TFE_Execute(op, &out, &n, status);
  return TF_GetCode(status) == TF_OK ? out : nullptr;
}

TFE_TensorHandle *Cast(TFE_Context *ctx, TFE_TensorHandle *x, TF_DataType to, TF_Status *status) {
  TFE_AutoOp op(TFE_NewOp(ctx, "Cast", status));
  if (TF_GetCode(status) != TF_OK) return nullptr;
  TFE_OpAddInput(op.op, x, status);
  if (TF_GetCode(status) != TF_OK) return nullptr;
  TFE_OpSetAttrType(op.op, "SrcT", TFE_TensorHandleDataType(x));
  TFE_OpSetAttrType(op.op, "DstT", to);
  TFE_OpSetAttrBool(op.op, "Truncate", 0);
  return Execute(op.op, status);
}

// Tensor `id` in `dtype`: the kept cast when `keep` (made and kept on first use), else a fresh one
// owned by `scratch`. nullptr with a JavaScript error pending on failure.
TFE_TensorHandle *Reduced(napi_env env, TFJSBackend *backend, int32_t id, TF_DataType dtype, bool keep,
                          OwnedHandle &scratch) {
  if (keep) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto &cache = caches[backend];
    auto entry = cache.find(id);
    if (entry != cache.end() && TFE_TensorHandleDataType(entry->second) == dtype) return entry->second;
  }
  TFE_TensorHandle *source = backend->Handle(id);
  if (source == nullptr) {
    NAPI_THROW_ERROR(env, "mixedMatMul: no tensor with id %d", id);
    return nullptr;
  }
  if (TFE_TensorHandleDataType(source) != TF_FLOAT) {
    NAPI_THROW_ERROR(env, "mixedMatMul: tensor %d is not float32", id);
    return nullptr;
  }
  TF_AutoStatus status;
  TFE_TensorHandle *cast = Cast(backend->Context(), source, dtype, status.status);
  ENSURE_TF_OK_RETVAL(env, status, nullptr);
  if (!keep) {
    scratch.reset(cast);
    return cast;
  }
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto &slot = caches[backend][id];
  if (slot != nullptr) TFE_DeleteTensorHandle(slot);  // kept in the other reduced type
  slot = cast;
  return cast;
}

TFE_TensorHandle *Product(TFE_Context *ctx, TFE_TensorHandle *a, TFE_TensorHandle *b, bool transpose_a,
                          bool transpose_b, TF_DataType dtype, TF_Status *status) {
  int rank = TFE_TensorHandleNumDims(a, status);
  if (TF_GetCode(status) != TF_OK) return nullptr;
  TFE_AutoOp op(TFE_NewOp(ctx, rank == 2 ? "MatMul" : "BatchMatMulV2", status));
  if (TF_GetCode(status) != TF_OK) return nullptr;
  TFE_OpAddInput(op.op, a, status);
  if (TF_GetCode(status) == TF_OK) TFE_OpAddInput(op.op, b, status);
  if (TF_GetCode(status) != TF_OK) return nullptr;
  TFE_OpSetAttrType(op.op, "T", dtype);
  TFE_OpSetAttrBool(op.op, rank == 2 ? "transpose_a" : "adj_x", transpose_a);
  TFE_OpSetAttrBool(op.op, rank == 2 ? "transpose_b" : "adj_y", transpose_b);
  return Execute(op.op, status);
}

TFE_TensorHandle *BiasAdd(TFE_Context *ctx, TFE_TensorHandle *x, TFE_TensorHandle *bias, TF_Status *status) {
  TFE_AutoOp op(TFE_NewOp(ctx, "BiasAdd", status));
  if (TF_GetCode(status) != TF_OK) return nullptr;
  TFE_OpAddInput(op.op, x, status);
  if (TF_GetCode(status) == TF_OK) TFE_OpAddInput(op.op, bias, status);
  if (TF_GetCode(status) != TF_OK) return nullptr;
  TFE_OpSetAttrType(op.op, "T", TF_FLOAT);
  return Execute(op.op, status);
}

napi_value MixedMatMul(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value args[7];
  ENSURE_NAPI_OK_RETVAL(env, napi_get_cb_info(env, info, &argc, args, nullptr, nullptr), nullptr);
  if (argc < 7) {
    NAPI_THROW_ERROR(env, "mixedMatMul(a, b, bias, transposeA, transposeB, dtype, cache): expected 7 arguments, got %zu", argc);
    return nullptr;
  }
  int32_t a_id, b_id, dtype_value, cache, bias_id;
  bool transpose_a, transpose_b;
  if (napi_get_value_int32(env, args[0], &a_id) != napi_ok || napi_get_value_int32(env, args[1], &b_id) != napi_ok ||
      napi_get_value_int32(env, args[2], &bias_id) != napi_ok ||
      napi_get_value_bool(env, args[3], &transpose_a) != napi_ok ||
      napi_get_value_bool(env, args[4], &transpose_b) != napi_ok ||
      napi_get_value_int32(env, args[5], &dtype_value) != napi_ok || napi_get_value_int32(env, args[6], &cache) != napi_ok) {
    NAPI_THROW_ERROR(env, "mixedMatMul(a, b, bias, transposeA, transposeB, dtype, cache): ids, booleans and numbers expected");
    return nullptr;
  }
  const TF_DataType dtype = static_cast<TF_DataType>(dtype_value);
  if (dtype != TF_BFLOAT16 && dtype != TF_HALF) {
    NAPI_THROW_ERROR(env, "mixedMatMul: dtype %d is neither TF_BFLOAT16 nor TF_HALF", dtype_value);
    return nullptr;
  }
  TFJSBackend *backend = tevatron::Backend(env);
  if (backend == nullptr) {
    NAPI_THROW_ERROR(env, "mixedMatMul: the binding has no backend");
    return nullptr;
  }
  TFE_TensorHandle *bias = nullptr;
  if (bias_id >= 0 && (bias = backend->Handle(bias_id)) == nullptr) {
    NAPI_THROW_ERROR(env, "mixedMatMul: no tensor with id %d", bias_id);
    return nullptr;
  }
  OwnedHandle a_scratch, b_scratch;
  TFE_TensorHandle *a = Reduced(env, backend, a_id, dtype, cache & 1, a_scratch);
  if (a == nullptr) return nullptr;
  TFE_TensorHandle *b = Reduced(env, backend, b_id, dtype, cache & 2, b_scratch);
  if (b == nullptr) return nullptr;
  TF_AutoStatus status;
  OwnedHandle product(Product(backend->Context(), a, b, transpose_a, transpose_b, dtype, status.status));
  ENSURE_TF_OK_RETVAL(env, status, nullptr);
  TFE_TensorHandle *out = Cast(backend->Context(), product.get(), TF_FLOAT, status.status);
  ENSURE_TF_OK_RETVAL(env, status, nullptr);
  if (bias) {
    // in float32: TensorFlow's reduced-precision fused bias (_FusedMatMul) runs in Eigen, 40x slower here
    OwnedHandle unbiased(out);
    out = BiasAdd(backend->Context(), unbiased.get(), bias, status.status);
    ENSURE_TF_OK_RETVAL(env, status, nullptr);
  }
  return backend->OutputTensorInfo(env, out);  // the backend owns `out` from here
}

napi_value MixedCacheSize(napi_env env, napi_callback_info info) {
  TFJSBackend *backend = tevatron::Backend(env);
  size_t n = 0;
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto cache = caches.find(backend);
    if (cache != caches.end()) n = cache->second.size();
  }
  napi_value out;
  ENSURE_NAPI_OK_RETVAL(env, napi_create_uint32(env, static_cast<uint32_t>(n), &out), nullptr);
  return out;
}

}  // namespace

TEVATRON_EXPORT(mixedMatMul, MixedMatMul);
TEVATRON_EXPORT(mixedCacheSize, MixedCacheSize);
