#pragma once
// CAN's training loop (can-model.md §10) driven by one YAML config:
//   per step: lr = schedule(epoch, step-in-epoch) set on every group BEFORE the forward pass;
//   zero_grad -> teacher-forced forward -> loss (CE + counting) -> backward -> non-finite check
//   (stop naming the first bad parameter, or skip the step) -> clip -> optimizer step (measured with
//   optim/what_moved.h for the health numbers and the update norm ||Δθ||).
//   Every eval_every_epochs epochs: greedy (or beam) ExpRate on the validation split; best weights
//   kept when it improves. Crash-safe "last" checkpoints (train/checkpoint.h) at every epoch end,
//   every checkpoint_every_steps steps and when stopping, holding everything an exact resume needs:
//   weights (official names), optimizer state, step, dropout RNG, loader cursor, interval sums.
//
// The config is the model config (models/model_config.h) plus two sections of ours, which are taken
// out before the model config is parsed:
//
//   data:
//     train: {layout: comer, root: data/synth_train}   # data/dataset.h DatasetConfig keys
//     valid: {layout: comer, root: data/synth_test}    # optional: no validation without it
//     valid_limit: 0            # evaluate on the first N validation samples (0 = all)
//     loader: {...}             # data/loader.h LoaderConfig keys; batch_size / seed default to
//                               # the top-level batch_size / seed
//   train:
//     run_dir: runs/<experiment>
//     eval_every_epochs: 1      # 0 = never during training
//     eval_beam: 1              # 1 = greedy (the official metric), > 1 = beam search
//     log_every_steps: 20       # metrics rows, TensorBoard scalars and health numbers
//     checkpoint_every_steps: 0 # 0 = only at epoch ends and when stopping
//     max_steps: 0              # stop (with a checkpoint) after this many optimizer steps in total
//     max_minutes: 0            # stop (with a checkpoint) at the first epoch end after this long
//     nonfinite: stop           # stop | skip: what a NaN / inf loss or gradient does
//     health_per_param: false   # per-parameter health scalars in TensorBoard
//     stall_ratio: 1.0e-6       # train/health.h: update/weight ratio below which a step stalls
//     stall_window: 200
//     progress: auto            # auto | tty | plain | off
//     device: cpu
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "models/can.h"
#include "models/model_config.h"

namespace hmer::train {

struct DataSection {
  data::DatasetConfig train;
  std::optional<data::DatasetConfig> valid;
  int64_t valid_limit = 0;
  data::LoaderConfig loader;
};

struct TrainSection {
  std::string run_dir;
  int64_t eval_every_epochs = 1;
  int64_t eval_beam = 1;
  int64_t log_every_steps = 20;
  int64_t checkpoint_every_steps = 0;
  int64_t max_steps = 0;
  double max_minutes = 0;
  bool skip_nonfinite = false;
  bool health_per_param = false;
  double stall_ratio = 1e-6;
  int64_t stall_window = 200;
  std::string progress = "auto";
};

// A whole training config: the model config plus our data / train sections.
struct TrainConfig {
  models::Config model;   // parsed from the document without data / train
  DataSection data;
  TrainSection train;
  YAML::Node root;        // the resolved document (after --set), as saved in RUN/config.yaml
  std::string source;
};

// Applies "dotted.key=value" to a YAML document (value parsed as YAML: numbers, booleans, lists).
// Creates missing maps on the way; the key is checked when the config is parsed.
void apply_override(YAML::Node& root, const std::string& assignment);
// Parses and validates; every unknown key is an error naming it.
TrainConfig parse_train_config(const YAML::Node& root, const std::string& source);
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});

// What the per-step hook sees, after the optimizer step (or the skip).
struct StepInfo {
  int64_t step = 0;        // 1-based: optimizer steps completed including this one
  int64_t epoch = 0;       // 0-based epoch of the batch
  int64_t batch = 0;       // position of the batch in its epoch
  int64_t batch_size = 0;  // images in the batch
  double loss = 0, word_loss = 0, counting_loss = 0;  // counting_loss 0 for DWAP
  double lr = 0;           // the lr the step used (group 0)
  double effective_lr = 0; // what the update formula applied (1 for Paddle <= 2.4 Adadelta)
  double grad_norm = 0;    // total gradient 2-norm before clipping
  double update_norm = 0;  // ||θ_after − θ_before|| over all parameters
  double update_ratio = 0; // update_norm / ||θ||
  bool skipped = false;    // non-finite and skipped: no update
};

struct EvalSummary {
  int64_t epoch = 0, step = 0;
  nlohmann::ordered_json metrics;  // MetricAccumulator::to_json()
};

// Hooks and overrides for programs that drive the trainer (tests, the divergence experiment).
struct TrainerHooks {
  // Called after every step; return false to stop (a checkpoint is written).
  std::function<bool(const StepInfo&)> on_step;
  std::function<void(const EvalSummary&)> on_eval;
  // Replaces the config's optim section (everything else equal between runs).
  std::optional<YAML::Node> optim_override;
  // Initial weights instead of the seeded initialisation (ignored when resuming).
  std::optional<NamedTensors> initial_weights;
  bool quiet = false;  // no console output (the log file is still written)
};

struct TrainResult {
  int64_t steps = 0, epochs_done = 0, skipped_steps = 0;
  double seconds = 0;
  double best_exprate = -1;  // -1 when never evaluated
  std::optional<nlohmann::ordered_json> last_eval;
  bool stopped_early = false;  // max_steps / max_minutes / hook
  std::string run_dir;
};

class Trainer {
 public:
  // resume: continue from cfg.train.run_dir's latest checkpoint (it must exist); otherwise the run
  // folder must hold no checkpoint yet.
  Trainer(TrainConfig cfg, bool resume, TrainerHooks hooks = {});
  ~Trainer();
  TrainResult run();

  models::CanModel& model();
  const TrainConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Loads and encodes a dataset against the vocabulary (unknown tokens per the vocab config).
std::shared_ptr<data::Dataset> load_encoded_dataset(const data::DatasetConfig& cfg, const data::Vocabulary& vocab,
                                                    const data::VocabConfig& vcfg);

}  // namespace hmer::train
