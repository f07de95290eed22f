#pragma once
// GRUCell in PyTorch's layout and arithmetic (torch.nn.GRUCell; Paddle's GRUCell has the same
// layout), with the gate activation selectable so Keras 2 / Keras 3 hard_sigmoid models can be
// reproduced:
//   gi = x·W_ihᵀ + b_ih,  gh = h·W_hhᵀ + b_hh       (row blocks [r; z; n])
//   r = act(gi_r + gh_r),  z = act(gi_z + gh_z),  n = tanh(gi_n + r ⊙ gh_n)
//   h' = (h − n) ⊙ z + n                             (torch's CPU kernel form, bit-exact with it)
// This is Keras' reset_after=True GRU; Keras' reset_after=False variant has no torch equivalent.
#include "core/ops.h"
#include "layers/module.h"

namespace hmer {

enum class GateActivation {
  Sigmoid,            // torch, Paddle, tf.keras v2, Keras 3
  HardSigmoidKeras2,  // clip(0.2x + 0.5, 0, 1): standalone Keras 2.0-2.2.5, tf.keras v1 GRU
  HardSigmoidKeras3,  // relu6(x + 3) / 6 = torch.nn.Hardsigmoid
};

struct GRUCellOptions {
  GRUCellOptions(int64_t input_size, int64_t hidden_size) : input_size_(input_size), hidden_size_(hidden_size) {}
  HMER_ARG(int64_t, input_size);
  HMER_ARG(int64_t, hidden_size);
  HMER_ARG(bool, bias) = true;
  HMER_ARG(GateActivation, gate_activation) = GateActivation::Sigmoid;
};

class GRUCell : public Module {
 public:
  explicit GRUCell(const GRUCellOptions& options, Generator* gen = nullptr);
  GRUCell(int64_t input_size, int64_t hidden_size, bool bias = true, Generator* gen = nullptr)
      : GRUCell(GRUCellOptions(input_size, hidden_size).bias(bias), gen) {}

  // x (B, I), h (B, H) -> h' (B, H); unbatched x (I), h (H) -> (H). An undefined h means zeros.
  Tensor forward(const Tensor& x, const Tensor& h = Tensor());
  Tensor operator()(const Tensor& x, const Tensor& h = Tensor()) { return forward(x, h); }
  void reset_parameters(InitPreset preset, Generator& gen) override;
  std::string extra_repr() const override;

  const GRUCellOptions& options() const { return options_; }
  Tensor& weight_ih() { return weight_ih_; }  // (3H, I)
  Tensor& weight_hh() { return weight_hh_; }  // (3H, H)
  Tensor& bias_ih() { return bias_ih_; }      // (3H)
  Tensor& bias_hh() { return bias_hh_; }      // (3H)

 private:
  Tensor gate(const Tensor& x) const;

  GRUCellOptions options_;
  Tensor weight_ih_, weight_hh_, bias_ih_, bias_hh_;
};

}  // namespace hmer
