#include "train/health.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"

namespace hmer::train {

namespace {

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

nlohmann::ordered_json health_json(const ParamHealth& h) {
  nlohmann::ordered_json j;
  j["name"] = h.name;
  j["numel"] = h.numel;
  j["steps"] = h.steps;
  j["grad_norm_mean"] = h.grad_norm_mean;
  j["grad_norm_max"] = h.grad_norm_max;
  j["grad_norm_last"] = h.grad_norm_last;
  j["ratio_mean"] = h.ratio_mean;
  j["ratio_min"] = h.ratio_min;
  j["ratio_max"] = h.ratio_max;
  j["ratio_last"] = h.ratio_last;
  j["weight_norm_last"] = h.weight_norm_last;
  j["update_norm_last"] = h.update_norm_last;
  return j;
}

template <class T>
void scan(const T* d, int64_t n, NonFinite& r) {
  for (int64_t i = 0; i < n; ++i) {
    const T v = d[i];
    if (std::isfinite(v)) continue;
    if (r.first_flat_index < 0) r.first_flat_index = i;
    if (std::isnan(v)) ++r.nan_count;
    else ++r.inf_count;
  }
}

// NaN/inf counts of a floating tensor (any device or layout); nullopt when all finite.
std::optional<NonFinite> scan_tensor(const std::string& name, size_t index, const Tensor& t) {
  NonFinite r;
  r.name = name;
  r.index = index;
  r.numel = t.numel();
  if (t.dtype() != DType::Float32 && t.dtype() != DType::Float64) return std::nullopt;  // integers are finite
  Tensor c = t.detach();
  if (!c.device().is_cpu()) c = c.to(Device::cpu());
  c = c.contiguous();
  if (c.dtype() == DType::Float32) scan(c.data_ptr<float>(), c.numel(), r);
  else scan(c.data_ptr<double>(), c.numel(), r);
  if (r.first_flat_index < 0) return std::nullopt;
  return r;
}

}  // namespace

// ---- HealthReport ------------------------------------------------------------------------------------

nlohmann::ordered_json HealthReport::to_json() const {
  nlohmann::ordered_json j;
  j["first_step"] = first_step;
  j["last_step"] = last_step;
  j["steps"] = steps;
  j["total"] = health_json(total);
  nlohmann::ordered_json ps = nlohmann::ordered_json::array();
  for (const auto& p : params) ps.push_back(health_json(p));
  j["params"] = ps;
  return j;
}

std::string HealthReport::format() const {
  size_t w = 5;
  for (const auto& p : params) w = std::max(w, p.name.size());
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "training health, steps %lld..%lld (%lld steps)\n", static_cast<long long>(first_step),
                static_cast<long long>(last_step), static_cast<long long>(steps));
  out += buf;
  std::snprintf(buf, sizeof(buf), "%-*s %10s %10s %10s %10s %10s %10s\n", static_cast<int>(w), "parameter", "numel",
                "|g| mean", "|g| max", "upd/w mean", "upd/w min", "|w|");
  out += buf;
  auto row = [&](const ParamHealth& p) {
    std::snprintf(buf, sizeof(buf), "%-*s %10lld %10.3e %10.3e %10.3e %10.3e %10.3e\n", static_cast<int>(w),
                  p.name.c_str(), static_cast<long long>(p.numel), p.grad_norm_mean, p.grad_norm_max, p.ratio_mean,
                  p.ratio_min, p.weight_norm_last);
    out += buf;
  };
  for (const auto& p : params) row(p);
  row(total);
  return out;
}

std::vector<std::pair<std::string, double>> HealthReport::scalars(bool per_param) const {
  std::vector<std::pair<std::string, double>> s = {{"health/grad_norm", total.grad_norm_mean},
                                                   {"health/update_ratio", total.ratio_mean}};
  if (per_param)
    for (const auto& p : params) {
      s.emplace_back("health/grad_norm/" + p.name, p.grad_norm_mean);
      s.emplace_back("health/update_ratio/" + p.name, p.ratio_mean);
    }
  return s;
}

// ---- HealthMonitor -----------------------------------------------------------------------------------

void HealthMonitor::Acc::add(const optim::ParamMotion& m) {
  numel = m.numel;
  g_sum += m.grad_norm;
  r_sum += m.ratio;
  g_max = steps == 0 ? m.grad_norm : std::max(g_max, m.grad_norm);
  r_min = steps == 0 ? m.ratio : std::min(r_min, m.ratio);
  r_max = steps == 0 ? m.ratio : std::max(r_max, m.ratio);
  g_last = m.grad_norm;
  r_last = m.ratio;
  w_last = m.weight_norm;
  u_last = m.update_norm;
  ++steps;
}

ParamHealth HealthMonitor::Acc::result() const {
  ParamHealth h;
  h.name = name;
  h.numel = numel;
  h.steps = steps;
  if (steps == 0) return h;
  h.grad_norm_mean = g_sum / static_cast<double>(steps);
  h.grad_norm_max = g_max;
  h.grad_norm_last = g_last;
  h.ratio_mean = r_sum / static_cast<double>(steps);
  h.ratio_min = r_min;
  h.ratio_max = r_max;
  h.ratio_last = r_last;
  h.weight_norm_last = w_last;
  h.update_norm_last = u_last;
  return h;
}

bool HealthMonitor::StallRun::update(bool stalled_now, int64_t step, int64_t window) {
  if (!stalled_now) {
    length = 0;
    warned = false;
    return false;
  }
  if (length == 0) start = step;
  ++length;
  if (length >= window && !warned) {
    warned = true;
    return true;
  }
  return false;
}

HealthMonitor::HealthMonitor(HealthOptions options) : options_(options) {
  HMER_CHECK(options_.stall_window >= 1, "HealthMonitor: stall_window must be >= 1, got ", options_.stall_window);
  HMER_CHECK(options_.stall_ratio >= 0, "HealthMonitor: stall_ratio must be >= 0, got ", options_.stall_ratio);
  total_.name = "total";
}

std::vector<std::string> HealthMonitor::record(int64_t step, const std::vector<optim::ParamMotion>& rows, double lr) {
  if (param_runs_.empty() && params_.empty()) {
    param_runs_.resize(rows.size());
  }
  HMER_CHECK(rows.size() == param_runs_.size(), "HealthMonitor::record: ", rows.size(),
             " parameters this step, ", param_runs_.size(), " before");
  if (params_.empty()) {
    params_.resize(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) params_[i].name = rows[i].name;
  }
  for (size_t i = 0; i < rows.size(); ++i)
    HMER_CHECK(rows[i].name == params_[i].name, "HealthMonitor::record: parameter ", i, " is '", rows[i].name,
               "', it was '", params_[i].name, "' before");
  if (first_step_ < 0) first_step_ = step;
  last_step_ = step;

  const optim::ParamMotion t = optim::total_motion(rows);
  total_.add(t);
  for (size_t i = 0; i < rows.size(); ++i) params_[i].add(rows[i]);

  std::vector<std::string> warnings;
  const int64_t W = options_.stall_window;
  const std::string lr_text = std::isnan(lr) ? "" : ", lr " + sci(lr);
  if (total_run_.update(t.ratio < options_.stall_ratio, step, W))
    warnings.push_back("updates stalled: the update/weight ratio of all parameters has stayed below " +
                       sci(options_.stall_ratio) + " for " + std::to_string(total_run_.length) + " steps (steps " +
                       std::to_string(total_run_.start) + ".." + std::to_string(step) + "; last " + sci(t.ratio) +
                       lr_text + "): the weights barely move");
  std::vector<std::string> no_grad, tiny;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!param_runs_[i].update(rows[i].ratio < options_.stall_ratio, step, W)) continue;
    if (!options_.per_parameter || total_run_.length >= W) continue;  // the total warning covers it
    (rows[i].grad_norm == 0 ? no_grad : tiny).push_back(rows[i].name);
  }
  auto list = [](const std::vector<std::string>& names) {
    std::string s;
    for (size_t i = 0; i < names.size() && i < 5; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > 5) s += " and " + std::to_string(names.size() - 5) + " more";
    return s;
  };
  if (!tiny.empty())
    warnings.push_back("updates stalled for " + std::to_string(tiny.size()) + " parameter(s) (update/weight ratio < " +
                       sci(options_.stall_ratio) + " for " + std::to_string(W) + " steps, up to step " +
                       std::to_string(step) + lr_text + "): " + list(tiny));
  if (!no_grad.empty())
    warnings.push_back(std::to_string(no_grad.size()) + " parameter(s) received no gradient for " + std::to_string(W) +
                       " steps (up to step " + std::to_string(step) + "): " + list(no_grad));
  return warnings;
}

HealthReport HealthMonitor::take_report() {
  HealthReport r;
  r.first_step = first_step_;
  r.last_step = last_step_;
  r.steps = total_.steps;
  r.total = total_.result();
  for (auto& a : params_) {
    r.params.push_back(a.result());
    const std::string name = a.name;
    a = Acc{};
    a.name = name;
  }
  total_ = Acc{};
  total_.name = "total";
  first_step_ = last_step_ = -1;
  return r;
}

// ---- non-finite checks -------------------------------------------------------------------------------

std::string NonFinite::describe() const {
  return "'" + name + "' (" + std::to_string(nan_count) + " NaN, " + std::to_string(inf_count) + " inf of " +
         std::to_string(numel) + " elements; first at flat index " + std::to_string(first_flat_index) + ")";
}

std::optional<NonFinite> first_nonfinite_grad(const NamedTensors& params) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor g = params[i].second.grad();
    if (!g.defined()) continue;
    if (auto r = scan_tensor(params[i].first, i, g)) return r;
  }
  return std::nullopt;
}

std::optional<NonFinite> first_nonfinite_value(const NamedTensors& tensors) {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (auto r = scan_tensor(tensors[i].first, i, tensors[i].second)) return r;
  return std::nullopt;
}

FiniteCheck check_finite(int64_t step, double loss, const NamedTensors& params) {
  FiniteCheck c;
  const std::string at = "step " + std::to_string(step) + ": ";
  if (std::isfinite(loss)) {
    if (auto g = first_nonfinite_grad(params)) {
      c.ok = false;
      c.message = at + "non-finite gradient (loss " + sci(loss) + " is finite); first parameter with a bad gradient " +
                  "(named_parameters order): " + g->describe();
    }
    return c;
  }
  c.ok = false;
  const std::string l = at + "loss is " + sci(loss);
  if (auto w = first_nonfinite_value(params))
    c.message = l + "; parameter " + w->describe() + " already holds non-finite values (first such parameter in " +
                "named_parameters order)";
  else if (auto g = first_nonfinite_grad(params))
    c.message = l + " with finite weights; first parameter with a non-finite gradient (named_parameters order): " +
                g->describe();
  else
    c.message = l + " although every weight and gradient is finite: the forward pass produced it (inputs, a log of 0, "
                    "an overflow in the loss)";
  return c;
}

}  // namespace hmer::train
