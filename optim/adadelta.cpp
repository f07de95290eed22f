#include "optim/adadelta.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "kernels/cpu/parallel.h"

namespace hmer::optim {

const char* variant_name(Variant v) { return v == Variant::Torch ? "torch" : "paddle"; }

Variant parse_variant(const std::string& s) {
  if (s == "torch") return Variant::Torch;
  if (s == "paddle") return Variant::Paddle;
  fail("unknown optimizer variant '", s, "' (expected torch or paddle)");
}

namespace {

std::string adadelta_type(const AdadeltaOptions& o) {
  return std::string("adadelta_") + variant_name(o.variant());
}

void check_options(const AdadeltaOptions& o) {
  HMER_CHECK(o.lr() >= 0, "Adadelta: invalid lr ", o.lr());
  HMER_CHECK(o.rho() >= 0 && o.rho() <= 1, "Adadelta: invalid rho ", o.rho(), " (must be in [0, 1])");
  HMER_CHECK(o.eps() >= 0, "Adadelta: invalid eps ", o.eps());
  HMER_CHECK(o.weight_decay() >= 0, "Adadelta: invalid weight_decay ", o.weight_decay());
  HMER_CHECK(o.variant() == Variant::Paddle || !o.paddle_aliased_update(),
             "Adadelta: paddle_aliased_update only applies to variant paddle");
}

std::vector<ParamGroup> one_group(std::vector<Tensor> params) {
  ParamGroup g;
  g.params = std::move(params);
  return {std::move(g)};
}

}  // namespace

Adadelta::Adadelta(std::vector<Tensor> params, const AdadeltaOptions& options)
    : Adadelta(one_group(std::move(params)), options) {}

Adadelta::Adadelta(std::vector<ParamGroup> groups, const AdadeltaOptions& options)
    : Optimizer(adadelta_type(options), std::move(groups), options.lr(), options.weight_decay()), options_(options) {
  check_options(options_);
}

std::string Adadelta::describe() const {
  std::ostringstream os;
  os << "Adadelta(variant=" << variant_name(options_.variant()) << ", lr=" << param_groups()[0].lr
     << ", rho=" << options_.rho() << ", eps=" << options_.eps() << ", weight_decay=" << param_groups()[0].weight_decay;
  if (options_.variant() == Variant::Paddle)
    os << ", lr ignored (Paddle <= 2.4)" << (options_.paddle_aliased_update() ? ", aliased update" : "");
  os << ")";
  return os.str();
}

std::vector<std::string> Adadelta::buffer_names() const {
  if (options_.variant() == Variant::Torch) return {"square_avg", "acc_delta"};
  return {"avg_squared_grad", "avg_squared_update"};
}

double Adadelta::effective_lr(const Group& g) const { return options_.variant() == Variant::Torch ? g.lr : 1.0; }

void Adadelta::update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) {
  float* p = param.data_ptr<float>();
  const float* gr = grad.data_ptr<float>();
  float* sq = st.buffers[0].data_ptr<float>();
  float* acc = st.buffers[1].data_ptr<float>();
  const int64_t n = param.numel();
  const bool decay = group.weight_decay != 0;
  const float wd = static_cast<float>(group.weight_decay);
  const float rho = static_cast<float>(options_.rho());
  const float eps = static_cast<float>(options_.eps());

  if (options_.variant() == Variant::Torch) {
    // PyTorch computes 1 - rho in double (a Python float) and hands the kernel the float32 rounding.
    const float one_minus_rho = static_cast<float>(1.0 - options_.rho());
    const float neg_lr = static_cast<float>(-group.lr);
    cpu::parallel_for(n, kUpdateGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float g = gr[i];
        if (decay) g = std::fma(wd, p[i], g);                         // grad.add(param, alpha=wd)
        const float v = std::fma(one_minus_rho * g, g, sq[i] * rho);  // mul_(rho).addcmul_(g, g, 1-rho)
        sq[i] = v;
        const float std_v = std::sqrt(v + eps);
        const float d = std::sqrt(acc[i] + eps) / std_v * g;
        acc[i] = std::fma(one_minus_rho * d, d, acc[i] * rho);
        p[i] = std::fma(neg_lr, d, p[i]);  // param.add_(delta, alpha=-lr)
      }
    });
    return;
  }

  // Paddle <= 2.4: Eigen expressions on float32, every operation rounded on its own (no fma), and
  // 1 - rho computed in float32 (1.0f - 0.95f = 0.050000012f).
  const float one_minus_rho = 1.0f - rho;
  const bool aliased = options_.paddle_aliased_update();
  cpu::parallel_for(n, kUpdateGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float g = gr[i];
      if (decay) g = g + wd * p[i];  // L2Decay: scale(θ, coeff) then a sum op
      const float eg = rho * sq[i] + one_minus_rho * (g * g);
      sq[i] = eg;
      const float upd = -(std::sqrt((acc[i] + eps) / (eg + eps)) * g);
      const float edx = rho * acc[i] + one_minus_rho * (upd * upd);
      acc[i] = edx;
      // The aliased kernel re-evaluates the lazy `update` expression after E_dx was overwritten.
      p[i] = p[i] + (aliased ? -(std::sqrt((edx + eps) / (eg + eps)) * g) : upd);
    }
  });
}

std::map<std::string, std::string> Adadelta::options_to_scalars() const {
  return {{"lr", format_double(options_.lr())},
          {"rho", format_double(options_.rho())},
          {"eps", format_double(options_.eps())},
          {"weight_decay", format_double(options_.weight_decay())},
          {"paddle_aliased_update", options_.paddle_aliased_update() ? "1" : "0"}};
}

void Adadelta::options_from_scalars(const std::map<std::string, std::string>& s) {
  AdadeltaOptions o = options_;
  o.lr(parse_double(scalar_at(s, "lr"), "option.lr"));
  o.rho(parse_double(scalar_at(s, "rho"), "option.rho"));
  o.eps(parse_double(scalar_at(s, "eps"), "option.eps"));
  o.weight_decay(parse_double(scalar_at(s, "weight_decay"), "option.weight_decay"));
  o.paddle_aliased_update(scalar_at(s, "paddle_aliased_update") == "1");
  check_options(o);
  options_ = o;
}

}  // namespace hmer::optim
