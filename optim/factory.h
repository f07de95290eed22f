#pragma once
// Builds an optimizer, its lr schedule and its gradient clipping from a YAML map (the `optim:`
// section of a config such as configs/can.yaml):
//
//   optimizer: adadelta            # adadelta | sgd | momentum | adam | adamw (case-insensitive)
//   variant: torch                 # torch (default) | paddle (adadelta, sgd, momentum)
//   lr: 1.0                        # per optimizer default when absent (torch SGD requires it)
//   rho: 0.9                       # adadelta          eps: 1.0e-6   (adadelta, adam, adamw)
//   weight_decay: 1.0e-4           # coupled L2 (adam: L2; adamw: decoupled; paddle: L2 after clipping)
//   momentum: 0.9  dampening: 0  nesterov: false          # sgd / momentum
//   betas: [0.9, 0.999]  amsgrad: false                   # adam / adamw
//   paddle_aliased_update: false   # paddle adadelta only (see optim/adadelta.h)
//   lr_schedule: {type: can}       # optim/lr_schedule.h; absent = constant
//   gradient_clip: 100             # global-norm clip (form follows the variant), or a map
//                                  # {type: norm, max_norm: 100, form: torch|paddle,
//                                  #  error_if_nonfinite: false, norm_type: 2}, {type: value,
//                                  #  clip_value: 1}, or false / absent for none
//
// Unknown keys, keys that do not apply to the chosen optimizer and missing required keys are
// errors naming the key and its path.
#include <memory>
#include <string>
#include <vector>

#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"

namespace YAML {
class Node;
}

namespace hmer::optim {

struct OptimSetup {
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<LrSchedule> schedule;
  ClipConfig clip;
  std::string describe() const;  // three lines: optimizer, lr schedule, gradient clip
};

// `epochs` is the run's total (the default of the can schedule's `epochs`), -1 if unknown.
OptimSetup build_optim(const YAML::Node& node, std::vector<ParamGroup> groups, int64_t epochs = -1,
                       const std::string& path = "optim");

// The parts that need no parameters, for `hmer schedule`.
struct ScheduleSpec {
  std::unique_ptr<LrSchedule> schedule;
  double base_lr = 0;       // the configured lr (or the optimizer's default)
  bool lr_ignored = false;  // Paddle <= 2.4 Adadelta: the optimizer applies no lr at all
  std::string optimizer;    // e.g. "adadelta (torch)"
};
ScheduleSpec build_schedule_spec(const YAML::Node& node, int64_t epochs = -1, const std::string& path = "optim");

ClipConfig clip_from_yaml(const YAML::Node& node, ClipForm default_form, const std::string& path);

// The optimizer section of a whole config: its `optim` map. Fails naming `file` when absent.
YAML::Node optim_section(const YAML::Node& root, const std::string& file);
// The run length of a whole config: top-level `epochs`, or -1.
int64_t config_epochs(const YAML::Node& root, const std::string& file);

}  // namespace hmer::optim
