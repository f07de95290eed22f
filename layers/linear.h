#pragma once
// Linear (torch.nn.Linear): y = x·Wᵀ + b with weight (out, in) and bias (out).
#include "layers/module.h"

namespace hmer {

struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  HMER_ARG(int64_t, in_features);
  HMER_ARG(int64_t, out_features);
  HMER_ARG(bool, bias) = true;
};

class Linear : public UnaryModule {
 public:
  // Initialised with the torch preset from `gen` (default_generator() when null).
  explicit Linear(const LinearOptions& options, Generator* gen = nullptr);
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr)
      : Linear(LinearOptions(in_features, out_features).bias(bias), gen) {}

  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)
  void reset_parameters(InitPreset preset, Generator& gen) override;
  std::string extra_repr() const override;

  const LinearOptions& options() const { return options_; }
  Tensor& weight() { return weight_; }  // (out, in)
  Tensor& bias() { return bias_; }      // (out), undefined without bias

 private:
  LinearOptions options_;
  Tensor weight_, bias_;
};

}  // namespace hmer
