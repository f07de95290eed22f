#pragma once
// Gradient clipping on the .grad() of a list of parameters, in place, before optimizer.step()
// (framework-semantics.md §4). Every function returns the total norm of the gradients as they
// were BEFORE clipping (PyTorch's return value), which training logs report.
//   Torch  clip_grad_norm_: coef = max_norm / (total + 1e-6), clamped to 1, and every gradient is
//          multiplied by it (NaN propagates; optional error on a non-finite total).
//   Paddle ClipGradByGlobalNorm: scale = clip_norm / max(total, clip_norm) (no epsilon; exactly 1
//          below the threshold).
//   By value: every element clamped to [-clip_value, clip_value] (torch clip_grad_value_).
// Parameters without a gradient are ignored, as in both frameworks.
#include <limits>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace hmer::optim {

enum class ClipForm { Torch, Paddle };

// Total p-norm over all gradients: the 2-norm (sqrt of the sum of squares, accumulated in double)
// or, for norm_type = infinity, the largest absolute value. NaN when any element is NaN.
double total_grad_norm(const std::vector<Tensor>& params, double norm_type = 2.0);

// Torch form. Throws hmer::Error naming the total when error_if_nonfinite and it is NaN or ±inf.
double clip_grad_norm_torch(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                            bool error_if_nonfinite = false);
// Paddle form (2-norm only, as ClipGradByGlobalNorm).
double clip_grad_norm_paddle(const std::vector<Tensor>& params, double clip_norm);
double clip_grad_value(const std::vector<Tensor>& params, double clip_value);

// A clipping rule as read from a config (optim/factory.h); kind None does nothing.
struct ClipConfig {
  enum class Kind { None, Norm, Value };
  Kind kind = Kind::None;
  ClipForm form = ClipForm::Torch;
  double threshold = 0;       // max_norm / clip_norm / clip_value
  double norm_type = 2.0;     // torch form only
  bool error_if_nonfinite = false;
  std::string describe() const;
};

// Applies the rule and returns the total 2-norm (or norm_type norm) before clipping; with kind
// None it only measures.
double apply_clip(const ClipConfig& config, const std::vector<Tensor>& params);

}  // namespace hmer::optim
