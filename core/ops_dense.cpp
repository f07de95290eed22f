// batch_norm_relu_dropout_conv2d: DenseNet's BN → ReLU → dropout → conv pair as one node that keeps
// only the normalised layer's input; the activation in between is recomputed in the backward.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "core/ops_detail.h"
#include "core/profiler.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/conv2d.h"

namespace hmer {

Tensor batch_norm_relu_dropout_conv2d(const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                                      const Tensor& running_mean, const Tensor& running_var,
                                      const BatchNormOptions& options, double p, bool dropout_training,
                                      Generator* generator, const Tensor& conv_weight_in,
                                      const Conv2dOptions& conv_options) {
  HMER_CHECK(p >= 0.0 && p <= 1.0, "batch_norm_relu_dropout_conv2d: probability has to be between 0 and 1, but got ",
             p);
  if (dropout_training && p == 1.0) {
    return conv2d(batch_norm_relu_dropout(x_in, weight, bias, running_mean, running_var, options, p, true, generator),
                  conv_weight_in, Tensor(), conv_options);
  }
  detail::BatchNormPass bn = detail::batch_norm_prepare("batch_norm_relu_dropout_conv2d", x_in, weight, bias,
                                                        running_mean, running_var, options, /*defer_batch_stats=*/true);
  bn.copy_affine();
  const Tensor &x = bn.x, &w = bn.w, &b = bn.b, &mean = bn.mean, &invstd = bn.invstd;
  const bool need_act = bn.needs_grad();
  const bool need_cw = conv_weight_in.requires_grad();
  const bool backward = GradMode::is_enabled() && (need_act || need_cw);
  const detail::ReluDropoutPlan plan = detail::plan_relu_dropout(p, dropout_training, generator, x, backward);
  Tensor act = Tensor::empty(x.shape(), x.dtype(), x.device());  // (N, C, H, W), dropped after the conv
  detail::batch_norm_relu_dropout_forward(bn, options, plan.recording(), act);
  bn.update_running(running_mean, running_var, options);
  const cpu::Conv2dShape s = detail::conv2d_shape(act, conv_weight_in, Tensor(), conv_options);
  const Tensor cw = conv_weight_in.detach().contiguous();
  Tensor y = Tensor::empty({s.N, s.O, s.OH, s.OW}, x.dtype(), x.device());
  HMER_DISPATCH_DEVICE("conv2d", x.device(), cpu::conv2d_forward(s, act, cw, Tensor(), y), HMER_NO_CUDA);
  profiler::add_flops(2.0 * static_cast<double>(y.numel()) * static_cast<double>(s.C * s.kh * s.kw));
  act = Tensor();

  return record_fn(
      y, bn.training ? "BatchNormReluDropoutConv2dBackward" : "BatchNormReluDropoutConv2dEvalBackward",
      {x_in, weight, bias, conv_weight_in}, [=](const Tensor& g_in) {
        Tensor g = g_in.contiguous();  // (N, O, OH, OW)
        // The activation again, bit for bit what the forward fed the conv (grad_weight reads it).
        Tensor act;
        if (need_cw) {
          act = Tensor::empty(x.shape(), x.dtype(), x.device());
          HMER_DISPATCH_DEVICE("batch_norm_relu_dropout", x.device(),
                               cpu::batch_norm_relu_dropout_forward(x, mean, invstd, w, b, plan.replaying(), act),
                               HMER_NO_CUDA);
        }
        Tensor g_act = need_act ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
        Tensor g_cw = need_cw ? Tensor::empty(cw.shape(), x.dtype(), x.device()) : Tensor();
        HMER_DISPATCH_DEVICE("conv2d", g.device(),
                             cpu::conv2d_backward(s, act, need_act ? cw : Tensor(), g, g_act, g_cw, Tensor()),
                             HMER_NO_CUDA);
        act = Tensor();
        if (!need_act) return std::vector<Tensor>{Tensor(), Tensor(), Tensor(), g_cw};
        // In place: g_act is this node's own buffer, and each element is read before it is written.
        std::vector<Tensor> grads =
            bn.relu_dropout_input_grads(g_act, plan.replaying(), g_act, "batch_norm_relu_dropout_backward");
        g_act = Tensor();
        grads.push_back(g_cw);
        return grads;
      });
}

}  // namespace hmer
