#include "layers/norm.h"

#include <sstream>

#include "core/autograd.h"
#include "layers/init.h"

namespace hmer {

BatchNorm2d::BatchNorm2d(const BatchNorm2dOptions& options) : UnaryModule("BatchNorm2d"), options_(options) {
  const int64_t C = options.num_features();
  HMER_CHECK(C > 0, "BatchNorm2d: num_features must be positive, got ", C);
  HMER_CHECK(options.eps() > 0, "BatchNorm2d: eps must be positive, got ", options.eps());
  HMER_CHECK(!options.momentum() || (*options.momentum() >= 0 && *options.momentum() <= 1),
             "BatchNorm2d: momentum must be in [0, 1], got ", options.momentum().value_or(0));
  HMER_CHECK(options.momentum() || options.flavor() == BatchNormFlavor::Torch,
             "BatchNorm2d: momentum=None (cumulative average) exists only in the Torch flavour");
  if (options.affine()) {
    weight_ = register_parameter("weight", Tensor::empty({C}));
    bias_ = register_parameter("bias", Tensor::empty({C}));
  }
  if (options.track_running_stats()) {
    running_mean_ = register_buffer("running_mean", Tensor::zeros({C}));
    running_var_ = register_buffer("running_var", Tensor::ones({C}));
    num_batches_tracked_ = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::Int64));
  }
  reset_parameters(InitPreset::Torch, default_generator());
}

void BatchNorm2d::reset_running_stats() {
  if (!options_.track_running_stats()) return;
  zeros_(running_mean_);
  ones_(running_var_);
  num_batches_tracked_.detach().fill_(0.0);
  batches_tracked_ = 0;
}

void BatchNorm2d::reset_parameters(InitPreset preset, Generator& gen) {
  // Every preset agrees: gamma 1, beta 0, mean 0, variance 1 (no random draw).
  NoGradGuard no_grad;
  reset_running_stats();
  if (options_.affine()) {
    ones_(weight_);
    zeros_(bias_);
  }
}

void BatchNorm2d::on_state_loaded() {
  if (!options_.track_running_stats()) return;
  batches_tracked_ = num_batches_tracked_.detach().to(Device::cpu()).item<int64_t>();
}

BatchNormOptions BatchNorm2d::begin_forward(const Tensor& x) {
  HMER_CHECK(x.defined() && x.dim() == 4, "BatchNorm2d: expected 4D input (N, C, H, W), got ",
             x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  HMER_CHECK(x.size(1) == options_.num_features(), "BatchNorm2d: input ", shape_str(x.shape()), " has ", x.size(1),
             " channels, expected num_features = ", options_.num_features());
  const bool track = options_.track_running_stats();
  double factor = 0.0;  // torch's exponential_average_factor
  if (is_training() && track) {
    ++batches_tracked_;
    num_batches_tracked_.detach().fill_(static_cast<double>(batches_tracked_));
    factor = options_.momentum() ? *options_.momentum() : 1.0 / static_cast<double>(batches_tracked_);
  }
  BatchNormOptions o;
  // Without running statistics the batch statistics are used in eval too (as torch).
  o.training = is_training() || !track;
  o.eps = options_.eps();
  o.flavor = options_.flavor();
  o.momentum = options_.flavor() == BatchNormFlavor::Paddle ? 1.0 - factor : factor;
  return o;
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  const BatchNormOptions o = begin_forward(x);
  return batch_norm2d(x, weight_, bias_, running_mean_, running_var_, o);
}

Tensor BatchNorm2d::forward_relu_dropout(const Tensor& x, double p, bool dropout_training, Generator* gen) {
  const BatchNormOptions o = begin_forward(x);
  return batch_norm_relu_dropout(x, weight_, bias_, running_mean_, running_var_, o, p, dropout_training, gen);
}

Tensor BatchNorm2d::forward_relu_dropout_conv(const Tensor& x, double p, bool dropout_training, Generator* gen,
                                              Conv2d& conv) {
  HMER_CHECK(!conv.bias().defined(), "BatchNorm2d::forward_relu_dropout_conv: the conv must be bias-free");
  const BatchNormOptions o = begin_forward(x);
  return batch_norm_relu_dropout_conv2d(x, weight_, bias_, running_mean_, running_var_, o, p, dropout_training, gen,
                                        conv.weight(), conv.functional_options());
}

std::string BatchNorm2d::extra_repr() const {
  std::ostringstream os;
  os << options_.num_features() << ", eps=" << options_.eps() << ", momentum=";
  if (options_.momentum()) os << *options_.momentum(); else os << "None";
  os << ", affine=" << (options_.affine() ? "True" : "False")
     << ", track_running_stats=" << (options_.track_running_stats() ? "True" : "False");
  if (options_.flavor() == BatchNormFlavor::Paddle) os << ", flavor=paddle";
  return os.str();
}

}  // namespace hmer
