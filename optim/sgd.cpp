#include "optim/sgd.h"

#include <cmath>
#include <cstring>
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

void check_options(const SGDOptions& o) {
  HMER_CHECK(o.lr() >= 0, "SGD: invalid lr ", o.lr());
  HMER_CHECK(o.momentum() >= 0, "SGD: invalid momentum ", o.momentum());
  HMER_CHECK(o.weight_decay() >= 0, "SGD: invalid weight_decay ", o.weight_decay());
  HMER_CHECK(!o.nesterov() || (o.momentum() > 0 && o.dampening() == 0),
             "SGD: nesterov momentum requires a momentum and zero dampening (momentum ", o.momentum(),
             ", dampening ", o.dampening(), ")");
}

void check_options(const PaddleMomentumOptions& o) {
  HMER_CHECK(o.lr() >= 0, "PaddleMomentum: invalid lr ", o.lr());
  HMER_CHECK(o.momentum() >= 0, "PaddleMomentum: invalid momentum ", o.momentum());
  HMER_CHECK(o.weight_decay() >= 0, "PaddleMomentum: invalid weight_decay ", o.weight_decay());
}

}  // namespace

// ---- SGD (PyTorch) ------------------------------------------------------------------------------

SGD::SGD(std::vector<Tensor> params, const SGDOptions& options) : SGD(one_group(std::move(params)), options) {}

SGD::SGD(std::vector<ParamGroup> groups, const SGDOptions& options)
    : Optimizer("sgd_torch", std::move(groups), options.lr(), options.weight_decay()), options_(options) {
  check_options(options_);
}

std::string SGD::describe() const {
  std::ostringstream os;
  os << "SGD(variant=torch, lr=" << param_groups()[0].lr << ", momentum=" << options_.momentum()
     << ", dampening=" << options_.dampening() << ", nesterov=" << (options_.nesterov() ? "true" : "false")
     << ", weight_decay=" << param_groups()[0].weight_decay << ")";
  return os.str();
}

std::vector<std::string> SGD::buffer_names() const {
  if (options_.momentum() == 0) return {};
  return {"momentum_buffer"};
}

void SGD::update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) {
  float* p = param.data_ptr<float>();
  const float* gr = grad.data_ptr<float>();
  const int64_t n = param.numel();
  const bool decay = group.weight_decay != 0;
  const float wd = static_cast<float>(group.weight_decay);
  const float neg_lr = static_cast<float>(-group.lr);
  if (options_.momentum() == 0) {
    cpu::parallel_for(n, kUpdateGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float g = decay ? std::fma(wd, p[i], gr[i]) : gr[i];
        p[i] = std::fma(neg_lr, g, p[i]);
      }
    });
    return;
  }
  float* buf = st.buffers[0].data_ptr<float>();
  const float mu = static_cast<float>(options_.momentum());
  const float one_minus_damp = static_cast<float>(1.0 - options_.dampening());
  // PyTorch's first step clones the (decayed) gradient: no dampening and no μ·0 term.
  const bool first = st.step == 1;
  const bool nesterov = options_.nesterov();
  cpu::parallel_for(n, kUpdateGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float g = decay ? std::fma(wd, p[i], gr[i]) : gr[i];
      const float v = first ? g : std::fma(one_minus_damp, g, buf[i] * mu);  // mul_(μ).add_(g, alpha=1-damp)
      buf[i] = v;
      const float d = nesterov ? std::fma(mu, v, g) : v;                      // g.add(buf, alpha=μ)
      p[i] = std::fma(neg_lr, d, p[i]);
    }
  });
}

std::map<std::string, std::string> SGD::options_to_scalars() const {
  return {{"lr", format_double(options_.lr())},
          {"momentum", format_double(options_.momentum())},
          {"dampening", format_double(options_.dampening())},
          {"weight_decay", format_double(options_.weight_decay())},
          {"nesterov", options_.nesterov() ? "1" : "0"}};
}

void SGD::options_from_scalars(const std::map<std::string, std::string>& s) {
  SGDOptions o = options_;
  o.lr(parse_double(scalar_at(s, "lr"), "option.lr"));
  o.momentum(parse_double(scalar_at(s, "momentum"), "option.momentum"));
  o.dampening(parse_double(scalar_at(s, "dampening"), "option.dampening"));
  o.weight_decay(parse_double(scalar_at(s, "weight_decay"), "option.weight_decay"));
  o.nesterov(scalar_at(s, "nesterov") == "1");
  check_options(o);
  // The buffer layout depends on whether momentum is zero; a dict from another layout would not load.
  HMER_CHECK((o.momentum() == 0) == (options_.momentum() == 0),
             "SGD: cannot load a state saved with momentum ", o.momentum(), " into an optimizer with momentum ",
             options_.momentum());
  options_ = o;
}

// ---- Momentum (Paddle) ------------------------------------------------------------------------------

PaddleMomentum::PaddleMomentum(std::vector<Tensor> params, const PaddleMomentumOptions& options)
    : PaddleMomentum(one_group(std::move(params)), options) {}

PaddleMomentum::PaddleMomentum(std::vector<ParamGroup> groups, const PaddleMomentumOptions& options)
    : Optimizer("momentum_paddle", std::move(groups), options.lr(), options.weight_decay()), options_(options) {
  check_options(options_);
}

std::string PaddleMomentum::describe() const {
  std::ostringstream os;
  os << "Momentum(variant=paddle, lr=" << param_groups()[0].lr << ", momentum=" << options_.momentum()
     << ", use_nesterov=" << (options_.nesterov() ? "true" : "false")
     << ", weight_decay(L2)=" << param_groups()[0].weight_decay << ")";
  return os.str();
}

void PaddleMomentum::update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) {
  float* p = param.data_ptr<float>();
  const float* gr = grad.data_ptr<float>();
  float* vel = st.buffers[0].data_ptr<float>();
  const int64_t n = param.numel();
  const bool decay = group.weight_decay != 0;
  // Paddle's attributes (mu, regularization_coeff) are float32 and the lr arrives as a float32
  // tensor of shape [1]; the CPU functor evaluates Eigen expressions, one rounding per operation.
  const float coeff = static_cast<float>(group.weight_decay);
  const float mu = static_cast<float>(options_.momentum());
  const float lr = static_cast<float>(group.lr);
  const bool nesterov = options_.nesterov();
  cpu::parallel_for(n, kUpdateGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float g = decay ? p[i] * coeff + gr[i] : gr[i];  // param * coeff + grad
      const float v = vel[i] * mu + g;
      vel[i] = v;
      p[i] = nesterov ? p[i] - (g + v * mu) * lr : p[i] - lr * v;
    }
  });
}

std::map<std::string, std::string> PaddleMomentum::options_to_scalars() const {
  return {{"lr", format_double(options_.lr())},
          {"momentum", format_double(options_.momentum())},
          {"weight_decay", format_double(options_.weight_decay())},
          {"nesterov", options_.nesterov() ? "1" : "0"}};
}

void PaddleMomentum::options_from_scalars(const std::map<std::string, std::string>& s) {
  PaddleMomentumOptions o = options_;
  o.lr(parse_double(scalar_at(s, "lr"), "option.lr"));
  o.momentum(parse_double(scalar_at(s, "momentum"), "option.momentum"));
  o.weight_decay(parse_double(scalar_at(s, "weight_decay"), "option.weight_decay"));
  o.nesterov(scalar_at(s, "nesterov") == "1");
  check_options(o);
  options_ = o;
}

}  // namespace hmer::optim
