#include "layers/rnn.h"

#include <cmath>

#include "core/autograd.h"
#include "layers/init.h"

namespace hmer {

GRUCell::GRUCell(const GRUCellOptions& options, Generator* gen) : Module("GRUCell"), options_(options) {
  const int64_t I = options.input_size(), H = options.hidden_size();
  HMER_CHECK(I > 0 && H > 0, "GRUCell: input_size and hidden_size must be positive, got ", I, " and ", H);
  // Registration order = torch's state_dict order.
  weight_ih_ = register_parameter("weight_ih", Tensor::empty({3 * H, I}));
  weight_hh_ = register_parameter("weight_hh", Tensor::empty({3 * H, H}));
  if (options.bias()) {
    bias_ih_ = register_parameter("bias_ih", Tensor::empty({3 * H}));
    bias_hh_ = register_parameter("bias_hh", Tensor::empty({3 * H}));
  }
  reset_parameters(InitPreset::Torch, gen ? *gen : default_generator());
}

Tensor GRUCell::gate(const Tensor& x) const {
  switch (options_.gate_activation()) {
    case GateActivation::Sigmoid: return sigmoid(x);
    case GateActivation::HardSigmoidKeras2: return hard_sigmoid(x, HardSigmoidKind::Keras2);
    case GateActivation::HardSigmoidKeras3: return hard_sigmoid(x, HardSigmoidKind::Keras3);
  }
  return sigmoid(x);
}

Tensor GRUCell::forward(const Tensor& x_in, const Tensor& h_in) {
  const int64_t I = options_.input_size(), H = options_.hidden_size();
  HMER_CHECK(x_in.defined(), "GRUCell: undefined input");
  HMER_CHECK(x_in.dim() == 1 || x_in.dim() == 2, "GRUCell: expected input (B, ", I, ") or (", I, "), got ",
             shape_str(x_in.shape()));
  const bool unbatched = x_in.dim() == 1;
  Tensor x = unbatched ? x_in.unsqueeze(0) : x_in;
  HMER_CHECK(x.size(1) == I, "GRUCell: input ", shape_str(x_in.shape()), " does not match input_size ", I);
  const int64_t B = x.size(0);
  Tensor h;
  if (h_in.defined()) {
    HMER_CHECK(h_in.dim() == x_in.dim(), "GRUCell: hidden ", shape_str(h_in.shape()), " and input ",
               shape_str(x_in.shape()), " must both be batched or both unbatched");
    h = unbatched ? h_in.unsqueeze(0) : h_in;
    HMER_CHECK(h.size(0) == B && h.size(1) == H, "GRUCell: hidden ", shape_str(h_in.shape()), " must be (", B, ", ",
               H, ") for input ", shape_str(x_in.shape()));
  } else {
    h = Tensor::zeros({B, H}, x.dtype(), x.device());
  }
  const Tensor gi = linear(x, weight_ih_, bias_ih_);  // (B, 3H)
  const Tensor gh = linear(h, weight_hh_, bias_hh_);  // (B, 3H)
  const Tensor r = gate(add(gh.narrow(1, 0, H), gi.narrow(1, 0, H)));
  const Tensor z = gate(add(gh.narrow(1, H, H), gi.narrow(1, H, H)));
  const Tensor n = tanh(add(gi.narrow(1, 2 * H, H), mul(gh.narrow(1, 2 * H, H), r)));
  // torch: (hidden - new_gate).mul_(input_gate).add_(new_gate)
  Tensor out = add(mul(sub(h, n), z), n);
  return unbatched ? out.squeeze(0) : out;
}

void GRUCell::reset_parameters(InitPreset preset, Generator& gen) {
  NoGradGuard no_grad;
  const int64_t I = options_.input_size(), H = options_.hidden_size();
  const double stdv = 1.0 / std::sqrt(static_cast<double>(H));
  switch (preset) {
    case InitPreset::Torch:
    case InitPreset::Paddle:
      // Both: every tensor U(-1/sqrt(H), 1/sqrt(H)), drawn in registration order.
      for (Tensor& p : parameters(false)) uniform_(p, -stdv, stdv, gen);
      break;
    case InitPreset::Keras: {
      // kernel (I, 3U): glorot_uniform over the whole kernel, limit sqrt(6 / (I + 3U)); the
      // distribution is i.i.d., so transposing and reordering gate blocks changes nothing.
      const double a = xavier_uniform_bound({I, 3 * H});
      uniform_(weight_ih_, -a, a, gen);
      // recurrent_kernel (U, 3U) orthogonal: Keras samples q (3U, U) with orthonormal columns and
      // uses qᵀ, whose column blocks are [z | r | h]. Torch's weight_hh (3H, H) is that kernel
      // transposed with row blocks [r; z; n], i.e. q with its first two row blocks swapped. The
      // whole (3H, H) matrix has orthonormal columns; the individual gate blocks are not orthogonal.
      Tensor q = Tensor::empty({3 * H, H}, DType::Float64);
      orthogonal_(q, 1.0, gen);
      Tensor w = weight_hh_.detach();
      w.narrow(0, 0, H).copy_(q.narrow(0, H, H));      // r  <- Keras block 1 (r)
      w.narrow(0, H, H).copy_(q.narrow(0, 0, H));      // z  <- Keras block 0 (z)
      w.narrow(0, 2 * H, H).copy_(q.narrow(0, 2 * H, H));  // n <- Keras block 2 (h)
      if (bias_ih_.defined()) zeros_(bias_ih_);
      if (bias_hh_.defined()) zeros_(bias_hh_);
      break;
    }
  }
}

std::string GRUCell::extra_repr() const {
  std::string s = std::to_string(options_.input_size()) + ", " + std::to_string(options_.hidden_size());
  if (!options_.bias()) s += ", bias=False";
  switch (options_.gate_activation()) {
    case GateActivation::Sigmoid: break;
    case GateActivation::HardSigmoidKeras2: s += ", gate_activation=hard_sigmoid_keras2"; break;
    case GateActivation::HardSigmoidKeras3: s += ", gate_activation=hard_sigmoid_keras3"; break;
  }
  return s;
}

}  // namespace hmer
