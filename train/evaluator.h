#pragma once
// Recognition over a dataset as the official inference.py does it (can-model.md §11.2): every image
// alone at its own size (no batch padding, no collate skipping), greedy decoding up to max_steps (or
// beam search), predicted vs reference token lists scored by train/metrics.h. For CAN, the counting
// vector of the unmasked feature map is compared with the label's class counts (counting MAE).
#include <cstdint>
#include <functional>
#include <string>

#include "data/dataset.h"
#include "data/preprocess.h"
#include "data/vocab.h"
#include "models/can.h"
#include "train/metrics.h"

namespace hmer::train {

struct EvalOptions {
  int64_t beam_width = 1;     // 1 = greedy
  int64_t max_steps = 200;
  bool length_normalization = true;
  double length_alpha = 1.0;
  int64_t limit = 0;          // first N samples only (0 = all)
  bool counting = true;       // CAN: also the counting MAE (one more encoder pass per image)
  MetricOptions metric;
  // Called after every sample with (done, total).
  std::function<void(int64_t, int64_t)> on_progress;
};

struct EvalOutput {
  MetricAccumulator metrics;
  double seconds = 0;
  // The JSON report: MetricAccumulator::to_json() plus beam_width, seconds, images_per_sec.
  nlohmann::ordered_json to_json() const;
};

// The dataset must be encoded (Dataset::encode). Puts the model in eval mode and restores its mode.
EvalOutput evaluate(models::CanModel& model, const data::Dataset& dataset, const data::Vocabulary& vocab,
                    const data::PreprocessConfig& pre, const EvalOptions& options);

// One image (CV_8UC1 as read from disk) through the preprocessing into a (1, 1, H, W) tensor.
Tensor prepare_image(const cv::Mat& image, const data::PreprocessConfig& pre);

}  // namespace hmer::train
