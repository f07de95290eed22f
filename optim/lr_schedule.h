#pragma once
// Learning-rate schedules, evaluated per optimizer step at (epoch, step-in-epoch), both 0-based,
// with the closed forms (framework-semantics.md §10; PyTorch's recursive cosine differs from its
// closed form only by double rounding). A schedule maps a group's base lr (Optimizer::Group::
// initial_lr) to the lr of that step, so groups with different lrs are scaled alike.
//
//   constant                      base
//   step        (step_size, gamma) base · gamma^floor(t / step_size)
//   multistep   (milestones, gamma) base · gamma^(number of milestones <= t)
//   cosine      (T_max, eta_min)  eta_min + (base − eta_min)(1 + cos(π t / T_max)) / 2
//   two_step_cosine (T_max1, T_max2, eta_min)  cosine with period T_max1 while t <= T_max1, then
//               period T_max2 (PaddleOCR's TwoStepCosine as called by LinearWarmup, can-model §12)
//   warmup      (length, start_lr, end_lr = base, then) Paddle LinearWarmup: start + (end − start)·t /
//               length for t < length, then the inner schedule at t − length
//   can         the official CAN schedule (can-model.md §10): epoch 0 linear warm-up per step to
//               base at its last step, cosine with a first_period_epochs (200) period for epochs
//               1..first_period_epochs, then the total-epochs period (jumping back up)
//
// t counts epochs (unit: epoch, the default) or optimizer steps since the start (unit: step).
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace hmer::optim {

class Optimizer;

struct SchedulePoint {
  int64_t epoch = 0;  // 0-based
  int64_t step = 0;   // 0-based step within the epoch
  int64_t steps_per_epoch = 1;
};

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr(const SchedulePoint& at, double base_lr) const = 0;
  virtual std::string describe() const = 0;
};

enum class ScheduleUnit { Epoch, Step };
const char* unit_name(ScheduleUnit u);

// Schedules of a single counter t (epochs or global steps, by unit).
class CounterSchedule : public LrSchedule {
 public:
  explicit CounterSchedule(ScheduleUnit unit) : unit_(unit) {}
  double lr(const SchedulePoint& at, double base_lr) const final;
  virtual double lr_at(int64_t t, double base_lr) const = 0;
  ScheduleUnit unit() const { return unit_; }

 private:
  ScheduleUnit unit_;
};

class ConstantSchedule : public CounterSchedule {
 public:
  explicit ConstantSchedule(ScheduleUnit unit = ScheduleUnit::Epoch) : CounterSchedule(unit) {}
  double lr_at(int64_t, double base_lr) const override { return base_lr; }
  std::string describe() const override { return "constant"; }
};

class StepSchedule : public CounterSchedule {
 public:
  StepSchedule(int64_t step_size, double gamma, ScheduleUnit unit);
  double lr_at(int64_t t, double base_lr) const override;
  std::string describe() const override;

 private:
  int64_t step_size_;
  double gamma_;
};

class MultiStepSchedule : public CounterSchedule {
 public:
  MultiStepSchedule(std::vector<int64_t> milestones, double gamma, ScheduleUnit unit);
  double lr_at(int64_t t, double base_lr) const override;
  std::string describe() const override;

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

class CosineSchedule : public CounterSchedule {
 public:
  CosineSchedule(int64_t t_max, double eta_min, ScheduleUnit unit);
  double lr_at(int64_t t, double base_lr) const override;
  std::string describe() const override;

 private:
  int64_t t_max_;
  double eta_min_;
};

class TwoStepCosineSchedule : public CounterSchedule {
 public:
  TwoStepCosineSchedule(int64_t t_max1, int64_t t_max2, double eta_min, ScheduleUnit unit);
  double lr_at(int64_t t, double base_lr) const override;
  std::string describe() const override;

 private:
  int64_t t_max1_, t_max2_;
  double eta_min_;
};

class LinearWarmupSchedule : public CounterSchedule {
 public:
  // end_lr < 0 means "the group's base lr". The inner schedule counts in the same unit.
  LinearWarmupSchedule(std::unique_ptr<CounterSchedule> inner, int64_t length, double start_lr, double end_lr,
                       ScheduleUnit unit);
  double lr_at(int64_t t, double base_lr) const override;
  std::string describe() const override;

 private:
  std::unique_ptr<CounterSchedule> inner_;
  int64_t length_;
  double start_lr_, end_lr_;
};

class CanSchedule : public LrSchedule {
 public:
  explicit CanSchedule(int64_t epochs, int64_t first_period_epochs = 200);
  double lr(const SchedulePoint& at, double base_lr) const override;
  std::string describe() const override;

 private:
  int64_t epochs_, first_period_epochs_;
};

// Builds a schedule from a YAML map such as {type: cosine, T_max: 240, eta_min: 0, unit: epoch}.
// `epochs` (the run's total, or -1 when unknown) is the default of the can schedule's `epochs`.
// Errors name the path (e.g. "lr_schedule.then"), the type and the unknown or missing key.
std::unique_ptr<LrSchedule> schedule_from_yaml(const YAML::Node& node, int64_t epochs,
                                               const std::string& path = "lr_schedule");

// Sets every group's lr to schedule(at, group.initial_lr). Call before the forward pass of the step.
void apply_schedule(Optimizer& opt, const LrSchedule& schedule, const SchedulePoint& at);

// Writes "epoch,step,lr" and one row per step (shortest round-trip decimal lr).
void write_schedule_csv(std::ostream& os, const LrSchedule& schedule, double base_lr, int64_t epochs,
                        int64_t steps_per_epoch);

}  // namespace hmer::optim

// ---- strict YAML reading, shared by the schedule and optimizer builders ------------------------
namespace hmer::optim::yaml {

// Fails naming `path` and the first key of `map` that is not in `allowed` (listing the allowed ones).
void check_keys(const YAML::Node& map, const std::string& path, const std::vector<std::string>& allowed);
bool has(const YAML::Node& map, const std::string& key);
double get_double(const YAML::Node& map, const std::string& key, const std::string& path);  // required
double get_double(const YAML::Node& map, const std::string& key, const std::string& path, double fallback);
int64_t get_int(const YAML::Node& map, const std::string& key, const std::string& path);
int64_t get_int(const YAML::Node& map, const std::string& key, const std::string& path, int64_t fallback);
bool get_bool(const YAML::Node& map, const std::string& key, const std::string& path, bool fallback);
std::string get_string(const YAML::Node& map, const std::string& key, const std::string& path);
std::string get_string(const YAML::Node& map, const std::string& key, const std::string& path,
                       const std::string& fallback);
std::string lower(std::string s);

}  // namespace hmer::optim::yaml
