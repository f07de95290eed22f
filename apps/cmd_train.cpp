// `hmer train`: CAN's training loop from a YAML config (train/trainer.h).
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/error.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace hmer::app {

namespace {

const char* kUsage =
    "usage: hmer train --config FILE [--set key=value ...] [--resume RUN_DIR]\n"
    "\n"
    "Trains the model of the config (CAN or DWAP) with CAN's loop: the lr of every step set from the\n"
    "schedule before the forward pass, teacher forcing, gradient clipping, the optimizer step; evaluates\n"
    "on data.valid every train.eval_every_epochs epochs and keeps the best weights; writes crash-safe\n"
    "checkpoints, metrics (CSV, JSONL, TensorBoard) and the resolved config to train.run_dir\n"
    "(default runs/<experiment>). See docs/training_loop.md for every key.\n"
    "\n"
    "options:\n"
    "  --config FILE        the config (with --resume: default RUN_DIR/config.yaml)\n"
    "  --set key=value      override a config value by its dotted key (repeatable), e.g.\n"
    "                       --set optim.lr=0.5 --set train.max_steps=100 --set epochs=3\n"
    "  --resume RUN_DIR     continue the run in RUN_DIR exactly where its last checkpoint left off\n";

}  // namespace

int cmd_train(const std::vector<std::string>& args) {
  std::string config, resume;
  std::vector<std::string> sets;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    const bool known = a == "--config" || a == "--set" || a == "--resume";
    HMER_CHECK(known, "unknown argument '", a, "'\n\n", kUsage);
    const std::string& v = option_value(args, i, kUsage);
    if (a == "--config") config = v;
    else if (a == "--set") sets.push_back(v);
    else resume = v;
  }
  if (config.empty()) {
    HMER_CHECK(!resume.empty(), "--config is required\n\n", kUsage);
    config = train::RunDir(resume).config_path();
  }
  if (!resume.empty()) sets.push_back("train.run_dir=" + resume);
  train::TrainConfig cfg = train::load_train_config(config, sets);

  // Test-only: HMER_TEST_KILL_AT_CHECKPOINT="<stage>:<n>" SIGKILLs this process at the n-th time
  // (1-based) save_last reaches <stage>, so a test can check that a kill mid-save leaves a usable
  // latest checkpoint.
  if (const char* kill_at = std::getenv("HMER_TEST_KILL_AT_CHECKPOINT")) {
    const std::string spec = kill_at;
    const size_t colon = spec.find(':');
    HMER_CHECK(colon != std::string::npos, "HMER_TEST_KILL_AT_CHECKPOINT: expected <stage>:<n>");
    const std::string stage = spec.substr(0, colon);
    const int target = std::stoi(spec.substr(colon + 1));
    train::set_checkpoint_fault_hook([stage, target, count = 0](std::string_view s) mutable {
      if (s == stage && ++count == target) std::raise(SIGKILL);
    });
  }

  train::Trainer trainer(std::move(cfg), !resume.empty());
  const train::TrainResult r = trainer.run();
  if (r.best_exprate >= 0) std::cout << "best ExpRate " << r.best_exprate << "% (weights_best.safetensors)\n";
  std::cout << "run folder " << r.run_dir << "\n";
  return 0;
}

}  // namespace hmer::app
