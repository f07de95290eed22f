#pragma once
// BatchNorm2d (torch.nn.BatchNorm2d), with a Paddle flavour for its running-statistics update.
//   parameters: weight (C) = 1, bias (C) = 0            (when affine)
//   buffers:    running_mean (C) = 0, running_var (C) = 1, num_batches_tracked int64 {} = 0
//               (when track_running_stats; names are torch's in both flavours)
#include <optional>

#include "core/ops.h"
#include "layers/conv.h"
#include "layers/module.h"

namespace hmer {

struct BatchNorm2dOptions {
  explicit BatchNorm2dOptions(int64_t num_features) : num_features_(num_features) {}
  HMER_ARG(int64_t, num_features);
  HMER_ARG(double, eps) = 1e-5;
  // ALWAYS torch's convention: the weight of the new batch statistic. Paddle's momentum=0.9 is 0.1
  // here; the layer converts for the Paddle flavour. nullopt = torch's momentum=None (cumulative
  // average, factor 1/num_batches_tracked).
  HMER_ARG(std::optional<double>, momentum) = 0.1;
  HMER_ARG(bool, affine) = true;
  HMER_ARG(bool, track_running_stats) = true;
  // Torch: running_var takes the unbiased batch variance; Paddle: the biased one.
  HMER_ARG(BatchNormFlavor, flavor) = BatchNormFlavor::Torch;
};

class BatchNorm2d : public UnaryModule {
 public:
  explicit BatchNorm2d(const BatchNorm2dOptions& options);
  explicit BatchNorm2d(int64_t num_features) : BatchNorm2d(BatchNorm2dOptions(num_features)) {}

  // Training: batch statistics, running statistics updated and num_batches_tracked += 1.
  // Eval: running statistics (or batch statistics when track_running_stats is off).
  Tensor forward(const Tensor& x) override;  // (N, C, H, W)
  // dropout(relu(forward(x)), p, dropout_training, gen) as one fused op (batch_norm_relu_dropout):
  // the same numbers and bookkeeping, one saved activation instead of three.
  Tensor forward_relu_dropout(const Tensor& x, double p, bool dropout_training, Generator* gen);
  // conv.forward(forward_relu_dropout(x, …)) as one node (batch_norm_relu_dropout_conv2d) that
  // recomputes the activation in the backward; conv must be bias-free.
  Tensor forward_relu_dropout_conv(const Tensor& x, double p, bool dropout_training, Generator* gen, Conv2d& conv);
  void reset_parameters(InitPreset preset, Generator& gen) override;
  void reset_running_stats();
  std::string extra_repr() const override;

  const BatchNorm2dOptions& options() const { return options_; }
  Tensor& weight() { return weight_; }
  Tensor& bias() { return bias_; }
  Tensor& running_mean() { return running_mean_; }
  Tensor& running_var() { return running_var_; }
  Tensor& num_batches_tracked() { return num_batches_tracked_; }

 protected:
  void on_state_loaded() override;

 private:
  // Checks x, advances num_batches_tracked when training, and returns the op's options.
  BatchNormOptions begin_forward(const Tensor& x);

  BatchNorm2dOptions options_;
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
  // Host copy of num_batches_tracked, so a CUDA model does not sync to increment it.
  int64_t batches_tracked_ = 0;
};

}  // namespace hmer
