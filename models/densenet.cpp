#include "models/densenet.h"

#include <cmath>

namespace hmer::models {

namespace {

// What the fused ops need of a layer's dropout (none: p 0): its probability, mode and generator.
struct DropoutArgs {
  double p = 0.0;
  bool training = false;
  Generator* gen = nullptr;
};
DropoutArgs dropout_args(const Dropout* d) {
  return d == nullptr ? DropoutArgs{} : DropoutArgs{d->p(), d->is_training(), d->generator()};
}

// BatchNorm2d keeps its bookkeeping (num_batches_tracked, momentum) in the fused forms.
Tensor fused_bn_relu_dropout(BatchNorm2d& bn, const Tensor& x, const Dropout* dropout) {
  const DropoutArgs a = dropout_args(dropout);
  return bn.forward_relu_dropout(x, a.p, a.training, a.gen);
}

}  // namespace

Bottleneck::Bottleneck(int64_t in_channels, int64_t growth_rate, bool use_dropout, double dropout_rate,
                       bool memory_efficient)
    : UnaryModule("Bottleneck"), use_dropout_(use_dropout), memory_efficient_(memory_efficient) {
  const int64_t inter = 4 * growth_rate;
  // Registration order is the official state_dict order: bn1, conv1, bn2, conv2.
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(inter));
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(Conv2dLayerOptions(in_channels, inter, 1).bias(false)));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(growth_rate));
  conv2_ = register_module(
      "conv2", std::make_shared<Conv2d>(Conv2dLayerOptions(inter, growth_rate, 3).padding({1, 1}).bias(false)));
  dropout_ = register_module("dropout", std::make_shared<Dropout>(dropout_rate));
}

Tensor Bottleneck::bn_relu_dropout(BatchNorm2d& bn, const Tensor& x) {
  if (memory_efficient_) return fused_bn_relu_dropout(bn, x, use_dropout_ ? dropout_.get() : nullptr);
  Tensor out = relu(bn.forward(x));
  return use_dropout_ ? dropout_->forward(out) : out;
}

Tensor Bottleneck::from_conv1(const Tensor& conv1_out) {
  if (memory_efficient_) {
    // The 4·growth-channel activation between conv1 and conv2 is the widest tensor of the layer:
    // recomputed in the backward rather than kept.
    const DropoutArgs a = dropout_args(use_dropout_ ? dropout_.get() : nullptr);
    Tensor mid = bn1_->forward_relu_dropout_conv(conv1_out, a.p, a.training, a.gen, *conv2_);
    return bn_relu_dropout(*bn2_, mid);
  }
  Tensor out = bn_relu_dropout(*bn1_, conv1_out);
  return bn_relu_dropout(*bn2_, conv2_->forward(out));
}

Tensor Bottleneck::new_features(const Tensor& x) { return from_conv1(conv1_->forward(x)); }

Tensor Bottleneck::new_features(const ChannelConcat& features) {
  HMER_CHECK(memory_efficient_, "Bottleneck: new_features(ChannelConcat) is the memory-efficient form");
  return from_conv1(features.conv2d(conv1_->weight(), conv1_->bias(), conv1_->functional_options()));
}

Tensor Bottleneck::forward(const Tensor& x) { return cat({x, new_features(x)}, 1); }

DenseBlock::DenseBlock(int64_t in_channels, int64_t growth_rate, int64_t depth, bool use_dropout, double dropout_rate,
                       bool memory_efficient)
    : out_channels_(in_channels + depth * growth_rate), memory_efficient_(memory_efficient) {
  for (int64_t i = 0; i < depth; ++i)
    bottlenecks_.push_back(push_back(std::make_shared<Bottleneck>(in_channels + i * growth_rate, growth_rate,
                                                                  use_dropout, dropout_rate, memory_efficient)));
}

Tensor DenseBlock::forward(const Tensor& x) {
  if (!memory_efficient_) return Sequential::forward(x);
  ChannelConcat features(x, out_channels_);
  for (const auto& layer : bottlenecks_) features.append(layer->new_features(features));
  return features.result();
}

Transition::Transition(int64_t in_channels, int64_t out_channels, bool use_dropout, double dropout_rate,
                       bool memory_efficient)
    : UnaryModule("Transition"), use_dropout_(use_dropout), memory_efficient_(memory_efficient) {
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out_channels));
  conv1_ = register_module("conv1",
                           std::make_shared<Conv2d>(Conv2dLayerOptions(in_channels, out_channels, 1).bias(false)));
  dropout_ = register_module("dropout", std::make_shared<Dropout>(dropout_rate));
}

Tensor Transition::forward(const Tensor& x) {
  Tensor out;
  if (memory_efficient_) {
    out = fused_bn_relu_dropout(*bn1_, conv1_->forward(x), use_dropout_ ? dropout_.get() : nullptr);
  } else {
    out = relu(bn1_->forward(conv1_->forward(x)));
    if (use_dropout_) out = dropout_->forward(out);
  }
  Pool2dOptions p;
  p.kernel = {2, 2};
  p.stride = {2, 2};
  p.ceil_mode = true;
  return avg_pool2d(out, p);
}

DenseNetB::DenseNetB(const DenseNetConfig& config) : UnaryModule("DenseNet"), config_(config) {
  const int64_t g = config.growth_rate;
  int64_t c = config.stem_channels();
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(Conv2dLayerOptions(config.input_channels, c, 7)
                                                                 .stride({2, 2})
                                                                 .padding({3, 3})
                                                                 .bias(false)));
  auto make_dense = [&](int64_t in) {
    return std::make_shared<DenseBlock>(in, g, config.depth, config.use_dropout, config.dropout_rate,
                                        config.memory_efficient);
  };
  auto compress = [&](int64_t ch) { return static_cast<int64_t>(std::floor(static_cast<double>(ch) * config.reduction)); };
  dense1_ = register_module("dense1", make_dense(c));
  c += config.depth * g;
  const int64_t t1 = compress(c);
  trans1_ = register_module("trans1", std::make_shared<Transition>(c, t1, config.use_dropout, config.dropout_rate,
                                                                      config.memory_efficient));
  c = t1;
  dense2_ = register_module("dense2", make_dense(c));
  c += config.depth * g;
  const int64_t t2 = compress(c);
  trans2_ = register_module("trans2", std::make_shared<Transition>(c, t2, config.use_dropout, config.dropout_rate,
                                                                      config.memory_efficient));
  c = t2;
  dense3_ = register_module("dense3", make_dense(c));
  c += config.depth * g;
  HMER_CHECK(c == config.out_channels, "DenseNetB: the blocks give ", c, " channels but out_channels is ",
             config.out_channels);
}

Tensor DenseNetB::forward(const Tensor& x) {
  HMER_CHECK(x.defined() && x.dim() == 4 && x.size(1) == config_.input_channels, "DenseNetB: expected input (N, ",
             config_.input_channels, ", H, W), got ", x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  Tensor out = relu(conv1_->forward(x));
  Pool2dOptions p;
  p.kernel = {2, 2};
  p.stride = {2, 2};
  p.ceil_mode = true;
  out = max_pool2d(out, p);
  out = trans1_->forward(dense1_->forward(out));
  out = trans2_->forward(dense2_->forward(out));
  return dense3_->forward(out);
}

}  // namespace hmer::models
