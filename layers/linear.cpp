#include "layers/linear.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/init.h"

namespace hmer {

Linear::Linear(const LinearOptions& options, Generator* gen) : UnaryModule("Linear"), options_(options) {
  HMER_CHECK(options.in_features() >= 0 && options.out_features() >= 0, "Linear: negative size (in_features ",
             options.in_features(), ", out_features ", options.out_features(), ")");
  weight_ = register_parameter("weight", Tensor::empty({options.out_features(), options.in_features()}));
  if (options.bias()) bias_ = register_parameter("bias", Tensor::empty({options.out_features()}));
  reset_parameters(InitPreset::Torch, gen ? *gen : default_generator());
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight_, bias_); }

void Linear::reset_parameters(InitPreset preset, Generator& gen) {
  NoGradGuard no_grad;
  const int64_t in = options_.in_features(), out = options_.out_features();
  switch (preset) {
    case InitPreset::Torch: {
      // kaiming_uniform_(a = sqrt(5)) gives bound 1/sqrt(in); the bias uses the same bound.
      kaiming_uniform_(weight_, std::sqrt(5.0), FanMode::FanIn, Nonlinearity::LeakyRelu, gen);
      if (bias_.defined()) {
        const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
        uniform_(bias_, -bound, bound, gen);
      }
      break;
    }
    case InitPreset::Paddle: {
      // Paddle's weight is [in, out]: Xavier uniform with its fans (fan_in = in, fan_out = out).
      const double a = xavier_uniform_bound(paddle_fans({in, out}));
      uniform_(weight_, -a, a, gen);
      if (bias_.defined()) zeros_(bias_);
      break;
    }
    case InitPreset::Keras: {
      // Dense kernel (in, out): glorot_uniform, limit sqrt(6 / (in + out)).
      const double a = xavier_uniform_bound({in, out});
      uniform_(weight_, -a, a, gen);
      if (bias_.defined()) zeros_(bias_);
      break;
    }
  }
}

std::string Linear::extra_repr() const {
  return "in_features=" + std::to_string(options_.in_features()) +
         ", out_features=" + std::to_string(options_.out_features()) + ", bias=" + (options_.bias() ? "True" : "False");
}

}  // namespace hmer
