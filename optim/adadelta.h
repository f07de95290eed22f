#pragma once
// Adadelta in two framework flavours (framework-semantics.md §1):
//   torch  (PyTorch 1.13 torch.optim.Adadelta): eps inside both square roots, coupled L2 weight decay
//          added with an fma, Δ excludes lr, θ ← θ − lr·Δ. Defaults lr 1, rho 0.9, eps 1e-6.
//   paddle (Paddle <= 2.4 adadelta kernel): one square root of the ratio, 1−rho in float32, L2 added
//          as g + fl(c·θ), θ ← θ + upd with NO learning rate at all. Defaults rho 0.95, eps 1e-6
//          (Paddle's default learning_rate 0.001 is kept only for the record: it has no effect).
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace hmer::optim {

enum class Variant { Torch, Paddle };
const char* variant_name(Variant v);
Variant parse_variant(const std::string& s);  // "torch" | "paddle"

struct AdadeltaOptions {
  static AdadeltaOptions torch();
  static AdadeltaOptions paddle();
  HMER_OPTIM_ARG(Variant, variant, Variant::Torch);
  HMER_OPTIM_ARG(double, lr, 1.0);
  HMER_OPTIM_ARG(double, rho, 0.9);
  HMER_OPTIM_ARG(double, eps, 1e-6);
  HMER_OPTIM_ARG(double, weight_decay, 0.0);
  // Paddle only. The Paddle <= 2.4 kernel runs in place (AvgSquaredUpdateOut aliases
  // AvgSquaredUpdate) and its Eigen update expression is lazy: θ += upd is evaluated AFTER the
  // E_dx accumulator was overwritten, so the applied update reads the NEW E_dx. false (default)
  // applies the textbook order of the spec; true reproduces that aliasing. See docs/optimizers.md.
  HMER_OPTIM_ARG(bool, paddle_aliased_update, false);
};

inline AdadeltaOptions AdadeltaOptions::torch() { return AdadeltaOptions(); }
inline AdadeltaOptions AdadeltaOptions::paddle() {
  return AdadeltaOptions().variant(Variant::Paddle).lr(0.001).rho(0.95);
}

class Adadelta : public Optimizer {
 public:
  Adadelta(std::vector<Tensor> params, const AdadeltaOptions& options = {});
  Adadelta(std::vector<ParamGroup> groups, const AdadeltaOptions& options = {});

  const AdadeltaOptions& options() const { return options_; }
  std::string describe() const override;
  std::vector<std::string> buffer_names() const override;
  double effective_lr(const Group& g) const override;

 protected:
  void update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) override;
  std::map<std::string, std::string> options_to_scalars() const override;
  void options_from_scalars(const std::map<std::string, std::string>& s) override;

 private:
  AdadeltaOptions options_;
};

}  // namespace hmer::optim
