// batch_norm2d: batch or running statistics, the in-place running update, and the backward; and
// batch_norm_relu_dropout, the same normalisation fused with the activation and dropout after it.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "core/ops_detail.h"
#include "core/rng.h"
#include "kernels/cpu/batch_norm.h"

namespace hmer {

namespace {

void check_channel_param(const char* op, const Tensor& t, const char* what, const Tensor& x, bool same_dtype) {
  if (!t.defined()) return;
  HMER_CHECK(t.dim() == 1 && t.size(0) == x.size(1), op, ": ", what, " has shape ", shape_str(t.shape()),
             ", expected (", x.size(1), ") for input ", shape_str(x.shape()));
  HMER_CHECK(is_floating(t.dtype()), op, ": ", what, " must be floating, got ", t.str());
  HMER_CHECK(!same_dtype || t.dtype() == x.dtype(), op, ": ", what, " is ", t.str(), " but the input is ",
             x.str());
}

}  // namespace

namespace detail {

BatchNormPass batch_norm_prepare(const char* op, const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                                 const Tensor& running_mean, const Tensor& running_var,
                                 const BatchNormOptions& options, bool defer_batch_stats) {
  HMER_CHECK(x_in.defined(), op, ": undefined input");
  HMER_CHECK(is_floating(x_in.dtype()), op, ": expected a floating input, got ", x_in.str());
  HMER_CHECK(x_in.dim() == 4, op, ": expected a 4-D input (N, C, H, W), got ", shape_str(x_in.shape()));
  check_same_device(op, {&x_in, &weight, &bias, &running_mean, &running_var});
  check_channel_param(op, weight, "weight", x_in, true);
  check_channel_param(op, bias, "bias", x_in, true);
  check_channel_param(op, running_mean, "running_mean", x_in, false);
  check_channel_param(op, running_var, "running_var", x_in, false);
  HMER_CHECK(running_mean.defined() == running_var.defined(),
             op, ": running_mean and running_var must be both defined or both undefined");
  HMER_CHECK(options.eps > 0, op, ": eps must be positive, got ", options.eps);
  const bool training = options.training;
  const int64_t C = x_in.size(1);
  const int64_t count = x_in.size(0) * x_in.size(2) * x_in.size(3);
  if (training) {
    HMER_CHECK(count > 1, op, ": expected more than 1 value per channel when training, got input size ",
               shape_str(x_in.shape()));
    HMER_CHECK(options.momentum >= 0 && options.momentum <= 1, op, ": momentum must be in [0, 1], got ",
               options.momentum);
  } else {
    HMER_CHECK(running_mean.defined(), op, ": running_mean and running_var must be defined in eval mode");
  }

  Tensor x = x_in.detach().contiguous();
  Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  // float64 statistics whatever the input dtype (see kernels/cpu/batch_norm.h).
  Tensor mean = Tensor::empty({C}, DType::Float64, x.device());
  Tensor invstd = Tensor::empty({C}, DType::Float64, x.device());
  Tensor var;
  if (training) {
    var = Tensor::empty({C}, DType::Float64, x.device());
    if (!defer_batch_stats) {
      HMER_DISPATCH_DEVICE("batch_norm2d", x.device(), cpu::batch_norm_batch_stats(x, options.eps, mean, var, invstd),
                           HMER_NO_CUDA);
    }
  } else {
    HMER_DISPATCH_DEVICE("batch_norm2d", x.device(),
                         cpu::batch_norm_running_stats(running_mean, running_var, options.eps, mean, invstd),
                         HMER_NO_CUDA);
  }
  BatchNormPass pass{x, w, b, mean, invstd, var};
  pass.training = training;
  pass.need_x = x_in.requires_grad();
  pass.need_w = weight.defined() && weight.requires_grad();
  pass.need_b = bias.defined() && bias.requires_grad();
  if (!defer_batch_stats) pass.update_running(running_mean, running_var, options);
  return pass;
}

void BatchNormPass::update_running(const Tensor& running_mean, const Tensor& running_var,
                                   const BatchNormOptions& options) const {
  if (!training || !running_mean.defined()) return;
  // Buffers, not parameters: updated in place outside the graph.
  NoGradGuard no_grad;
  const int64_t count = x.size(0) * x.size(2) * x.size(3);
  const double m = options.momentum;
  const bool torch_flavor = options.flavor == BatchNormFlavor::Torch;
  const double keep = torch_flavor ? 1.0 - m : m;
  const double take = torch_flavor ? m : 1.0 - m;
  const double correction = torch_flavor ? static_cast<double>(count) / static_cast<double>(count - 1) : 1.0;
  HMER_DISPATCH_DEVICE("batch_norm2d", x.device(),
                       cpu::batch_norm_update_running(mean, var, keep, take, correction, running_mean, running_var),
                       HMER_NO_CUDA);
}

void BatchNormPass::copy_affine() {
  if (w.defined()) w = w.clone();
  if (b.defined()) b = b.clone();
}

std::vector<Tensor> BatchNormPass::input_grads(const Tensor& g_bn, const char* op) const {
  const int64_t C = x.size(1);
  Tensor gx = need_x ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
  Tensor gw = need_w ? Tensor::empty({C}, x.dtype(), x.device()) : Tensor();
  Tensor gb = need_b ? Tensor::empty({C}, x.dtype(), x.device()) : Tensor();
  HMER_DISPATCH_DEVICE(op, g_bn.device(), cpu::batch_norm_backward(g_bn, x, mean, invstd, w, training, gx, gw, gb),
                       HMER_NO_CUDA);
  return {gx, gw, gb};
}

std::vector<Tensor> BatchNormPass::relu_dropout_input_grads(const Tensor& g, const cpu::ReluDropout& rd,
                                                            const Tensor& g_bn, const char* op) const {
  const int64_t C = x.size(1);
  Tensor gx = need_x ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
  Tensor gw = need_w ? Tensor::empty({C}, x.dtype(), x.device()) : Tensor();
  Tensor gb = need_b ? Tensor::empty({C}, x.dtype(), x.device()) : Tensor();
  HMER_DISPATCH_DEVICE(
      op, g.device(),
      cpu::batch_norm_relu_dropout_backward(g, x, mean, invstd, w, b, rd, training, g_bn, gx, gw, gb), HMER_NO_CUDA);
  return {gx, gw, gb};
}

ReluDropoutPlan plan_relu_dropout(double p, bool dropout_training, Generator* generator, const Tensor& x,
                                  bool for_backward) {
  ReluDropoutPlan plan;
  if (dropout_training && p > 0.0) {
    // The same draw dropout() makes on the same tensor, so the stream stays where the unfused layers leave it.
    Generator& gen = generator != nullptr ? *generator : default_generator();
    plan.rd.p = p;
    plan.rd.seed = gen.seed();
    plan.rd.offset = gen.reserve(static_cast<uint64_t>(x.numel()));
    if (for_backward) {
      plan.rd.row_words = cpu::keep_mask_row_words(x.size(2) * x.size(3));
      plan.keep_bits = Tensor::empty({x.size(0) * x.size(1) * plan.rd.row_words}, DType::Int64, x.device());
    }
  }
  return plan;
}

void batch_norm_relu_dropout_forward(const BatchNormPass& bn, const BatchNormOptions& options,
                                     const cpu::ReluDropout& rd, const Tensor& y) {
  if (bn.training) {
    HMER_DISPATCH_DEVICE("batch_norm_relu_dropout", bn.x.device(),
                         cpu::batch_norm_relu_dropout_train_forward(bn.x, options.eps, bn.mean, bn.var, bn.invstd,
                                                                    bn.w, bn.b, rd, y),
                         HMER_NO_CUDA);
  } else {
    HMER_DISPATCH_DEVICE("batch_norm_relu_dropout", bn.x.device(),
                         cpu::batch_norm_relu_dropout_forward(bn.x, bn.mean, bn.invstd, bn.w, bn.b, rd, y),
                         HMER_NO_CUDA);
  }
}

cpu::ReluDropout ReluDropoutPlan::recording() const {
  cpu::ReluDropout r = rd;
  if (keep_bits.defined()) r.record = reinterpret_cast<uint64_t*>(keep_bits.data_ptr<int64_t>());
  return r;
}

cpu::ReluDropout ReluDropoutPlan::replaying() const {
  cpu::ReluDropout r = rd;
  if (keep_bits.defined()) r.replay = reinterpret_cast<const uint64_t*>(keep_bits.data_ptr<int64_t>());
  return r;
}

}  // namespace detail

Tensor batch_norm2d(const Tensor& x_in, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                    const Tensor& running_var, const BatchNormOptions& options) {
  const detail::BatchNormPass bn =
      detail::batch_norm_prepare("batch_norm2d", x_in, weight, bias, running_mean, running_var, options);
  Tensor y = Tensor::empty(bn.x.shape(), bn.x.dtype(), bn.x.device());
  HMER_DISPATCH_DEVICE("batch_norm2d", bn.x.device(), cpu::batch_norm_forward(bn.x, bn.mean, bn.invstd, bn.w, bn.b, y),
                       HMER_NO_CUDA);
  return record_fn(y, bn.training ? "BatchNorm2dBackward" : "BatchNorm2dEvalBackward", {x_in, weight, bias},
                   [bn](const Tensor& g_in) { return bn.input_grads(g_in.contiguous(), "batch_norm2d_backward"); });
}

Tensor batch_norm_relu_dropout(const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                               const Tensor& running_mean, const Tensor& running_var, const BatchNormOptions& options,
                               double p, bool dropout_training, Generator* generator) {
  HMER_CHECK(p >= 0.0 && p <= 1.0, "batch_norm_relu_dropout: probability has to be between 0 and 1, but got ", p);
  // p = 1 is torch's x·0 (NaN for non-finite x): rare enough to take the unfused path.
  if (dropout_training && p == 1.0)
    return dropout(relu(batch_norm2d(x_in, weight, bias, running_mean, running_var, options)), p, true, generator);
  detail::BatchNormPass bn = detail::batch_norm_prepare("batch_norm_relu_dropout", x_in, weight, bias, running_mean,
                                                        running_var, options, /*defer_batch_stats=*/true);
  bn.copy_affine();
  const bool backward = GradMode::is_enabled() && bn.needs_grad();
  const detail::ReluDropoutPlan plan = detail::plan_relu_dropout(p, dropout_training, generator, bn.x, backward);
  Tensor y = Tensor::empty(bn.x.shape(), bn.x.dtype(), bn.x.device());
  detail::batch_norm_relu_dropout_forward(bn, options, plan.recording(), y);
  bn.update_running(running_mean, running_var, options);

  // Saves x, the statistics and the keep bits only: relu's sign is recomputed, where the unfused
  // chain keeps the normalised tensor, the activation and the dropout output alive.
  return record_fn(y, bn.training ? "BatchNormReluDropoutBackward" : "BatchNormReluDropoutEvalBackward",
                   {x_in, weight, bias}, [bn, plan](const Tensor& g_in) {
                     Tensor g = g_in.contiguous();
                     Tensor g_bn = Tensor::empty(bn.x.shape(), bn.x.dtype(), bn.x.device());
                     return bn.relu_dropout_input_grads(g, plan.replaying(), g_bn, "batch_norm_relu_dropout_backward");
                   });
}

}  // namespace hmer
