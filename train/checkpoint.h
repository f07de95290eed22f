#pragma once
// A training run's folder and its crash-safe checkpoints.
//
//   RUN/config.yaml                  the resolved config (save_config)
//   RUN/latest.json                  the commit pointer: generation, step, epoch, and the two files of
//                                    the latest checkpoint with their sizes and CRC32C
//   RUN/checkpoints/gen-<G>.weights.safetensors, gen-<G>.state.safetensors
//                                    the files latest.json names (older generations are deleted)
//   RUN/weights_last.safetensors     hard links to the two files of the latest generation, for users
//   RUN/state_last.safetensors       and tools (after a crash they may lag one save behind, or be
//                                    absent after a crash in the very first save, until recover())
//   RUN/weights_best.safetensors     the best weights so far (save_best), written atomically
//   RUN/metrics.csv, metrics.jsonl, train.log, tb/   written by train/logging.h and tensorboard.h
//
// Atomicity: save_last() writes both generation files completely (each fsync'd), then replaces
// latest.json (temp file + fsync + rename + directory fsync), and only then re-points the
// *_last links and deletes older generations. A process killed at any instant therefore leaves
// latest.json naming either the previous or the new checkpoint, both of whose files are complete;
// load_last() verifies sizes and CRC32C before parsing, so a damaged file is reported, never used.
// One writer per run folder.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/serialization.h"
#include "optim/optimizer.h"

namespace hmer::train {

// A Philox generator's state (core/rng.h: Generator::seed()/offset(), restored with set_state).
struct RngState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

inline RngState rng_state_of(const Generator& g) { return {g.seed(), g.offset()}; }
inline void restore_rng(Generator& g, const RngState& s) { g.set_state(s.seed, s.offset); }

// Everything besides the weights that an exact resume needs.
struct TrainingState {
  int64_t step = 0;   // optimizer steps completed
  int64_t epoch = 0;  // trainer-defined (e.g. the epoch in progress)
  optim::OptimizerState optimizer;        // Optimizer::state_dict()
  std::map<std::string, RngState> rngs;   // e.g. "dropout", "loader"
  // Named scalars as exact strings (use optim::format_double / parse_double / scalar_at), e.g. the
  // loader cursor or the best ExpRate so far.
  std::map<std::string, std::string> scalars;
  NamedTensors tensors;                                   // e.g. a loader permutation
  nlohmann::json meta = nlohmann::json::object();         // free-form JSON metadata
};

// One safetensors file: tensors "optimizer/<key>", "extra/<name>"; metadata "format"
// ("hmer-train-state/1"), "step", "epoch", "optimizer/<key>", "rng/<name>" ("<seed> <offset>"),
// "scalar/<key>", "json". Written durably (see save_safetensors_durable).
void save_training_state(const std::string& path, const TrainingState& state,
                         const std::map<std::string, std::string>& extra_metadata = {});
TrainingState load_training_state(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// Durable, atomic file writes: temp file, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, const std::string& bytes);
void save_safetensors_durable(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});

struct Checkpoint {
  int64_t generation = 0;
  NamedTensors weights;
  std::map<std::string, std::string> weights_metadata;
  TrainingState state;
};

class RunDir {
 public:
  explicit RunDir(std::string root);
  const std::string& root() const { return root_; }
  void create() const;  // mkdir -p RUN and RUN/checkpoints

  std::string config_path() const { return root_ + "/config.yaml"; }
  std::string latest_path() const { return root_ + "/latest.json"; }
  std::string weights_last_path() const { return root_ + "/weights_last.safetensors"; }
  std::string state_last_path() const { return root_ + "/state_last.safetensors"; }
  std::string weights_best_path() const { return root_ + "/weights_best.safetensors"; }
  std::string metrics_csv_path() const { return root_ + "/metrics.csv"; }
  std::string metrics_jsonl_path() const { return root_ + "/metrics.jsonl"; }
  std::string log_path() const { return root_ + "/train.log"; }
  std::string tensorboard_dir() const { return root_ + "/tb"; }

  // Atomic write of the resolved config text.
  void save_config(const std::string& yaml_text) const;

  // True once a checkpoint has been committed (latest.json exists).
  bool has_checkpoint() const;
  // Commits weights (e.g. model.state_dict(), official names) + training state as the new latest
  // checkpoint and returns its generation. weights_metadata is stored in the weights file next to
  // "format" = "pt" and "hmer/generation", "hmer/step", "hmer/epoch".
  int64_t save_last(const NamedTensors& weights, const TrainingState& state,
                    const std::map<std::string, std::string>& weights_metadata = {}) const;
  // The checkpoint latest.json names, after checking both files' sizes, CRC32C and generation.
  // Throws hmer::Error saying what is missing or damaged.
  Checkpoint load_last() const;
  // latest.json as written (generation, step, epoch, file names, sizes, crc32c).
  nlohmann::json read_latest() const;
  // After a crash: re-points the *_last links at the files latest.json names and deletes orphaned
  // generations. Call it when resuming, as the folder's only writer (load_last itself never writes,
  // so a concurrent reader cannot race the trainer). No-op without a checkpoint.
  void recover() const;

  // Atomic write of weights_best.safetensors (with "format" = "pt" and the given metadata, e.g. the
  // ExpRate and step that made it best).
  void save_best(const NamedTensors& weights, const std::map<std::string, std::string>& metadata = {}) const;
  NamedTensors load_best(std::map<std::string, std::string>* metadata = nullptr) const;

 private:
  void update_links_and_clean(const std::string& weights_rel, const std::string& state_rel) const;

  std::string root_;
};

// Test hook: called with a stage name at each commit point of save_last ("weights_written",
// "state_written", "pointer_written", "links_updated", "cleaned"), so a test can kill the process
// at exactly that point. nullptr clears it. Not for production use.
void set_checkpoint_fault_hook(std::function<void(std::string_view stage)> hook);

}  // namespace hmer::train
