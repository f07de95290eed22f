#pragma once
// Decoding a trained CAN / DWAP on one image, as the official inference.py does (batch 1, image
// mask all ones, counting maps unmasked): greedy (argmax, at most max_steps steps, stop when eos
// is the argmax; eos is not emitted) and beam search (ours: the official code has none), both
// returning the softmax probability of every emitted token as its confidence. Call with the model
// in eval mode; no graph is recorded.
#include <cstdint>
#include <vector>

#include "models/can.h"

namespace hmer::models {

struct Hypothesis {
  std::vector<int64_t> tokens;     // without sos / eos
  std::vector<float> confidences;  // p(token) at its step, one per token
  double log_prob = 0;             // Σ log p over the tokens, plus log p(eos) when finished
  double score = 0;                // what beam search ranks by (log_prob / length^alpha when normalising)
  bool finished = false;           // ended with eos (false: stopped at max_steps)
  float eos_confidence = 0;        // p(eos) at the last step when finished
};

// image (1, C, H, W) at its own size (no padding). stop_at_eos = false runs exactly max_steps steps,
// feeding back whatever the argmax is (eos included): the fixed-length decode `hmer bench` times.
Hypothesis greedy_decode(CanModel& model, const Tensor& image, int64_t max_steps = 200, bool stop_at_eos = true);

struct BeamOptions {
  int64_t beam_width = 5;
  int64_t max_steps = 200;
  bool length_normalization = true;  // rank finished hypotheses by log p / (tokens + 1)^alpha
  double length_alpha = 1.0;
  static BeamOptions from(const DecodingConfig& c) {
    return {c.beam_width, c.max_steps, c.length_normalization, c.length_alpha};
  }
};
// The hypotheses found, best first (at most beam_width). With width 1 this is greedy decoding.
std::vector<Hypothesis> beam_search(CanModel& model, const Tensor& image, const BeamOptions& options);

// Every image of a padded batch (B, C, H, W) decoded at its own size, cropped with image_mask
// (B, 1, H, W): greedy when beam_width == 1, else the best beam.
std::vector<Hypothesis> decode_batch(CanModel& model, const Tensor& images, const Tensor& image_mask,
                                     const BeamOptions& options);

}  // namespace hmer::models
