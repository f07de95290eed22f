// batch_norm2d: batch or running statistics, the in-place running update, and the backward.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/batch_norm.h"

namespace hmer {

namespace {

void check_channel_param(const Tensor& t, const char* what, const Tensor& x, bool same_dtype) {
  if (!t.defined()) return;
  HMER_CHECK(t.dim() == 1 && t.size(0) == x.size(1), "batch_norm2d: ", what, " has shape ", shape_str(t.shape()),
             ", expected (", x.size(1), ") for input ", shape_str(x.shape()));
  HMER_CHECK(is_floating(t.dtype()), "batch_norm2d: ", what, " must be floating, got ", t.str());
  HMER_CHECK(!same_dtype || t.dtype() == x.dtype(), "batch_norm2d: ", what, " is ", t.str(), " but the input is ",
             x.str());
}

}  // namespace

Tensor batch_norm2d(const Tensor& x_in, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                    const Tensor& running_var, const BatchNormOptions& options) {
  HMER_CHECK(x_in.defined(), "batch_norm2d: undefined input");
  HMER_CHECK(is_floating(x_in.dtype()), "batch_norm2d: expected a floating input, got ", x_in.str());
  HMER_CHECK(x_in.dim() == 4, "batch_norm2d: expected a 4-D input (N, C, H, W), got ", shape_str(x_in.shape()));
  check_same_device("batch_norm2d", {&x_in, &weight, &bias, &running_mean, &running_var});
  check_channel_param(weight, "weight", x_in, true);
  check_channel_param(bias, "bias", x_in, true);
  check_channel_param(running_mean, "running_mean", x_in, false);
  check_channel_param(running_var, "running_var", x_in, false);
  HMER_CHECK(running_mean.defined() == running_var.defined(),
             "batch_norm2d: running_mean and running_var must be both defined or both undefined");
  HMER_CHECK(options.eps > 0, "batch_norm2d: eps must be positive, got ", options.eps);
  const bool training = options.training;
  const int64_t C = x_in.size(1);
  const int64_t count = x_in.size(0) * x_in.size(2) * x_in.size(3);
  if (training) {
    HMER_CHECK(count > 1, "batch_norm2d: expected more than 1 value per channel when training, got input size ",
               shape_str(x_in.shape()));
    HMER_CHECK(options.momentum >= 0 && options.momentum <= 1, "batch_norm2d: momentum must be in [0, 1], got ",
               options.momentum);
  } else {
    HMER_CHECK(running_mean.defined(), "batch_norm2d: running_mean and running_var must be defined in eval mode");
  }

  Tensor x = x_in.detach().contiguous();
  Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  // float64 statistics whatever the input dtype (see kernels/cpu/batch_norm.h).
  Tensor mean = Tensor::empty({C}, DType::Float64, x.device());
  Tensor invstd = Tensor::empty({C}, DType::Float64, x.device());
  if (training) {
    Tensor var = Tensor::empty({C}, DType::Float64, x.device());
    HMER_DISPATCH_DEVICE("batch_norm2d", x.device(), cpu::batch_norm_batch_stats(x, options.eps, mean, var, invstd),
                         HMER_NO_CUDA);
    if (running_mean.defined()) {
      // Buffers, not parameters: updated in place outside the graph.
      NoGradGuard no_grad;
      const double m = options.momentum;
      const bool torch_flavor = options.flavor == BatchNormFlavor::Torch;
      const double keep = torch_flavor ? 1.0 - m : m;
      const double take = torch_flavor ? m : 1.0 - m;
      const double correction = torch_flavor ? static_cast<double>(count) / static_cast<double>(count - 1) : 1.0;
      HMER_DISPATCH_DEVICE(
          "batch_norm2d", x.device(),
          cpu::batch_norm_update_running(mean, var, keep, take, correction, running_mean, running_var), HMER_NO_CUDA);
    }
  } else {
    HMER_DISPATCH_DEVICE("batch_norm2d", x.device(),
                         cpu::batch_norm_running_stats(running_mean, running_var, options.eps, mean, invstd),
                         HMER_NO_CUDA);
  }
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  HMER_DISPATCH_DEVICE("batch_norm2d", x.device(), cpu::batch_norm_forward(x, mean, invstd, w, b, y), HMER_NO_CUDA);

  const bool need_x = x_in.requires_grad();
  const bool need_w = weight.defined() && weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  return record_fn(y, training ? "BatchNorm2dBackward" : "BatchNorm2dEvalBackward", {x_in, weight, bias},
                   [=](const Tensor& g_in) {
                     Tensor g = g_in.contiguous();
                     Tensor gx = need_x ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
                     Tensor gw = need_w ? Tensor::empty({C}, x.dtype(), x.device()) : Tensor();
                     Tensor gb = need_b ? Tensor::empty({C}, x.dtype(), x.device()) : Tensor();
                     HMER_DISPATCH_DEVICE("batch_norm2d_backward", g.device(),
                                          cpu::batch_norm_backward(g, x, mean, invstd, w, training, gx, gw, gb),
                                          HMER_NO_CUDA);
                     return std::vector<Tensor>{gx, gw, gb};
                   });
}

}  // namespace hmer
