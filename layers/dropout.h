#pragma once
// Dropout (torch.nn.Dropout): inverted dropout in training, identity in eval.
#include "core/rng.h"
#include "layers/module.h"

namespace hmer {

class Dropout : public UnaryModule {
 public:
  // Masks come from `gen`, or from default_generator() when it is null (looked up per call, so
  // re-seeding the default generator takes effect).
  explicit Dropout(double p = 0.5, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  double p() const { return p_; }
  Generator* generator() const { return gen_; }  // null: default_generator()

 private:
  double p_;
  Generator* gen_;
};

}  // namespace hmer
