#include "optim/what_moved.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/error.h"

namespace hmer::optim {

namespace {

double norm_f32(const Tensor& t) {
  const float* d = t.data_ptr<float>();
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += static_cast<double>(d[i]) * d[i];
  return std::sqrt(s);
}

}  // namespace

WhatMoved::WhatMoved(const Optimizer& opt) : WhatMoved(opt.parameters(), opt.parameter_names()) {}

WhatMoved::WhatMoved(std::vector<Tensor> params, std::vector<std::string> names)
    : params_(std::move(params)), names_(std::move(names)) {
  HMER_CHECK(names_.size() == params_.size(), "WhatMoved: ", params_.size(), " parameters but ", names_.size(),
             " names");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    HMER_CHECK(p.defined() && p.dtype() == DType::Float32 && p.device().is_cpu() && p.is_contiguous(),
               "WhatMoved: parameter '", names_[i], "' must be a contiguous float32 cpu tensor");
    before_.push_back(p.detach().clone());
    const Tensor g = p.grad();
    grad_norms_.push_back(g.defined() ? norm_f32(g.contiguous()) : 0.0);
  }
}

std::vector<ParamMotion> WhatMoved::finish() const {
  std::vector<ParamMotion> rows;
  for (size_t k = 0; k < params_.size(); ++k) {
    const float* a = params_[k].data_ptr<float>();
    const float* b = before_[k].data_ptr<float>();
    double w = 0, u = 0;
    for (int64_t i = 0; i < params_[k].numel(); ++i) {
      const double d = static_cast<double>(a[i]) - b[i];  // exact for floats of similar magnitude
      u += d * d;
      w += static_cast<double>(b[i]) * b[i];
    }
    ParamMotion m;
    m.name = names_[k];
    m.numel = params_[k].numel();
    m.grad_norm = grad_norms_[k];
    m.weight_norm = std::sqrt(w);
    m.update_norm = std::sqrt(u);
    m.ratio = m.weight_norm > 0 ? m.update_norm / m.weight_norm : m.update_norm;
    rows.push_back(m);
  }
  return rows;
}

std::vector<ParamMotion> step_and_measure(Optimizer& opt) {
  WhatMoved probe(opt);
  opt.step();
  return probe.finish();
}

ParamMotion total_motion(const std::vector<ParamMotion>& rows) {
  ParamMotion t;
  t.name = "total";
  double g = 0, w = 0, u = 0;
  for (const auto& r : rows) {
    t.numel += r.numel;
    g += r.grad_norm * r.grad_norm;
    w += r.weight_norm * r.weight_norm;
    u += r.update_norm * r.update_norm;
  }
  t.grad_norm = std::sqrt(g);
  t.weight_norm = std::sqrt(w);
  t.update_norm = std::sqrt(u);
  t.ratio = t.weight_norm > 0 ? t.update_norm / t.weight_norm : t.update_norm;
  return t;
}

std::string format_what_moved(const std::vector<ParamMotion>& rows) {
  size_t width = 5;
  for (const auto& r : rows) width = std::max(width, r.name.size());
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof(line), "%-*s %10s %12s %12s %12s %10s\n", static_cast<int>(width), "param", "numel",
                "grad_norm", "weight_norm", "update_norm", "upd/weight");
  os << line;
  auto row = [&](const ParamMotion& r) {
    std::snprintf(line, sizeof(line), "%-*s %10lld %12.4e %12.4e %12.4e %10.3e\n", static_cast<int>(width),
                  r.name.c_str(), static_cast<long long>(r.numel), r.grad_norm, r.weight_norm, r.update_norm,
                  r.ratio);
    os << line;
  };
  for (const auto& r : rows) row(r);
  row(total_motion(rows));
  return os.str();
}

}  // namespace hmer::optim
