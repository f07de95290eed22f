#pragma once
// MaxPool2d / AvgPool2d (torch.nn.MaxPool2d / AvgPool2d, no dilation). The stride defaults to the
// kernel size, as in PyTorch.
#include "core/ops.h"
#include "layers/module.h"

namespace hmer {

struct MaxPool2dOptions {
  explicit MaxPool2dOptions(Pair kernel_size) : kernel_size_(kernel_size) {}
  explicit MaxPool2dOptions(int64_t kernel_size) : kernel_size_({kernel_size, kernel_size}) {}
  HMER_ARG(Pair, kernel_size);
  HMER_ARG(Pair, stride) = {0, 0};  // 0 = kernel_size
  HMER_ARG(Pair, padding) = {0, 0};
  HMER_ARG(bool, ceil_mode) = false;
};

struct AvgPool2dOptions {
  explicit AvgPool2dOptions(Pair kernel_size) : kernel_size_(kernel_size) {}
  explicit AvgPool2dOptions(int64_t kernel_size) : kernel_size_({kernel_size, kernel_size}) {}
  HMER_ARG(Pair, kernel_size);
  HMER_ARG(Pair, stride) = {0, 0};  // 0 = kernel_size
  HMER_ARG(Pair, padding) = {0, 0};
  HMER_ARG(bool, ceil_mode) = false;
  HMER_ARG(bool, count_include_pad) = true;
};

class MaxPool2d : public UnaryModule {
 public:
  explicit MaxPool2d(const MaxPool2dOptions& options);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W)
  std::string extra_repr() const override;
  const Pool2dOptions& functional_options() const { return opts_; }

 private:
  Pool2dOptions opts_;
};

class AvgPool2d : public UnaryModule {
 public:
  explicit AvgPool2d(const AvgPool2dOptions& options);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W)
  std::string extra_repr() const override;
  const Pool2dOptions& functional_options() const { return opts_; }

 private:
  Pool2dOptions opts_;
};

}  // namespace hmer
