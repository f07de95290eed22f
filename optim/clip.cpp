#include "optim/clip.h"

#include <cmath>
#include <algorithm>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/parallel.h"
#include "optim/optimizer.h"

namespace hmer::optim {

namespace {

// The float32 CPU gradients of the parameters that have one.
std::vector<Tensor> grads_of(const std::vector<Tensor>& params, const char* op) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < params.size(); ++i) {
    HMER_CHECK(params[i].defined(), op, ": parameter ", i, " is an undefined tensor");
    Tensor g = params[i].grad();
    if (!g.defined()) continue;
    HMER_CHECK(g.dtype() == DType::Float32 && g.device().is_cpu(), op, ": gradient of parameter ", i, " is ",
               g.str(), " (expected float32 cpu)");
    HMER_CHECK(g.is_contiguous(), op, ": gradient of parameter ", i, " (", g.str(),
               ") is not contiguous; clipping scales it in place");
    out.push_back(g);
  }
  return out;
}

void scale_in_place(const std::vector<Tensor>& grads, float coef) {
  for (const Tensor& g : grads) {
    float* d = g.data_ptr<float>();
    cpu::parallel_for(g.numel(), kUpdateGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) d[i] = d[i] * coef;
    });
  }
}

// Elements per partial sum of sum_squares, and its independent lanes per partial sum.
constexpr int64_t kSquaresChunk = 1 << 16;
constexpr int kSquaresLanes = 8;

double sum_squares(const Tensor& g) {
  const float* d = g.data_ptr<float>();
  const int64_t n = g.numel();
  // Fixed chunks, each summed in 8 interleaved double lanes (so it vectorises, where one running
  // sum is a chain of dependent adds), the chunk sums then added in order: the summation order,
  // and so the norm and the clip, depend neither on the thread count nor on the scheduling.
  const int64_t chunks = (n + kSquaresChunk - 1) / kSquaresChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  cpu::parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kSquaresChunk, e = std::min(n, b + kSquaresChunk);
      double lane[kSquaresLanes] = {};
      int64_t i = b;
      for (; i + kSquaresLanes <= e; i += kSquaresLanes) {
        for (int l = 0; l < kSquaresLanes; ++l) lane[l] += static_cast<double>(d[i + l]) * d[i + l];
      }
      for (int l = 0; i < e; ++i, ++l) lane[l] += static_cast<double>(d[i]) * d[i];
      double s = 0;
      for (double v : lane) s += v;
      partial[static_cast<size_t>(c)] = s;
    }
  });
  double s = 0;
  for (double v : partial) s += v;
  return s;
}

double norm_of(const std::vector<Tensor>& grads, double norm_type) {
  if (grads.empty()) return 0.0;
  if (std::isinf(norm_type)) {
    double m = 0;
    for (const Tensor& g : grads) {
      const float* d = g.data_ptr<float>();
      for (int64_t i = 0; i < g.numel(); ++i) {
        const double a = std::fabs(static_cast<double>(d[i]));
        if (std::isnan(a)) return a;
        if (a > m) m = a;
      }
    }
    return m;
  }
  HMER_CHECK(norm_type == 2.0, "clip_grad_norm: norm_type ", norm_type, " is not supported (2 or inf)");
  double s = 0;
  for (const Tensor& g : grads) s += sum_squares(g);
  return std::sqrt(s);
}

}  // namespace

double total_grad_norm(const std::vector<Tensor>& params, double norm_type) {
  return norm_of(grads_of(params, "total_grad_norm"), norm_type);
}

double clip_grad_norm_torch(const std::vector<Tensor>& params, double max_norm, double norm_type,
                            bool error_if_nonfinite) {
  HMER_CHECK(max_norm >= 0, "clip_grad_norm: max_norm must be >= 0, got ", max_norm);
  const std::vector<Tensor> grads = grads_of(params, "clip_grad_norm");
  if (grads.empty()) return 0.0;
  const double total = norm_of(grads, norm_type);
  if (error_if_nonfinite && !std::isfinite(total))
    fail("clip_grad_norm: the total norm of order ", norm_type, " of the gradients is ", total,
         ", so they cannot be clipped (error_if_nonfinite is set)");
  // torch does this on float32 tensors: total + 1e-6, then max_norm / that as reciprocal() * max_norm
  // (Tensor.__rtruediv__), then clamp(max=1); NaN survives the clamp.
  const float denom = static_cast<float>(total) + static_cast<float>(1e-6);
  float coef = (1.0f / denom) * static_cast<float>(max_norm);
  if (coef > 1.0f) coef = 1.0f;
  // torch always multiplies; a coefficient of exactly 1 is a no-op, so it is skipped here.
  if (!(coef == 1.0f)) scale_in_place(grads, coef);
  return total;
}

double clip_grad_norm_paddle(const std::vector<Tensor>& params, double clip_norm) {
  HMER_CHECK(clip_norm > 0, "ClipGradByGlobalNorm: clip_norm must be > 0, got ", clip_norm);
  const std::vector<Tensor> grads = grads_of(params, "ClipGradByGlobalNorm");
  if (grads.empty()) return 0.0;
  const double total = norm_of(grads, 2.0);
  // Paddle: float32 tensors, clip_var = clip_norm / maximum(global_norm, clip_norm). Its maximum
  // is `a > b ? a : b`, so a NaN norm selects clip_norm and the scale is 1 (NaNs pass through).
  const float c = static_cast<float>(clip_norm);
  const float n = static_cast<float>(total);
  const float scale = c / (n > c ? n : c);
  if (!(scale == 1.0f)) scale_in_place(grads, scale);
  return total;
}

double clip_grad_value(const std::vector<Tensor>& params, double clip_value) {
  HMER_CHECK(clip_value >= 0, "clip_grad_value: clip_value must be >= 0, got ", clip_value);
  const std::vector<Tensor> grads = grads_of(params, "clip_grad_value");
  const double total = norm_of(grads, 2.0);
  const float hi = static_cast<float>(clip_value);
  for (const Tensor& g : grads) {
    float* d = g.data_ptr<float>();
    cpu::parallel_for(g.numel(), kUpdateGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        // clamp keeps NaN, as torch.clamp_ does
        if (d[i] > hi) d[i] = hi;
        else if (d[i] < -hi) d[i] = -hi;
      }
    });
  }
  return total;
}

std::string ClipConfig::describe() const {
  std::ostringstream os;
  switch (kind) {
    case Kind::None: return "none";
    case Kind::Norm:
      os << "global norm " << threshold << " (" << (form == ClipForm::Torch ? "torch" : "paddle") << " form";
      if (form == ClipForm::Torch && norm_type != 2.0) os << ", norm_type " << norm_type;
      if (error_if_nonfinite) os << ", error if non-finite";
      os << ")";
      return os.str();
    case Kind::Value: os << "value " << threshold; return os.str();
  }
  return "?";
}

double apply_clip(const ClipConfig& config, const std::vector<Tensor>& params) {
  switch (config.kind) {
    case ClipConfig::Kind::None: return total_grad_norm(params, 2.0);
    case ClipConfig::Kind::Norm:
      return config.form == ClipForm::Torch
                 ? clip_grad_norm_torch(params, config.threshold, config.norm_type, config.error_if_nonfinite)
                 : clip_grad_norm_paddle(params, config.threshold);
    case ClipConfig::Kind::Value: return clip_grad_value(params, config.threshold);
  }
  return 0.0;
}

}  // namespace hmer::optim
