#pragma once
// Activation modules (no parameters): thin wrappers of the functional ops so they can sit in a
// Sequential and appear in repr() like torch's.
#include "core/ops.h"
#include "layers/module.h"

namespace hmer {

class ReLU : public UnaryModule {
 public:
  ReLU() : UnaryModule("ReLU") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
};

class Sigmoid : public UnaryModule {
 public:
  Sigmoid() : UnaryModule("Sigmoid") {}
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
};

class Tanh : public UnaryModule {
 public:
  Tanh() : UnaryModule("Tanh") {}
  Tensor forward(const Tensor& x) override { return tanh(x); }
};

// Keras3 (default) is torch.nn.Hardsigmoid; Keras2 is clip(0.2x + 0.5, 0, 1).
class HardSigmoid : public UnaryModule {
 public:
  explicit HardSigmoid(HardSigmoidKind kind = HardSigmoidKind::Keras3) : UnaryModule("HardSigmoid"), kind_(kind) {}
  Tensor forward(const Tensor& x) override { return hard_sigmoid(x, kind_); }
  std::string extra_repr() const override { return kind_ == HardSigmoidKind::Keras2 ? "keras2" : "keras3"; }
  HardSigmoidKind kind() const { return kind_; }

 private:
  HardSigmoidKind kind_;
};

}  // namespace hmer
