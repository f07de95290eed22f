#pragma once
// The DenseNet-B encoder of DWAP / CAN (can-model.md §4). Post-activation throughout (conv → BN →
// ReLU → dropout), no BN in the stem and none at the end, concat order [input, new], transitions
// compress by floor(C · reduction) and average-pool 2×2 with ceil_mode (PyTorch divisor: the number
// of in-range elements). Every conv is bias-free. Parameter names are the official ones:
//   conv1, dense{1,2,3}.{i}.{bn1,conv1,bn2,conv2}, trans{1,2}.{bn1,conv1}.
#include <memory>

#include "layers/layers.h"
#include "models/model_config.h"

namespace hmer::models {

// memory_efficient (DenseNetConfig): BN → ReLU → dropout as one fused op (batch_norm_relu_dropout)
// and each dense block's concatenation appended in place (ChannelConcat); otherwise op by op with a
// fresh cat per layer, the plain reference the efficient form is tested against bit for bit.

// One bottleneck layer: 1×1 conv to 4·growth → BN → ReLU (→ dropout) → 3×3 conv to growth → BN →
// ReLU (→ dropout), then [x, new] along channels.
class Bottleneck : public UnaryModule {
 public:
  Bottleneck(int64_t in_channels, int64_t growth_rate, bool use_dropout, double dropout_rate,
             bool memory_efficient = false);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C + growth, H, W)
  Tensor new_features(const Tensor& x);      // (N, C, H, W) -> (N, growth, H, W): forward without the cat
  // The same from a dense block's concatenation (its result() is x); memory-efficient only: conv1
  // adds its input gradient into the block's one gradient buffer (ChannelConcat::conv2d).
  Tensor new_features(const ChannelConcat& features);

 private:
  Tensor from_conv1(const Tensor& conv1_out);
  Tensor bn_relu_dropout(BatchNorm2d& bn, const Tensor& x);
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<Dropout> dropout_;
  bool use_dropout_, memory_efficient_;
};

// The bottlenecks of one dense block (state_dict names "0", "1", …). Memory-efficient: the growing
// feature map lives in one buffer of the block's final width instead of a new copy per layer.
class DenseBlock : public Sequential {
 public:
  DenseBlock(int64_t in_channels, int64_t growth_rate, int64_t depth, bool use_dropout, double dropout_rate,
             bool memory_efficient);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C + depth·growth, H, W)

 private:
  std::vector<std::shared_ptr<Bottleneck>> bottlenecks_;
  int64_t out_channels_;
  bool memory_efficient_;
};

// 1×1 conv → BN → ReLU (→ dropout) → 2×2 average pool, stride 2, ceil_mode.
class Transition : public UnaryModule {
 public:
  Transition(int64_t in_channels, int64_t out_channels, bool use_dropout, double dropout_rate,
             bool memory_efficient = false);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, out, ceil(H/2), ceil(W/2))

 private:
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<Dropout> dropout_;
  bool use_dropout_, memory_efficient_;
};

class DenseNetB : public UnaryModule {
 public:
  explicit DenseNetB(const DenseNetConfig& config);
  // (N, input_channels, H, W) -> (N, out_channels, ceil(H/16), ceil(W/16))
  Tensor forward(const Tensor& x) override;
  const DenseNetConfig& config() const { return config_; }

 private:
  DenseNetConfig config_;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<DenseBlock> dense1_, dense2_, dense3_;
  std::shared_ptr<Transition> trans1_, trans2_;
};

}  // namespace hmer::models
