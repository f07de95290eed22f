#pragma once
// What moved in one optimizer step, per parameter: the gradient norm the step consumed, the norm of
// the change it made to the weights, and that change relative to the weights. By a common rule of
// thumb a healthy step moves weights by roughly 1e-4..1e-2 of their norm; an optimizer that is not
// learning (a learning rate decayed to 0, or Paddle <= 2.4 Adadelta taking full steps whatever the
// schedule says) shows up as ratios far outside that, so a "parameters barely move" stall can be
// diagnosed from a log.
#include <string>
#include <vector>

#include "core/tensor.h"
#include "optim/optimizer.h"

namespace hmer::optim {

struct ParamMotion {
  std::string name;
  int64_t numel = 0;
  double grad_norm = 0;    // ||g|| as handed to step() (after clipping); 0 without a gradient
  double weight_norm = 0;  // ||θ|| before the step
  double update_norm = 0;  // ||θ_after − θ_before||
  double ratio = 0;        // update_norm / weight_norm (update_norm itself when the weights are 0)
};

// Two-phase probe for loops that call step() themselves:
//   WhatMoved probe(opt);   // snapshots weights and gradient norms
//   opt.step();
//   auto rows = probe.finish();
class WhatMoved {
 public:
  explicit WhatMoved(const Optimizer& opt);
  WhatMoved(std::vector<Tensor> params, std::vector<std::string> names);
  std::vector<ParamMotion> finish() const;

 private:
  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::vector<Tensor> before_;
  std::vector<double> grad_norms_;
};

// Convenience: probe, opt.step(), finish.
std::vector<ParamMotion> step_and_measure(Optimizer& opt);

// Totals over all parameters: sqrt of summed squares, and the global update/weight ratio.
ParamMotion total_motion(const std::vector<ParamMotion>& rows);

// Fixed-width table (one row per parameter plus a total row), for logs.
std::string format_what_moved(const std::vector<ParamMotion>& rows);

}  // namespace hmer::optim
