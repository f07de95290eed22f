#pragma once
// Batches for training and evaluation, with CAN's collate semantics exactly (can-model.md §3.3):
// items are walked in order with running maxima (maxH, maxW, maxLen) over the accepted ones; an item
// is skipped when h * maxW or w * maxH exceeds the product (1600 * 320); images go to the top-left of
// a (B, 1, maxH, maxW) float32 tensor filled with the pad value, the image mask is 1 over each image;
// labels are the ids with eos appended, padded with the pad id (0 for CAN) into (B, maxLen) int64,
// the label mask 1 over tokens + eos.
//
// The DataLoader shuffles with hmer::Generator (Philox; the same permutation on every run and
// machine for a seed), optionally buckets by area, prepares batches on a background thread, and has
// a cursor (epoch, position, RNG state) from which a restored loader yields exactly the same batches.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/core.hpp>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/dataset.h"
#include "data/preprocess.h"

namespace YAML {
class Node;
}

namespace hmer::data {

struct Batch {
  Tensor images;      // (B, 1, H, W) float32
  Tensor image_mask;  // (B, 1, H, W) float32
  Tensor labels;      // (B, T) int64
  Tensor label_mask;  // (B, T) float32
  std::vector<int64_t> indices;     // dataset indices of the B accepted samples
  std::vector<std::string> names;
  std::vector<std::string> skipped;  // names dropped by the collate size rule
  int64_t epoch = 0, position = 0;   // which batch of which epoch this is
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

struct CollateItem {
  cv::Mat image;                    // CV_8UC1, already scaled
  const std::vector<int64_t>* ids;  // token ids without eos
  int64_t index = -1;
  std::string name;
};

// CAN's collate on already-decoded items (eos appended to every label; label padding = pad_id).
Batch collate(const std::vector<CollateItem>& items, const PreprocessConfig& pre, int64_t eos_id, int64_t pad_id);

struct LoaderConfig {
  int64_t batch_size = 8;
  bool shuffle = true;
  uint64_t seed = 20211024;  // CAN's config seed
  bool drop_last = false;
  // Sort windows of bucket_window * batch_size shuffled samples by area before cutting batches, then
  // shuffle the batch order: less padding, still a random epoch. 0 windows = the whole epoch.
  bool bucket_by_area = false;
  int64_t bucket_window = 50;
  int prefetch = 2;  // batches prepared ahead on a background thread; 0 = on the caller's thread

  // Keys: batch_size, shuffle, seed, drop_last, bucket_by_area, bucket_window, prefetch.
  static LoaderConfig from_yaml(const YAML::Node& node);
  void validate() const;
};

// Where a loader is: batches already handed out in `epoch`, and the generator state the epoch's
// order was drawn from. Saved with a checkpoint; DataLoader::restore resumes exactly.
struct LoaderCursor {
  int64_t epoch = 0;
  int64_t position = 0;
  uint64_t seed = 0;
  uint64_t rng_offset = 0;
  std::string to_json() const;
  static LoaderCursor from_json(const std::string& text);
  bool operator==(const LoaderCursor& o) const {
    return epoch == o.epoch && position == o.position && seed == o.seed && rng_offset == o.rng_offset;
  }
};

class DataLoader {
 public:
  // The dataset must be encoded (Dataset::encode); eos and pad ids come from the vocabulary.
  DataLoader(std::shared_ptr<const Dataset> dataset, const Vocabulary& vocab, LoaderConfig cfg, PreprocessConfig pre);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch of the current epoch; false (and `out` untouched) once the epoch is over, after
  // which the next call starts the following epoch. Errors from decoding are rethrown here.
  bool next(Batch& out);

  LoaderCursor cursor() const;
  void restore(const LoaderCursor& c);

  int64_t epoch() const { return cursor().epoch; }
  // Batches in an epoch (a plan without drawing: independent of the shuffle).
  int64_t batches_per_epoch() const;
  // Samples left out of every epoch by max_image_pixels.
  int64_t oversized() const { return oversized_; }

  // The batches (dataset indices) of the epoch whose order is drawn from `gen`; advances `gen`.
  std::vector<std::vector<int64_t>> plan_epoch(Generator& gen) const;

 private:
  struct Item {
    bool end_of_epoch = false;
    Batch batch;
    LoaderCursor after;
    std::exception_ptr error;
  };
  struct State {
    Generator gen = Generator(0);
    int64_t epoch = 0;
    int64_t pos = 0;
    uint64_t epoch_offset = 0;
    bool planned = false;
    std::vector<std::vector<int64_t>> plan;
  };

  Item produce();  // one step of the producer state machine
  Batch make_batch(const std::vector<int64_t>& indices) const;
  void start_thread();
  void stop_thread();
  void run();

  std::shared_ptr<const Dataset> ds_;
  LoaderConfig cfg_;
  PreprocessConfig pre_;
  int64_t eos_ = 0, pad_ = 0;
  std::vector<int64_t> area_;  // per sample, when sizes are needed
  std::vector<int64_t> eligible_;
  int64_t oversized_ = 0;

  State state_;            // owned by the producer (the thread while it runs)
  LoaderCursor consumer_;  // what the caller has received
  std::exception_ptr failed_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
  bool running_ = false;
  std::thread thread_;
};

}  // namespace hmer::data
