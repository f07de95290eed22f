#pragma once
// CAN's multi-scale counting module (can-model.md §5). One CountingDecoder per kernel size:
//   Z = BN(conv_k×k(F))                       trans_layer.{0: conv (no bias), 1: BN}, no ReLU
//   Z ← Z ⊙ σ(W2·ReLU(W1·mean_ij(Z) + b1) + b2)   channel_att.fc.{0, 2}: the mean includes padding
//   M = σ(conv_1×1(Z)) [⊙ mask]                pred_layer.0 (no bias), values in (0, 1)
//   v = Σ_ij M                                 (B, classes): sum pooling
// and the module's counting vector is the mean of the branches' vectors (not detached).
#include <memory>
#include <vector>

#include "layers/layers.h"
#include "models/model_config.h"

namespace hmer::models {

// Squeeze-and-excitation over channels: x ⊙ σ(fc(mean over H, W)).
class ChannelAttention : public UnaryModule {
 public:
  ChannelAttention(int64_t channels, int64_t reduction);
  Tensor forward(const Tensor& x) override;  // (B, C, H, W) -> (B, C, H, W)

 private:
  std::shared_ptr<Sequential> fc_;
};

class CountingDecoder : public Module {
 public:
  CountingDecoder(int64_t in_channels, int64_t out_channels, int64_t hidden_channels, int64_t reduction,
                  int64_t kernel_size);
  struct Output {
    Tensor counts;  // (B, classes)
    Tensor map;     // (B, classes, H, W), masked when a mask was given
  };
  // features (B, in, H, W); mask (B, 1, H, W) or undefined (inference: no masking).
  Output forward(const Tensor& features, const Tensor& mask);

 private:
  std::shared_ptr<Sequential> trans_layer_, pred_layer_;
  std::shared_ptr<ChannelAttention> channel_att_;
};

// The ground-truth count vector v* (B, classes) float32: occurrences of each id in each padded label
// row, skipping `ignore_ids` (eos = padding, sos and the structure tokens { } ^ _ for CAN).
Tensor counting_labels(const Tensor& labels /* (B, T) int64 */, int64_t classes,
                       const std::vector<int64_t>& ignore_ids);

}  // namespace hmer::models
