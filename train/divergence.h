#pragma once
// The divergence experiment (issue 6, framework-semantics.md §1.3): one model, one initial state
// (seeded init written once to DIR/init_weights.safetensors and loaded by every run), one data order
// (one loader seed), one dropout stream, one gradient clip; only the optimizer differs:
//
//   torch         Adadelta, PyTorch semantics, CAN's warm-up + cosine schedule (θ ← θ − lr_t·Δ)
//   paddle        Adadelta, Paddle <= 2.4 semantics, the same schedule, which it ignores (θ ← θ − Δ)
//   torch_const   Adadelta torch at a constant lr 1    } mathematically the same update: they must
//   paddle_const  Adadelta paddle (lr has no effect)   } coincide up to float rounding
//   sgd_torch     torch.optim.SGD with momentum, the schedule   } the same update for both: they
//   sgd_paddle    paddle.optimizer.Momentum, the schedule        } nearly coincide
//   torch_const_ulp  torch_const with eps one float32 ulp higher  } rounding baselines: how far two runs
//   sgd_torch_ulp    sgd_torch with momentum one ulp higher       } drift that differ by one rounding
//
// The config is a training config (train/trainer.h) plus a `divergence:` section, removed before
// the training config is parsed:
//
//   divergence:
//     runs: [torch, paddle, torch_const, paddle_const, sgd_torch, sgd_paddle, torch_const_ulp,
//            sgd_torch_ulp]   # default: all eight
//     adadelta: {lr: 1.0, rho: 0.9, eps: 1.0e-6, weight_decay: 1.0e-4}   # shared by the 4 Adadelta runs
//     sgd: {lr: 0.02, momentum: 0.9, weight_decay: 1.0e-4}                # shared by the 2 SGD runs
//     lr_schedule: {type: can, first_period_epochs: 10}   # default: the config's optim.lr_schedule
//     gradient_clip: {type: norm, max_norm: 100, form: torch}   # the same rule for every run
//     synth: {dir: data/div_quick, train: 800, valid: 100, seed: 7, max_tokens: 12}
//                   # optional: `hmer synth` data made once into dir/{train,valid} (kept and reused)
//                   # and used as data.train / data.valid
//     eval_limit: 0           # final ExpRate on the first N validation samples (0: data.valid_limit)
//
// Outputs in DIR: summary.json, report.md, per_step.csv, evals.csv, details.json (control checks,
// per-phase means, wall times), curves.png, config.yaml, init_weights.safetensors, runs/<name>/.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

namespace hmer::train {

// The eight runs, in report order.
const std::vector<std::string>& divergence_run_names();

struct DivergenceSettings {
  std::vector<std::string> runs;
  YAML::Node adadelta, sgd, lr_schedule, gradient_clip;  // maps
  int64_t eval_limit = 0;
  // synth data
  bool synth = false;
  std::string synth_dir;
  int64_t synth_train = 0, synth_valid = 0, synth_max_tokens = 12;
  uint64_t synth_seed = 1;
};

// Reads (and removes from `root`) the divergence section; unknown keys are errors naming them.
DivergenceSettings take_divergence_settings(YAML::Node& root, const std::string& source);
// The optim map of one run (an `optim:` section for optim/factory.h).
YAML::Node divergence_optim(const DivergenceSettings& s, const std::string& run);

struct DivergenceStep {
  int64_t step = 0, epoch = 0, batch = 0;
  double loss = 0, word_loss = 0, counting_loss = 0;
  double lr = 0;              // the scheduled lr of the step
  double effective_lr = 0;    // what the update formula applied (1 for Paddle Adadelta)
  double grad_norm = 0;       // before clipping
  double effective_step = 0;  // ||θ_after − θ_before||: lr·||Δ|| for torch, ||Δ|| for Paddle
  double update_ratio = 0;
};

struct DivergenceEval {
  int64_t step = 0, epoch = 0;
  double exprate = 0;
};

struct DivergenceRun {
  std::string name;
  std::vector<DivergenceStep> steps;
  std::vector<DivergenceEval> evals;
  std::optional<double> exprate;  // final, percent
  double seconds = 0;
  std::string optimizer;          // describe() of the setup
};

struct DivergenceOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // --set key=value, applied before the section is taken out
  std::string out_dir;
  bool verbose = true;  // one progress line per epoch and run on stdout
};

struct DivergenceResult {
  std::vector<DivergenceRun> runs;
  nlohmann::ordered_json summary;  // exactly what summary.json holds
  nlohmann::ordered_json details;  // details.json: controls, phases, timings
  double seconds = 0;
};

DivergenceResult run_divergence(const DivergenceOptions& options);

// ---- the analysis, exposed for tests -----------------------------------------------------------

// |a − b| / max(|a|, tiny): the relative difference used by every check.
double relative_difference(double a, double b);
// First step (1-based step numbers of `a`) where the losses differ by more than `rel`; -1 if never.
int64_t separation_step(const std::vector<DivergenceStep>& a, const std::vector<DivergenceStep>& b, double rel = 0.01);
// Largest relative loss difference over the first `n` common steps.
double max_relative_loss_difference(const std::vector<DivergenceStep>& a, const std::vector<DivergenceStep>& b,
                                    int64_t n);
// The "within rounding" verdict of a control pair: its onset (first step over the tolerance, -1 if
// never) is never, or at least half its one-ulp baseline's onset. A baseline that never separates
// while the pair does is not rounding.
bool within_rounding(int64_t pair_onset, int64_t baseline_onset);
// Mean training loss over the last epoch the run reached.
double final_loss(const DivergenceRun& run);
// Mean effective step over the last `fraction` of the steps (at least one step).
double effective_step_last(const DivergenceRun& run, double fraction = 0.05);

// Schedule phases by epoch: "warmup" (epoch 0), "cosine 1" (1..first_period), "restart" (after);
// for schedules other than CAN's a single phase "all".
struct PhaseSplit {
  bool can = false;
  int64_t first_period_epochs = 0;
  std::string phase(int64_t epoch) const;
  std::vector<std::string> names() const;
};
PhaseSplit phase_split(const YAML::Node& lr_schedule);

// Re-draws DIR/curves.png from DIR/per_step.csv, DIR/evals.csv and DIR/config.yaml of an earlier
// invocation (`hmer divergence --replot DIR`); returns the runs read back.
std::vector<DivergenceRun> replot_divergence(const std::string& out_dir);

// Writes DIR/curves.png from the runs (loss, ExpRate at eval points, effective step on a log axis).
void write_divergence_plot(const std::string& path, const std::vector<DivergenceRun>& runs, const PhaseSplit& phases,
                           const std::string& title);

}  // namespace hmer::train
