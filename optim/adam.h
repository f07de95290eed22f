#pragma once
// Adam and AdamW with PyTorch 1.13 semantics (framework-semantics.md §3), single-tensor CPU path:
//   Adam : g ← g + wd·θ (coupled L2); m ← β1·m + (1−β1)g; v ← β2·v + (1−β2)g²;
//          θ ← θ − (lr/(1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + eps)   (eps outside the sqrt)
//   AdamW: θ ← θ·(1 − lr·wd) first (decoupled), then the Adam update without the L2 term.
// amsgrad keeps max(v) and uses it in the denominator. Bias corrections are computed in double
// (Python floats) and rounded to float32 where the kernels receive them.
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace hmer::optim {

struct AdamOptions {
  HMER_OPTIM_ARG(double, lr, 1e-3);
  HMER_OPTIM_ARG(double, beta1, 0.9);
  HMER_OPTIM_ARG(double, beta2, 0.999);
  HMER_OPTIM_ARG(double, eps, 1e-8);
  HMER_OPTIM_ARG(double, weight_decay, 0.0);
  HMER_OPTIM_ARG(bool, amsgrad, false);
};

// AdamW differs only in where the weight decay goes and in its default (1e-2).
struct AdamWOptions {
  HMER_OPTIM_ARG(double, lr, 1e-3);
  HMER_OPTIM_ARG(double, beta1, 0.9);
  HMER_OPTIM_ARG(double, beta2, 0.999);
  HMER_OPTIM_ARG(double, eps, 1e-8);
  HMER_OPTIM_ARG(double, weight_decay, 1e-2);
  HMER_OPTIM_ARG(bool, amsgrad, false);
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, const AdamOptions& options = {});
  Adam(std::vector<ParamGroup> groups, const AdamOptions& options = {});
  // AdamW.
  Adam(std::vector<ParamGroup> groups, const AdamWOptions& options);

  bool decoupled() const { return decoupled_; }
  std::string describe() const override;
  std::vector<std::string> buffer_names() const override;

 protected:
  void update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) override;
  std::map<std::string, std::string> options_to_scalars() const override;
  void options_from_scalars(const std::map<std::string, std::string>& s) override;

 private:
  AdamOptions options_;  // for AdamW, the same numbers with decoupled_ set
  bool decoupled_ = false;
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, const AdamWOptions& options = {});
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& options = {}) : Adam(std::move(groups), options) {}
};

}  // namespace hmer::optim
