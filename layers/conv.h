#pragma once
// Conv2d (torch.nn.Conv2d without groups): weight (out, in, kh, kw), bias (out).
#include "core/ops.h"
#include "layers/module.h"

namespace hmer {

// Named so it does not clash with the functional Conv2dOptions (stride/padding/dilation) of core/ops.h.
struct Conv2dLayerOptions {
  Conv2dLayerOptions(int64_t in_channels, int64_t out_channels, Pair kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  Conv2dLayerOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : Conv2dLayerOptions(in_channels, out_channels, Pair{kernel_size, kernel_size}) {}
  HMER_ARG(int64_t, in_channels);
  HMER_ARG(int64_t, out_channels);
  HMER_ARG(Pair, kernel_size);
  HMER_ARG(Pair, stride) = {1, 1};
  HMER_ARG(Pair, padding) = {0, 0};
  HMER_ARG(Pair, dilation) = {1, 1};
  HMER_ARG(bool, bias) = true;
};

class Conv2d : public UnaryModule {
 public:
  explicit Conv2d(const Conv2dLayerOptions& options, Generator* gen = nullptr);

  Tensor forward(const Tensor& x) override;  // (N, in, H, W) -> (N, out, OH, OW)
  void reset_parameters(InitPreset preset, Generator& gen) override;
  std::string extra_repr() const override;

  const Conv2dLayerOptions& options() const { return options_; }
  Conv2dOptions functional_options() const;  // stride, padding, dilation for conv2d()
  Tensor& weight() { return weight_; }  // (out, in, kh, kw)
  Tensor& bias() { return bias_; }      // (out), undefined without bias

 private:
  Conv2dLayerOptions options_;
  Tensor weight_, bias_;
};

}  // namespace hmer
