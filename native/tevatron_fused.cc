// BERT's elementwise layers as one pass each over float32 tensors in host memory, for lib/native.ts:
//
//   geluExact(x) -> y = x·Φ(x)             geluExactGrad(x, dy) -> dx = dy·(Φ(x) + x·φ(x))
//   layerNorm(x, w, b, eps) -> [y, stats]  layerNormGrad(x, stats, w, dy) -> [dx, dw, db]
//   adamw(p, g, m, v, lr, beta1, beta2, eps, decay, bc1, bc2) -> [p', m', v']
//   dropout(x, key, rowOffset, threshold, scale) -> x ⊙ mask, the mask drawn on the fly
//
// TensorFlow has neither a GELU nor a layer-norm op: composed of its elementwise ops, GELU takes 5 passes
// over the FFN's largest activation forward and 7 backward, layer norm 9 and 11, and an AdamW update 12
// (over every parameter: 110M floats for BERT-base, half a second a step); dropout multiplied a mask
// made in JavaScript and copied in (and kept for the backward pass), which here is drawn by
// lib/random.ts's definition, element for element, as it is applied. Layer norm is PyTorch's
// (biased variance, eps inside the square root) over the last axis; stats holds each row's mean and
// 1/σ, so the backward pass recomputes x̂ instead of keeping it. erf and exp are branch-free float32
// approximations (erf: the rational approximation Eigen uses, a few ulp; exp: Cody-Waite reduction and a
// degree-6 polynomial); the loops are compiled for AVX-512, AVX2 and plain x86-64 and the CPU picks (the
// binding is built with -fno-math-errno, without which sqrt keeps the AdamW loop from vectorizing), and
// they run over the cores in slices.
#include <node_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "tensorflow/c/eager/c_api.h"
#include "tevatron.h"
#include "tf_auto_status.h"
#include "utils.h"

namespace {

using tfnodejs::EnsureNapiOK;
using tfnodejs::EnsureTFOK;
using tfnodejs::NapiThrowError;
using tfnodejs::TF_AutoStatus;
using tfnodejs::TFJSBackend;

inline float Erf(float x) {
  x = x < -4.f ? -4.f : (x > 4.f ? 4.f : x);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return x * p / q;
}

// e^t for t <= 0 (t >= -87.3: below, e^t is 0 in float32 anyway)
inline float ExpNonPositive(float t) {
  t = t < -87.3f ? -87.3f : t;
  const float k = std::nearbyint(t * 1.44269504088896341f);
  const float r = (t - k * 0.693359375f) + k * 2.12194440e-4f;  // t - k·ln2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * r) * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

__attribute__((target_clones("avx512f", "avx2", "default"))) void GeluRange(const float *__restrict x, float *__restrict y,
                                                                            int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.f + Erf(x[i] * kSqrtHalf));
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void GeluGradRange(const float *__restrict x,
                                                                                const float *__restrict dy,
                                                                                float *__restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    const float cdf = 0.5f * (1.f + Erf(v * kSqrtHalf));
    dx[i] = dy[i] * (cdf + v * kInvSqrt2Pi * ExpNonPositive(-0.5f * v * v));
  }
}

// Σ x[i] in 16 independent lanes (vectorized without reassociating a single sum)
inline float Sum(const float *__restrict x, int64_t n) {
  float lanes[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; l++) lanes[l] += x[i + l];
  float s = 0;
  for (; i < n; i++) s += x[i];
  for (int l = 0; l < 16; l++) s += lanes[l];
  return s;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void LayerNormRows(const float *__restrict x,
                                                                                const float *__restrict w,
                                                                                const float *__restrict b, float eps,
                                                                                float *__restrict y,
                                                                                float *__restrict stats,
                                                                                int64_t rows, int64_t h,
                                                                                float *__restrict scratch) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * h;
    const float mean = Sum(xr, h) / h;
    for (int64_t i = 0; i < h; i++) scratch[i] = (xr[i] - mean) * (xr[i] - mean);
    const float rstd = 1.f / std::sqrt(Sum(scratch, h) / h + eps);
    float *yr = y + r * h;
    for (int64_t i = 0; i < h; i++) yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
}

// dx for the rows, and this slice's contributions to dw = Σ dy·x̂ and db = Σ dy (added into dw, db)
__attribute__((target_clones("avx512f", "avx2", "default"))) void LayerNormGradRows(
    const float *__restrict x, const float *__restrict stats, const float *__restrict w, const float *__restrict dy,
    float *__restrict dx, float *__restrict dw, float *__restrict db, int64_t rows, int64_t h, float *__restrict g,
    float *__restrict gx) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * h;
    const float *dyr = dy + r * h;
    const float mean = stats[2 * r];
    const float rstd = stats[2 * r + 1];
    for (int64_t i = 0; i < h; i++) {
      const float xhat = (xr[i] - mean) * rstd;
      g[i] = dyr[i] * w[i];
      gx[i] = g[i] * xhat;
      dw[i] += dyr[i] * xhat;
      db[i] += dyr[i];
    }
    const float mean_g = Sum(g, h) / h;
    const float mean_gx = Sum(gx, h) / h;
    float *dxr = dx + r * h;
    for (int64_t i = 0; i < h; i++) dxr[i] = rstd * (g[i] - mean_g - (xr[i] - mean) * rstd * mean_gx);
  }
}

// lib/optim.ts's AdamW update, operation for operation: decay = 1 - lr·wd (1: not decayed), bc1 and bc2
// the bias corrections 1 - β1ᵗ and √(1 - β2ᵗ)
__attribute__((target_clones("avx512f", "avx2", "default"))) void AdamWRange(
    const float *__restrict p, const float *__restrict g, const float *__restrict m, const float *__restrict v,
    float *__restrict p1, float *__restrict m1, float *__restrict v1, int64_t n, float lr, float beta1, float beta2,
    float eps, float decay, float bc1, float bc2) {
  const float step = lr / bc1;
  for (int64_t i = 0; i < n; i++) {
    const float mk = m[i] * beta1 + g[i] * (1.f - beta1);
    const float vk = v[i] * beta2 + g[i] * g[i] * (1.f - beta2);
    m1[i] = mk;
    v1[i] = vk;
    p1[i] = p[i] * decay - mk / (std::sqrt(vk) / bc2 + eps) * step;
  }
}

// lib/random.ts's mix32 and foldIn: the dropout mask's definition
inline uint32_t Mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  return x ^ (x >> 16);
}
inline uint32_t FoldIn(uint32_t key, int32_t data) {
  return Mix32(Mix32(key) ^ ((static_cast<uint32_t>(data) + 0x9e3779b9u) * 0x85ebca6bu));
}

// Row r's element j is kept when mix32(foldIn(key, rowOffset + r) + j·0x9e3779b9) >> 8 < threshold, and is
// then x·scale, else x·0 (as JavaScript's mask times x: -0 and NaN alike)
__attribute__((target_clones("avx512f", "avx2", "default"))) void DropoutRows(const float *__restrict x,
                                                                              float *__restrict y, int64_t rows,
                                                                              int64_t row_size, uint32_t key,
                                                                              int64_t first_row, uint32_t threshold,
                                                                              float scale) {
  for (int64_t r = 0; r < rows; r++) {
    const uint32_t row_key = FoldIn(key, static_cast<int32_t>(first_row + r));
    const float *xr = x + r * row_size;
    float *yr = y + r * row_size;
    for (int64_t j = 0; j < row_size; j++) {
      const uint32_t h = Mix32(row_key + static_cast<uint32_t>(j) * 0x9e3779b9u);
      yr[j] = xr[j] * ((h >> 8) < threshold ? scale : 0.f);
    }
  }
}

// Runs f(begin, end) over [0, n) in slices, one per core (one slice for small n).
// `grain`: the least worth a thread of its own. f(begin, end, slice); returns the number of slices.
template <typename F>
int64_t Parallel(int64_t n, int64_t grain, F f) {
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t slices = std::min<int64_t>(cores, std::max<int64_t>(1, n / grain));
  std::vector<std::thread> threads;
  const int64_t step = (n + slices - 1) / slices;
  for (int64_t s = 1; s < slices; s++) threads.emplace_back(f, s * step, std::min(n, (s + 1) * step), s);
  f(0, std::min(n, step), 0);
  for (auto &t : threads) t.join();
  return slices;
}
constexpr int64_t kElementGrain = 65536;

struct TensorDeleter {
  void operator()(TF_Tensor *t) const {
    if (t) TF_DeleteTensor(t);
  }
};
using OwnedTensor = std::unique_ptr<TF_Tensor, TensorDeleter>;

const float *Data(const OwnedTensor &t) { return static_cast<const float *>(TF_TensorData(t.get())); }
float *MutableData(const OwnedTensor &t) { return static_cast<float *>(TF_TensorData(t.get())); }

std::vector<int64_t> Dims(const OwnedTensor &t) {
  std::vector<int64_t> dims(TF_NumDims(t.get()));
  for (size_t i = 0; i < dims.size(); i++) dims[i] = TF_Dim(t.get(), i);
  return dims;
}

OwnedTensor NewTensor(const std::vector<int64_t> &dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return OwnedTensor(TF_AllocateTensor(TF_FLOAT, dims.data(), dims.size(), n * sizeof(float)));
}

// The arguments of an entry point: `tensors` tensor ids, each a float32 tensor in host memory, then `count`
// numbers into `numbers`; false with a JavaScript error pending.
bool Inputs(napi_env env, napi_callback_info info, const char *usage, size_t tensors, std::vector<OwnedTensor> &out,
            double *numbers = nullptr, size_t count = 0) {
  constexpr size_t kMaxArgs = 16;
  napi_value args[kMaxArgs];
  size_t argc = kMaxArgs;
  if (tensors + count > kMaxArgs || napi_get_cb_info(env, info, &argc, args, nullptr, nullptr) != napi_ok ||
      argc < tensors + count) {
    NAPI_THROW_ERROR(env, "%s: %zu arguments expected", usage, tensors + count);
    return false;
  }
  TFJSBackend *backend = tevatron::Backend(env);
  for (size_t i = 0; i < tensors; i++) {
    int32_t id;
    TFE_TensorHandle *h = nullptr;
    if (napi_get_value_int32(env, args[i], &id) != napi_ok || backend == nullptr ||
        (h = backend->Handle(id)) == nullptr || TFE_TensorHandleDataType(h) != TF_FLOAT) {
      NAPI_THROW_ERROR(env, "%s: argument %zu is not a float32 tensor", usage, i + 1);
      return false;
    }
    TF_AutoStatus status;
    out.emplace_back(TFE_TensorHandleResolve(h, status.status));
    ENSURE_TF_OK_RETVAL(env, status, false);
  }
  for (size_t i = 0; i < count; i++) {
    if (napi_get_value_double(env, args[tensors + i], &numbers[i]) != napi_ok) {
      NAPI_THROW_ERROR(env, "%s: argument %zu is not a number", usage, tensors + i + 1);
      return false;
    }
  }
  return true;
}

// The tensors handed to the backend: one tensor info, or an array of them.
napi_value Outputs(napi_env env, std::vector<OwnedTensor> tensors) {
  TFJSBackend *backend = tevatron::Backend(env);
  napi_value array;
  ENSURE_NAPI_OK_RETVAL(env, napi_create_array_with_length(env, tensors.size(), &array), nullptr);
  for (size_t i = 0; i < tensors.size(); i++) {
    TF_AutoStatus status;
    TFE_TensorHandle *h = TFE_NewTensorHandle(tensors[i].get(), status.status);
    ENSURE_TF_OK_RETVAL(env, status, nullptr);
    napi_value tensor_info = backend->OutputTensorInfo(env, h);
    if (tensors.size() == 1) return tensor_info;
    ENSURE_NAPI_OK_RETVAL(env, napi_set_element(env, array, i, tensor_info), nullptr);
  }
  return array;
}

napi_value GeluExact(napi_env env, napi_callback_info info) {
  std::vector<OwnedTensor> in;
  if (!Inputs(env, info, "geluExact(x)", 1, in)) return nullptr;
  const float *x = Data(in[0]);
  const int64_t n = TF_TensorElementCount(in[0].get());
  OwnedTensor y = NewTensor(Dims(in[0]));
  float *ys = MutableData(y);
  Parallel(n, kElementGrain, [&](int64_t b, int64_t e, int64_t) { GeluRange(x + b, ys + b, e - b); });
  std::vector<OwnedTensor> out;
  out.push_back(std::move(y));
  return Outputs(env, std::move(out));
}

napi_value GeluExactGrad(napi_env env, napi_callback_info info) {
  std::vector<OwnedTensor> in;
  if (!Inputs(env, info, "geluExactGrad(x, dy)", 2, in)) return nullptr;
  const int64_t n = TF_TensorElementCount(in[0].get());
  if (TF_TensorElementCount(in[1].get()) != n) {
    NAPI_THROW_ERROR(env, "geluExactGrad: x and dy differ in size");
    return nullptr;
  }
  const float *x = Data(in[0]);
  const float *dy = Data(in[1]);
  OwnedTensor dx = NewTensor(Dims(in[0]));
  float *dxs = MutableData(dx);
  Parallel(n, kElementGrain, [&](int64_t b, int64_t e, int64_t) { GeluGradRange(x + b, dy + b, dxs + b, e - b); });
  std::vector<OwnedTensor> out;
  out.push_back(std::move(dx));
  return Outputs(env, std::move(out));
}

// rows and width of x [..., h] when w (and b) are [h]; false with a JavaScript error pending
bool RowsOf(napi_env env, const OwnedTensor &x, const OwnedTensor &w, int64_t &rows, int64_t &h) {
  h = TF_NumDims(x.get()) > 0 ? TF_Dim(x.get(), TF_NumDims(x.get()) - 1) : 0;
  if (h == 0 || TF_NumDims(w.get()) != 1 || TF_Dim(w.get(), 0) != h) {
    NAPI_THROW_ERROR(env, "layerNorm: the weight must be [h] for x [..., h]");
    return false;
  }
  rows = TF_TensorElementCount(x.get()) / h;
  return true;
}

constexpr int64_t kRowGrain = 256;

napi_value LayerNorm(napi_env env, napi_callback_info info) {
  std::vector<OwnedTensor> in;
  double eps;
  if (!Inputs(env, info, "layerNorm(x, w, b, eps)", 3, in, &eps, 1)) return nullptr;
  int64_t rows, h;
  if (!RowsOf(env, in[0], in[1], rows, h) || !RowsOf(env, in[0], in[2], rows, h)) return nullptr;
  OwnedTensor y = NewTensor(Dims(in[0]));
  OwnedTensor stats = NewTensor({rows, 2});
  const float *x = Data(in[0]), *w = Data(in[1]), *b = Data(in[2]);
  float *ys = MutableData(y), *st = MutableData(stats);
  Parallel(rows, kRowGrain, [&](int64_t r0, int64_t r1, int64_t) {
    std::vector<float> scratch(h);
    LayerNormRows(x + r0 * h, w, b, static_cast<float>(eps), ys + r0 * h, st + 2 * r0, r1 - r0, h, scratch.data());
  });
  std::vector<OwnedTensor> out;
  out.push_back(std::move(y));
  out.push_back(std::move(stats));
  return Outputs(env, std::move(out));
}

napi_value LayerNormGrad(napi_env env, napi_callback_info info) {
  std::vector<OwnedTensor> in;
  if (!Inputs(env, info, "layerNormGrad(x, stats, w, dy)", 4, in)) return nullptr;
  int64_t rows, h;
  if (!RowsOf(env, in[0], in[2], rows, h)) return nullptr;
  if (TF_TensorElementCount(in[3].get()) != rows * h || TF_TensorElementCount(in[1].get()) != 2 * rows) {
    NAPI_THROW_ERROR(env, "layerNormGrad: dy or stats do not match x");
    return nullptr;
  }
  const float *x = Data(in[0]), *st = Data(in[1]), *w = Data(in[2]), *dy = Data(in[3]);
  OwnedTensor dx = NewTensor(Dims(in[0]));
  float *dxs = MutableData(dx);
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  std::vector<float> partial(2 * cores * h, 0.f);  // each slice's dw, then db
  const int64_t slices = Parallel(rows, kRowGrain, [&](int64_t r0, int64_t r1, int64_t s) {
    std::vector<float> g(h), gx(h);
    float *dw = partial.data() + 2 * s * h;
    LayerNormGradRows(x + r0 * h, st + 2 * r0, w, dy + r0 * h, dxs + r0 * h, dw, dw + h, r1 - r0, h, g.data(), gx.data());
  });
  OwnedTensor dw = NewTensor({h}), db = NewTensor({h});
  float *dws = MutableData(dw), *dbs = MutableData(db);
  for (int64_t i = 0; i < h; i++) {
    dws[i] = dbs[i] = 0.f;
    for (int64_t s = 0; s < slices; s++) {
      dws[i] += partial[2 * s * h + i];
      dbs[i] += partial[2 * s * h + h + i];
    }
  }
  std::vector<OwnedTensor> out;
  out.push_back(std::move(dx));
  out.push_back(std::move(dw));
  out.push_back(std::move(db));
  return Outputs(env, std::move(out));
}

napi_value AdamW(napi_env env, napi_callback_info info) {
  std::vector<OwnedTensor> in;
  const char *usage = "adamw(p, g, m, v, lr, beta1, beta2, eps, decay, bc1, bc2)";
  double h[7];
  if (!Inputs(env, info, usage, 4, in, h, 7)) return nullptr;
  const int64_t n = TF_TensorElementCount(in[0].get());
  for (int i = 1; i < 4; i++) {
    if (TF_TensorElementCount(in[i].get()) != n) {
      NAPI_THROW_ERROR(env, "%s: p, g, m and v differ in size", usage);
      return nullptr;
    }
  }
  std::vector<OwnedTensor> out;
  for (int i = 0; i < 3; i++) out.push_back(NewTensor(Dims(in[0])));
  const float *p = Data(in[0]), *g = Data(in[1]), *m = Data(in[2]), *v = Data(in[3]);
  float *p1 = MutableData(out[0]), *m1 = MutableData(out[1]), *v1 = MutableData(out[2]);
  Parallel(n, kElementGrain, [&](int64_t b, int64_t e, int64_t) {
    AdamWRange(p + b, g + b, m + b, v + b, p1 + b, m1 + b, v1 + b, e - b, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  });
  return Outputs(env, std::move(out));
}

napi_value Dropout(napi_env env, napi_callback_info info) {
  std::vector<OwnedTensor> in;
  const char *usage = "dropout(x, key, rowOffset, threshold, scale)";
  double h[4];
  if (!Inputs(env, info, usage, 1, in, h, 4)) return nullptr;
  const int64_t n = TF_TensorElementCount(in[0].get());
  const int64_t rows = TF_NumDims(in[0].get()) > 0 ? TF_Dim(in[0].get(), 0) : 1;
  const int64_t row_size = rows > 0 ? n / rows : 0;
  OwnedTensor y = NewTensor(Dims(in[0]));
  const float *x = Data(in[0]);
  float *ys = MutableData(y);
  const uint32_t key = static_cast<uint32_t>(h[0]), threshold = static_cast<uint32_t>(h[2]);
  const int64_t first = static_cast<int64_t>(h[1]);
  Parallel(rows, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(1, row_size)), [&](int64_t r0, int64_t r1, int64_t) {
    DropoutRows(x + r0 * row_size, ys + r0 * row_size, r1 - r0, row_size, key, first + r0, threshold, static_cast<float>(h[3]));
  });
  std::vector<OwnedTensor> out;
  out.push_back(std::move(y));
  return Outputs(env, std::move(out));
}

}  // namespace

TEVATRON_EXPORT(adamw, AdamW);
TEVATRON_EXPORT(dropout, Dropout);
TEVATRON_EXPORT(geluExact, GeluExact);
TEVATRON_EXPORT(geluExactGrad, GeluExactGrad);
TEVATRON_EXPORT(layerNorm, LayerNorm);
TEVATRON_EXPORT(layerNormGrad, LayerNormGrad);
