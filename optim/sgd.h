#pragma once
// Stochastic gradient descent with momentum, in PyTorch's and Paddle's forms
// (framework-semantics.md §2).
//   SGD (torch.optim.SGD, 1.13): g ← g + wd·θ; b ← g at the first step, then b ← μb + (1−dampening)g;
//       d = g + μb (nesterov) or b; θ ← θ − lr·d. lr is required; nesterov needs μ > 0 and dampening 0.
//   PaddleMomentum (paddle.optimizer.Momentum, CPU kernel): g ← g + coeff·θ (fused L2, after any
//       clipping); v ← μv + g; θ ← θ − lr·v, or θ ← θ − (g + μv)·lr with use_nesterov. Defaults μ 0.9,
//       lr 0.001. With μ = 0 it is also Paddle's plain SGD, rounding included.
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace hmer::optim {

struct SGDOptions {
  explicit SGDOptions(double lr) : lr_(lr) {}
  HMER_OPTIM_ARG(double, lr, 0.0);
  HMER_OPTIM_ARG(double, momentum, 0.0);
  HMER_OPTIM_ARG(double, dampening, 0.0);
  HMER_OPTIM_ARG(double, weight_decay, 0.0);
  HMER_OPTIM_ARG(bool, nesterov, false);
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& options);
  SGD(std::vector<ParamGroup> groups, const SGDOptions& options);

  const SGDOptions& options() const { return options_; }
  std::string describe() const override;
  std::vector<std::string> buffer_names() const override;

 protected:
  void update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) override;
  std::map<std::string, std::string> options_to_scalars() const override;
  void options_from_scalars(const std::map<std::string, std::string>& s) override;

 private:
  SGDOptions options_;
};

struct PaddleMomentumOptions {
  HMER_OPTIM_ARG(double, lr, 0.001);
  HMER_OPTIM_ARG(double, momentum, 0.9);
  HMER_OPTIM_ARG(bool, nesterov, false);  // Paddle's use_nesterov
  HMER_OPTIM_ARG(double, weight_decay, 0.0);  // L2Decay coefficient, fused into the kernel
};

class PaddleMomentum : public Optimizer {
 public:
  PaddleMomentum(std::vector<Tensor> params, const PaddleMomentumOptions& options = {});
  PaddleMomentum(std::vector<ParamGroup> groups, const PaddleMomentumOptions& options = {});

  const PaddleMomentumOptions& options() const { return options_; }
  std::string describe() const override;
  std::vector<std::string> buffer_names() const override { return {"velocity"}; }

 protected:
  void update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) override;
  std::map<std::string, std::string> options_to_scalars() const override;
  void options_from_scalars(const std::map<std::string, std::string>& s) override;

 private:
  PaddleMomentumOptions options_;
};

}  // namespace hmer::optim
