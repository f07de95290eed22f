#include "optim/lr_schedule.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numbers>
#include <ostream>
#include <sstream>

#include "core/error.h"
#include "optim/optimizer.h"

namespace hmer::optim {

// ---- strict YAML reading ------------------------------------------------------------------------
namespace yaml {

namespace {
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

YAML::Node required(const YAML::Node& map, const std::string& key, const std::string& path) {
  const YAML::Node n = map[key];
  HMER_CHECK(n.IsDefined() && !n.IsNull(), path, ": missing key '", key, "'");
  return n;
}

template <class T>
T convert(const YAML::Node& n, const std::string& where, const char* what) {
  HMER_CHECK(n.IsScalar(), where, ": expected ", what);
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail(where, ": expected ", what, ", got '", n.Scalar(), "'");
  }
}
}  // namespace

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void check_keys(const YAML::Node& map, const std::string& path, const std::vector<std::string>& allowed) {
  HMER_CHECK(map.IsMap(), path, ": expected a map of keys");
  for (const auto& kv : map) {
    const std::string k = kv.first.as<std::string>();
    HMER_CHECK(std::find(allowed.begin(), allowed.end(), k) != allowed.end(), path, ": unknown key '", k,
               "' (allowed: ", join(allowed), ")");
  }
}

bool has(const YAML::Node& map, const std::string& key) {
  const YAML::Node n = map[key];
  return n.IsDefined() && !n.IsNull();
}

double get_double(const YAML::Node& map, const std::string& key, const std::string& path) {
  return convert<double>(required(map, key, path), path + "." + key, "a number");
}
double get_double(const YAML::Node& map, const std::string& key, const std::string& path, double fallback) {
  return has(map, key) ? get_double(map, key, path) : fallback;
}
int64_t get_int(const YAML::Node& map, const std::string& key, const std::string& path) {
  return convert<int64_t>(required(map, key, path), path + "." + key, "an integer");
}
int64_t get_int(const YAML::Node& map, const std::string& key, const std::string& path, int64_t fallback) {
  return has(map, key) ? get_int(map, key, path) : fallback;
}
bool get_bool(const YAML::Node& map, const std::string& key, const std::string& path, bool fallback) {
  return has(map, key) ? convert<bool>(map[key], path + "." + key, "true or false") : fallback;
}
std::string get_string(const YAML::Node& map, const std::string& key, const std::string& path) {
  return convert<std::string>(required(map, key, path), path + "." + key, "a string");
}
std::string get_string(const YAML::Node& map, const std::string& key, const std::string& path,
                       const std::string& fallback) {
  return has(map, key) ? get_string(map, key, path) : fallback;
}

}  // namespace yaml

// ---- schedules -----------------------------------------------------------------------------------

const char* unit_name(ScheduleUnit u) { return u == ScheduleUnit::Epoch ? "epoch" : "step"; }

namespace {
void check_point(const SchedulePoint& at) {
  HMER_CHECK(at.steps_per_epoch > 0, "lr schedule: steps_per_epoch must be positive, got ", at.steps_per_epoch);
  HMER_CHECK(at.epoch >= 0 && at.step >= 0 && at.step < at.steps_per_epoch, "lr schedule: invalid point (epoch ",
             at.epoch, ", step ", at.step, ") with ", at.steps_per_epoch, " steps per epoch");
}

double half_cosine(double base, double eta_min, int64_t t, int64_t period) {
  // Paddle's and torch's closed form, in their order of operations.
  return eta_min + (base - eta_min) * (1 + std::cos(std::numbers::pi * static_cast<double>(t) /
                                                    static_cast<double>(period))) / 2;
}
}  // namespace

double CounterSchedule::lr(const SchedulePoint& at, double base_lr) const {
  check_point(at);
  const int64_t t = unit_ == ScheduleUnit::Epoch ? at.epoch : at.epoch * at.steps_per_epoch + at.step;
  return lr_at(t, base_lr);
}

StepSchedule::StepSchedule(int64_t step_size, double gamma, ScheduleUnit unit)
    : CounterSchedule(unit), step_size_(step_size), gamma_(gamma) {
  HMER_CHECK(step_size > 0, "step schedule: step_size must be positive, got ", step_size);
}
double StepSchedule::lr_at(int64_t t, double base_lr) const {
  return base_lr * std::pow(gamma_, static_cast<double>(t / step_size_));
}
std::string StepSchedule::describe() const {
  std::ostringstream os;
  os << "step(step_size=" << step_size_ << " " << unit_name(unit()) << "s, gamma=" << gamma_ << ")";
  return os.str();
}

MultiStepSchedule::MultiStepSchedule(std::vector<int64_t> milestones, double gamma, ScheduleUnit unit)
    : CounterSchedule(unit), milestones_(std::move(milestones)), gamma_(gamma) {
  HMER_CHECK(std::is_sorted(milestones_.begin(), milestones_.end()),
             "multistep schedule: milestones must be increasing");
}
double MultiStepSchedule::lr_at(int64_t t, double base_lr) const {
  // bisect_right: a milestone m applies from t = m on.
  const auto k = std::upper_bound(milestones_.begin(), milestones_.end(), t) - milestones_.begin();
  return base_lr * std::pow(gamma_, static_cast<double>(k));
}
std::string MultiStepSchedule::describe() const {
  std::ostringstream os;
  os << "multistep(milestones=[";
  for (size_t i = 0; i < milestones_.size(); ++i) os << (i ? ", " : "") << milestones_[i];
  os << "] " << unit_name(unit()) << "s, gamma=" << gamma_ << ")";
  return os.str();
}

CosineSchedule::CosineSchedule(int64_t t_max, double eta_min, ScheduleUnit unit)
    : CounterSchedule(unit), t_max_(t_max), eta_min_(eta_min) {
  HMER_CHECK(t_max > 0, "cosine schedule: T_max must be positive, got ", t_max);
}
double CosineSchedule::lr_at(int64_t t, double base_lr) const { return half_cosine(base_lr, eta_min_, t, t_max_); }
std::string CosineSchedule::describe() const {
  std::ostringstream os;
  os << "cosine(T_max=" << t_max_ << " " << unit_name(unit()) << "s, eta_min=" << eta_min_ << ")";
  return os.str();
}

TwoStepCosineSchedule::TwoStepCosineSchedule(int64_t t_max1, int64_t t_max2, double eta_min, ScheduleUnit unit)
    : CounterSchedule(unit), t_max1_(t_max1), t_max2_(t_max2), eta_min_(eta_min) {
  HMER_CHECK(t_max1 > 0 && t_max2 > 0, "two_step_cosine schedule: T_max1 and T_max2 must be positive, got ", t_max1,
             " and ", t_max2);
}
double TwoStepCosineSchedule::lr_at(int64_t t, double base_lr) const {
  return half_cosine(base_lr, eta_min_, t, t <= t_max1_ ? t_max1_ : t_max2_);
}
std::string TwoStepCosineSchedule::describe() const {
  std::ostringstream os;
  os << "two_step_cosine(T_max1=" << t_max1_ << ", T_max2=" << t_max2_ << " " << unit_name(unit())
     << "s, eta_min=" << eta_min_ << ")";
  return os.str();
}

LinearWarmupSchedule::LinearWarmupSchedule(std::unique_ptr<CounterSchedule> inner, int64_t length, double start_lr,
                                           double end_lr, ScheduleUnit unit)
    : CounterSchedule(unit), inner_(std::move(inner)), length_(length), start_lr_(start_lr), end_lr_(end_lr) {
  HMER_CHECK(inner_ != nullptr, "warmup schedule: no inner schedule");
  HMER_CHECK(length > 0, "warmup schedule: length must be positive, got ", length);
  HMER_CHECK(inner_->unit() == unit, "warmup schedule: the inner schedule counts ", unit_name(inner_->unit()),
             "s but the warm-up counts ", unit_name(unit), "s");
}
double LinearWarmupSchedule::lr_at(int64_t t, double base_lr) const {
  if (t < length_) {
    const double end = end_lr_ < 0 ? base_lr : end_lr_;
    return (end - start_lr_) * static_cast<double>(t) / static_cast<double>(length_) + start_lr_;
  }
  return inner_->lr_at(t - length_, base_lr);
}
std::string LinearWarmupSchedule::describe() const {
  std::ostringstream os;
  os << "warmup(length=" << length_ << " " << unit_name(unit()) << "s, start_lr=" << start_lr_ << ", end_lr=";
  if (end_lr_ < 0) os << "base";
  else os << end_lr_;
  os << ") then " << inner_->describe();
  return os.str();
}

CanSchedule::CanSchedule(int64_t epochs, int64_t first_period_epochs)
    : epochs_(epochs), first_period_epochs_(first_period_epochs) {
  HMER_CHECK(epochs > 0, "can schedule: epochs must be positive, got ", epochs);
  HMER_CHECK(first_period_epochs > 0, "can schedule: first_period_epochs must be positive, got ",
             first_period_epochs);
}
double CanSchedule::lr(const SchedulePoint& at, double base_lr) const {
  check_point(at);
  const int64_t e = at.epoch, s = at.step, S = at.steps_per_epoch;
  // The official update_lr, in its order of operations (Python doubles).
  if (e < 1) return base_lr / static_cast<double>(S) * static_cast<double>(s + 1);
  const double n = static_cast<double>(s + 1 + (e - 1) * S);
  const int64_t period = e <= first_period_epochs_ ? first_period_epochs_ : epochs_;
  return 0.5 * (1 + std::cos(n * std::numbers::pi / static_cast<double>(period * S))) * base_lr;
}
std::string CanSchedule::describe() const {
  std::ostringstream os;
  os << "can(warm-up over epoch 0, cosine period " << first_period_epochs_ << " epochs for epochs 1.."
     << first_period_epochs_ << ", then period " << epochs_ << " epochs)";
  return os.str();
}

// ---- YAML ----------------------------------------------------------------------------------------

namespace {

ScheduleUnit read_unit(const YAML::Node& node, const std::string& path, ScheduleUnit fallback) {
  if (!yaml::has(node, "unit")) return fallback;
  const std::string u = yaml::lower(yaml::get_string(node, "unit", path));
  if (u == "epoch") return ScheduleUnit::Epoch;
  if (u == "step") return ScheduleUnit::Step;
  fail(path, ".unit: '", u, "' is not a unit (expected epoch or step)");
}

std::unique_ptr<CounterSchedule> counter_from_yaml(const YAML::Node& node, const std::string& path,
                                                   const std::string& type, ScheduleUnit default_unit,
                                                   bool unit_fixed) {
  const ScheduleUnit unit = read_unit(node, path, default_unit);
  if (unit_fixed && unit != default_unit)
    fail(path, ".unit: the schedule after a warm-up counts in the warm-up's unit (", unit_name(default_unit), ")");
  if (type == "constant") {
    yaml::check_keys(node, path, {"type", "unit"});
    return std::make_unique<ConstantSchedule>(unit);
  }
  if (type == "step") {
    yaml::check_keys(node, path, {"type", "unit", "step_size", "gamma"});
    return std::make_unique<StepSchedule>(yaml::get_int(node, "step_size", path),
                                          yaml::get_double(node, "gamma", path, 0.1), unit);
  }
  if (type == "multistep") {
    yaml::check_keys(node, path, {"type", "unit", "milestones", "gamma"});
    const YAML::Node m = node["milestones"];
    HMER_CHECK(m.IsDefined() && !m.IsNull(), path, ": missing key 'milestones'");
    HMER_CHECK(m.IsSequence(), path, ".milestones: expected a list of integers");
    std::vector<int64_t> ms;
    for (size_t i = 0; i < m.size(); ++i) {
      try {
        ms.push_back(m[i].as<int64_t>());
      } catch (const YAML::Exception&) {
        fail(path, ".milestones[", i, "]: expected an integer");
      }
    }
    return std::make_unique<MultiStepSchedule>(std::move(ms), yaml::get_double(node, "gamma", path, 0.1), unit);
  }
  if (type == "cosine") {
    yaml::check_keys(node, path, {"type", "unit", "T_max", "eta_min"});
    return std::make_unique<CosineSchedule>(yaml::get_int(node, "T_max", path),
                                            yaml::get_double(node, "eta_min", path, 0.0), unit);
  }
  if (type == "two_step_cosine") {
    yaml::check_keys(node, path, {"type", "unit", "T_max1", "T_max2", "eta_min"});
    return std::make_unique<TwoStepCosineSchedule>(yaml::get_int(node, "T_max1", path),
                                                   yaml::get_int(node, "T_max2", path),
                                                   yaml::get_double(node, "eta_min", path, 0.0), unit);
  }
  if (type == "warmup") {
    yaml::check_keys(node, path, {"type", "unit", "length", "start_lr", "end_lr", "then"});
    const YAML::Node inner = node["then"];
    std::unique_ptr<CounterSchedule> in;
    if (!inner.IsDefined() || inner.IsNull()) {
      in = std::make_unique<ConstantSchedule>(unit);
    } else {
      HMER_CHECK(inner.IsMap(), path, ".then: expected a schedule map with a 'type'");
      const std::string inner_type = yaml::lower(yaml::get_string(inner, "type", path + ".then"));
      HMER_CHECK(inner_type != "can", path, ".then: the can schedule has its own warm-up and cannot be wrapped");
      in = counter_from_yaml(inner, path + ".then", inner_type, unit, true);
    }
    const double end_lr = yaml::get_double(node, "end_lr", path, -1.0);
    HMER_CHECK(!yaml::has(node, "end_lr") || end_lr >= 0, path, ".end_lr: must be >= 0");
    return std::make_unique<LinearWarmupSchedule>(std::move(in), yaml::get_int(node, "length", path),
                                                  yaml::get_double(node, "start_lr", path, 0.0), end_lr, unit);
  }
  fail(path, ".type: unknown schedule '", type,
       "' (expected constant, step, multistep, cosine, two_step_cosine, warmup or can)");
}

}  // namespace

std::unique_ptr<LrSchedule> schedule_from_yaml(const YAML::Node& node, int64_t epochs, const std::string& path) {
  if (!node.IsDefined() || node.IsNull()) return std::make_unique<ConstantSchedule>();
  if (node.IsScalar()) {
    // Shorthand "lr_schedule: cosine" is ambiguous about its period; only constant is accepted.
    const std::string t = yaml::lower(node.Scalar());
    HMER_CHECK(t == "constant" || t == "none", path, ": '", node.Scalar(),
               "' needs its parameters; write a map such as {type: ", t, ", ...}");
    return std::make_unique<ConstantSchedule>();
  }
  HMER_CHECK(node.IsMap(), path, ": expected a map with a 'type'");
  const std::string type = yaml::lower(yaml::get_string(node, "type", path));
  if (type == "can") {
    yaml::check_keys(node, path, {"type", "epochs", "first_period_epochs"});
    const int64_t e = yaml::get_int(node, "epochs", path, epochs);
    HMER_CHECK(e > 0, path, ": the can schedule needs the number of epochs (key 'epochs' here or at the top of "
               "the config)");
    return std::make_unique<CanSchedule>(e, yaml::get_int(node, "first_period_epochs", path, 200));
  }
  return counter_from_yaml(node, path, type, ScheduleUnit::Epoch, false);
}

void apply_schedule(Optimizer& opt, const LrSchedule& schedule, const SchedulePoint& at) {
  for (auto& g : opt.param_groups()) g.lr = schedule.lr(at, g.initial_lr);
}

void write_schedule_csv(std::ostream& os, const LrSchedule& schedule, double base_lr, int64_t epochs,
                        int64_t steps_per_epoch) {
  HMER_CHECK(epochs > 0 && steps_per_epoch > 0, "write_schedule_csv: epochs (", epochs, ") and steps_per_epoch (",
             steps_per_epoch, ") must be positive");
  os << "epoch,step,lr\n";
  std::string line;
  for (int64_t e = 0; e < epochs; ++e) {
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      line = std::to_string(e);
      line += ',';
      line += std::to_string(s);
      line += ',';
      line += format_double(schedule.lr({e, s, steps_per_epoch}, base_lr));
      line += '\n';
      os << line;
    }
  }
}

}  // namespace hmer::optim
