#include "layers/conv.h"

#include <sstream>

#include <cmath>

#include "core/autograd.h"
#include "layers/init.h"

namespace hmer {

Conv2d::Conv2d(const Conv2dLayerOptions& options, Generator* gen) : UnaryModule("Conv2d"), options_(options) {
  const Pair k = options.kernel_size();
  HMER_CHECK(options.in_channels() > 0 && options.out_channels() > 0 && k[0] > 0 && k[1] > 0,
             "Conv2d: channels and kernel size must be positive, got in ", options.in_channels(), ", out ",
             options.out_channels(), ", kernel ", pair_str(k));
  HMER_CHECK(options.stride()[0] > 0 && options.stride()[1] > 0 && options.dilation()[0] > 0 &&
                 options.dilation()[1] > 0 && options.padding()[0] >= 0 && options.padding()[1] >= 0,
             "Conv2d: stride ", pair_str(options.stride()), " and dilation ", pair_str(options.dilation()),
             " must be positive and padding ", pair_str(options.padding()), " non-negative");
  weight_ = register_parameter("weight", Tensor::empty({options.out_channels(), options.in_channels(), k[0], k[1]}));
  if (options.bias()) bias_ = register_parameter("bias", Tensor::empty({options.out_channels()}));
  reset_parameters(InitPreset::Torch, gen ? *gen : default_generator());
}

Conv2dOptions Conv2d::functional_options() const {
  Conv2dOptions o;
  o.stride = options_.stride();
  o.padding = options_.padding();
  o.dilation = options_.dilation();
  return o;
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight_, bias_, functional_options()); }

void Conv2d::reset_parameters(InitPreset preset, Generator& gen) {
  NoGradGuard no_grad;
  const int64_t in = options_.in_channels(), out = options_.out_channels();
  const int64_t khkw = options_.kernel_size()[0] * options_.kernel_size()[1];
  switch (preset) {
    case InitPreset::Torch: {
      // As Linear with fan_in = in * kh * kw: weight and bias U(±1/sqrt(fan_in)).
      kaiming_uniform_(weight_, std::sqrt(5.0), FanMode::FanIn, Nonlinearity::LeakyRelu, gen);
      if (bias_.defined()) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(in * khkw));
        uniform_(bias_, -bound, bound, gen);
      }
      break;
    }
    case InitPreset::Paddle:
      // _ConvNd default: Normal(0, sqrt(2 / (kh * kw * in_channels))), not truncated; bias 0.
      normal_(weight_, 0.0, std::sqrt(2.0 / static_cast<double>(khkw * in)), gen);
      if (bias_.defined()) zeros_(bias_);
      break;
    case InitPreset::Keras: {
      // Conv2D kernel (kh, kw, in, out): glorot_uniform with fan_in = kh*kw*in, fan_out = kh*kw*out.
      const double a = xavier_uniform_bound({khkw * in, khkw * out});
      uniform_(weight_, -a, a, gen);
      if (bias_.defined()) zeros_(bias_);
      break;
    }
  }
}

std::string Conv2d::extra_repr() const {
  std::string s = std::to_string(options_.in_channels()) + ", " + std::to_string(options_.out_channels()) +
                  ", kernel_size=" + pair_str(options_.kernel_size()) + ", stride=" + pair_str(options_.stride());
  if (options_.padding() != Pair{0, 0}) s += ", padding=" + pair_str(options_.padding());
  if (options_.dilation() != Pair{1, 1}) s += ", dilation=" + pair_str(options_.dilation());
  if (!options_.bias()) s += ", bias=False";
  return s;
}

}  // namespace hmer
