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

// One bottleneck layer: 1×1 conv to 4·growth → BN → ReLU (→ dropout) → 3×3 conv to growth → BN →
// ReLU (→ dropout), then [x, new] along channels.
class Bottleneck : public UnaryModule {
 public:
  Bottleneck(int64_t in_channels, int64_t growth_rate, bool use_dropout, double dropout_rate);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C + growth, H, W)

 private:
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<Dropout> dropout_;
  bool use_dropout_;
};

// 1×1 conv → BN → ReLU (→ dropout) → 2×2 average pool, stride 2, ceil_mode.
class Transition : public UnaryModule {
 public:
  Transition(int64_t in_channels, int64_t out_channels, bool use_dropout, double dropout_rate);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, out, ceil(H/2), ceil(W/2))

 private:
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<Dropout> dropout_;
  bool use_dropout_;
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
  std::shared_ptr<Sequential> dense1_, dense2_, dense3_;
  std::shared_ptr<Transition> trans1_, trans2_;
};

}  // namespace hmer::models
