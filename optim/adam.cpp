#include "optim/adam.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "kernels/cpu/parallel.h"

namespace hmer::optim {

namespace {

std::vector<ParamGroup> one_group(std::vector<Tensor> params) {
  ParamGroup g;
  g.params = std::move(params);
  return {std::move(g)};
}

void check_options(const AdamOptions& o, const char* name) {
  HMER_CHECK(o.lr() >= 0, name, ": invalid lr ", o.lr());
  HMER_CHECK(o.eps() >= 0, name, ": invalid eps ", o.eps());
  HMER_CHECK(o.beta1() >= 0 && o.beta1() < 1, name, ": invalid beta1 ", o.beta1(), " (must be in [0, 1))");
  HMER_CHECK(o.beta2() >= 0 && o.beta2() < 1, name, ": invalid beta2 ", o.beta2(), " (must be in [0, 1))");
  HMER_CHECK(o.weight_decay() >= 0, name, ": invalid weight_decay ", o.weight_decay());
}

AdamOptions to_adam(const AdamWOptions& w) {
  return AdamOptions().lr(w.lr()).beta1(w.beta1()).beta2(w.beta2()).eps(w.eps()).weight_decay(w.weight_decay())
      .amsgrad(w.amsgrad());
}

// torch.maximum propagates NaN; std::max would not.
inline float nan_max(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return a > b ? a : b;
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, const AdamOptions& options) : Adam(one_group(std::move(params)), options) {}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& options)
    : Optimizer(options.amsgrad() ? "adam_amsgrad_torch" : "adam_torch", std::move(groups), options.lr(),
                options.weight_decay()),
      options_(options) {
  check_options(options_, "Adam");
}

Adam::Adam(std::vector<ParamGroup> groups, const AdamWOptions& options)
    : Optimizer(options.amsgrad() ? "adamw_amsgrad_torch" : "adamw_torch", std::move(groups), options.lr(),
                options.weight_decay()),
      options_(to_adam(options)),
      decoupled_(true) {
  check_options(options_, "AdamW");
}

AdamW::AdamW(std::vector<Tensor> params, const AdamWOptions& options) : Adam(one_group(std::move(params)), options) {}

std::string Adam::describe() const {
  std::ostringstream os;
  os << (decoupled_ ? "AdamW" : "Adam") << "(variant=torch, lr=" << param_groups()[0].lr << ", betas=("
     << options_.beta1() << ", " << options_.beta2() << "), eps=" << options_.eps()
     << ", weight_decay=" << param_groups()[0].weight_decay << ", amsgrad=" << (options_.amsgrad() ? "true" : "false")
     << ")";
  return os.str();
}

std::vector<std::string> Adam::buffer_names() const {
  if (options_.amsgrad()) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

void Adam::update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) {
  float* p = param.data_ptr<float>();
  const float* gr = grad.data_ptr<float>();
  float* m = st.buffers[0].data_ptr<float>();
  float* v = st.buffers[1].data_ptr<float>();
  float* vmax = options_.amsgrad() ? st.buffers[2].data_ptr<float>() : nullptr;
  const int64_t n = param.numel();

  const double lr = group.lr;
  const double wd = group.weight_decay;
  const double beta1 = options_.beta1();
  const double beta2 = options_.beta2();
  // The Python side of torch: the step is a float32 tensor read back with .item() (exact below
  // 2^24), the powers and quotients are Python doubles (C pow, as here).
  const double t = static_cast<double>(static_cast<float>(st.step));
  const double bias_correction1 = 1 - std::pow(beta1, t);
  const double bias_correction2 = 1 - std::pow(beta2, t);
  const double step_size = lr / bias_correction1;
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float neg_step = static_cast<float>(-step_size);
  const float b1 = static_cast<float>(beta1);
  const float b2 = static_cast<float>(beta2);
  const float one_minus_b1 = static_cast<float>(1 - beta1);
  const float one_minus_b2 = static_cast<float>(1 - beta2);
  const float eps = static_cast<float>(options_.eps());
  const bool coupled_decay = !decoupled_ && wd != 0;
  const float wd_f = static_cast<float>(wd);
  const float decay_factor = static_cast<float>(1 - lr * wd);  // AdamW: param.mul_(1 - lr*wd)
  const bool decoupled = decoupled_;
  const bool amsgrad = options_.amsgrad();

  cpu::parallel_for(n, kUpdateGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float theta = p[i];
      if (decoupled) theta = theta * decay_factor;
      const float g = coupled_decay ? std::fma(wd_f, theta, gr[i]) : gr[i];
      const float mi = std::fma(one_minus_b1, g, m[i] * b1);      // mul_(β1).add_(g, alpha=1-β1)
      const float vi = std::fma(one_minus_b2 * g, g, v[i] * b2);  // mul_(β2).addcmul_(g, g, value=1-β2)
      m[i] = mi;
      v[i] = vi;
      float second = vi;
      if (amsgrad) {
        second = nan_max(vmax[i], vi);
        vmax[i] = second;
      }
      const float denom = std::sqrt(second) / bc2_sqrt + eps;     // (sqrt(v) / bc2_sqrt).add_(eps)
      p[i] = theta + (neg_step * mi) / denom;                     // addcdiv_(m, denom, value=-step_size)
    }
  });
}

std::map<std::string, std::string> Adam::options_to_scalars() const {
  return {{"lr", format_double(options_.lr())},
          {"beta1", format_double(options_.beta1())},
          {"beta2", format_double(options_.beta2())},
          {"eps", format_double(options_.eps())},
          {"weight_decay", format_double(options_.weight_decay())}};
}

void Adam::options_from_scalars(const std::map<std::string, std::string>& s) {
  AdamOptions o = options_;
  o.lr(parse_double(scalar_at(s, "lr"), "option.lr"));
  o.beta1(parse_double(scalar_at(s, "beta1"), "option.beta1"));
  o.beta2(parse_double(scalar_at(s, "beta2"), "option.beta2"));
  o.eps(parse_double(scalar_at(s, "eps"), "option.eps"));
  o.weight_decay(parse_double(scalar_at(s, "weight_decay"), "option.weight_decay"));
  check_options(o, decoupled_ ? "AdamW" : "Adam");
  options_ = o;
}

}  // namespace hmer::optim
