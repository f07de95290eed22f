#pragma once
// Training-health numbers and alarms:
//   HealthMonitor  fed once per optimizer step with optim/what_moved.h's rows (per-parameter gradient
//                  norm, update norm, update/weight ratio); aggregates them per logging interval and
//                  warns when updates stall (the update/weight ratio stays below a threshold for a
//                  window of steps: a schedule that decayed to nothing, an optimizer that ignores its
//                  lr, parameters that get no gradient)
//   check_finite   the non-finite check: names the first parameter (in named_parameters order) whose
//                  gradient, or value, is NaN or infinite
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/serialization.h"
#include "optim/what_moved.h"

namespace hmer::train {

struct HealthOptions {
  double stall_ratio = 1e-6;   // a step whose update/weight ratio is below this counts as stalled
  int64_t stall_window = 200;  // consecutive stalled steps before a warning (one per episode)
  bool per_parameter = true;   // also warn about single parameters that stall
};

// One parameter (or the total) over one logging interval.
struct ParamHealth {
  std::string name;
  int64_t numel = 0;
  int64_t steps = 0;
  double grad_norm_mean = 0, grad_norm_max = 0, grad_norm_last = 0;
  double ratio_mean = 0, ratio_min = 0, ratio_max = 0, ratio_last = 0;
  double weight_norm_last = 0, update_norm_last = 0;
};

struct HealthReport {
  int64_t first_step = -1, last_step = -1, steps = 0;
  std::vector<ParamHealth> params;  // in the order of the rows given to record()
  ParamHealth total;                // optim::total_motion per step, aggregated the same way

  // {first_step, last_step, steps, total: {...}, params: [{name, numel, grad_norm_mean, ...}]}
  nlohmann::ordered_json to_json() const;
  // Fixed-width table: one row per parameter, then the total.
  std::string format() const;
  // For TensorBoard: "health/grad_norm", "health/update_ratio" (interval means of the totals) and,
  // with per_param, "health/grad_norm/<name>" and "health/update_ratio/<name>".
  std::vector<std::pair<std::string, double>> scalars(bool per_param = false) const;
};

class HealthMonitor {
 public:
  explicit HealthMonitor(HealthOptions options = {});

  // Call after an optimizer step with the rows of optim::WhatMoved::finish() (or
  // optim::step_and_measure); every call must list the same parameters in the same order. `lr` is
  // only quoted in warnings. Returns the warnings raised at this step (usually none). The window
  // counts calls: a loop that measures only every k-th step (WhatMoved copies the weights) gets a
  // window of stall_window measured steps.
  std::vector<std::string> record(int64_t step, const std::vector<optim::ParamMotion>& rows,
                                  double lr = std::nan(""));
  // The aggregate since the previous take_report() (or construction); starts a new interval.
  HealthReport take_report();
  // The total ratio has been below stall_ratio for at least stall_window steps.
  bool stalled() const { return total_run_.length >= options_.stall_window; }

 private:
  struct Acc {
    std::string name;
    int64_t numel = 0, steps = 0;
    double g_sum = 0, g_max = 0, g_last = 0, r_sum = 0, r_min = 0, r_max = 0, r_last = 0, w_last = 0, u_last = 0;
    void add(const optim::ParamMotion& m);
    ParamHealth result() const;
  };
  struct StallRun {
    int64_t length = 0, start = 0;
    bool warned = false;
    bool update(bool stalled_now, int64_t step, int64_t window);  // true when a warning is due
  };

  HealthOptions options_;
  std::vector<Acc> params_;
  Acc total_;
  std::vector<StallRun> param_runs_;
  StallRun total_run_;
  int64_t first_step_ = -1, last_step_ = -1;
};

// Where a tensor first holds a NaN or an infinity.
struct NonFinite {
  std::string name;
  size_t index = 0;  // position in the list that was searched
  int64_t numel = 0, nan_count = 0, inf_count = 0;
  int64_t first_flat_index = -1;
  // "'decoder.word_embedding.weight' (3 NaN, 0 inf of 27750 elements; first at flat index 12)"
  std::string describe() const;
};

// The first parameter (in the given order, e.g. model.named_parameters()) whose .grad() holds a NaN
// or an infinity; parameters without a gradient are skipped.
std::optional<NonFinite> first_nonfinite_grad(const NamedTensors& params);
// The first tensor whose values hold a NaN or an infinity.
std::optional<NonFinite> first_nonfinite_value(const NamedTensors& tensors);

struct FiniteCheck {
  bool ok = true;
  std::string message;  // empty when ok; otherwise what went bad, naming the first parameter
};
// The per-step check, after backward() and before the optimizer step: the loss, then the gradients
// in named_parameters order; when the loss is bad, the weights too (a weight that already went bad
// explains it). Cost: one pass over the gradients (the weights only when the loss is bad).
FiniteCheck check_finite(int64_t step, double loss, const NamedTensors& params);

}  // namespace hmer::train
