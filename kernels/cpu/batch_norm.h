#pragma once
// CPU batch normalisation over (N, C, H, W): per-channel statistics, the normalising forward, the
// running-statistics update and the backward. Statistics are float64 tensors of shape (C) whatever
// the input dtype, so float32 training accumulates like torch's CPU kernel (acc_type<float> = double).
#include "core/tensor.h"

namespace hmer::cpu {

// Batch mean and biased variance (÷ N·H·W) per channel, two-pass in double, and
// invstd = 1 / sqrt(var + eps). x (N, C, H, W) contiguous; mean, var, invstd (C) float64.
void batch_norm_batch_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& var, const Tensor& invstd);

// Eval-mode statistics from the running buffers (any floating dtype, any stride):
// mean = running_mean, invstd = 1 / sqrt(running_var + eps). mean, invstd (C) float64.
void batch_norm_running_stats(const Tensor& running_mean, const Tensor& running_var, double eps, const Tensor& mean,
                              const Tensor& invstd);

// running = keep·running + take·batch, in place (any floating dtype, any stride). The variance term
// is the batch's biased variance times var_correction (M/(M−1) for torch's unbiased update, 1 for Paddle).
void batch_norm_update_running(const Tensor& batch_mean, const Tensor& batch_var, double keep, double take,
                               double var_correction, const Tensor& running_mean, const Tensor& running_var);

// y = (x − mean)·invstd·weight + bias. x, y (N, C, H, W) contiguous; weight, bias (C) contiguous
// in x's dtype or undefined (affine = false).
void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                        const Tensor& bias, const Tensor& y);

// Gradients for x, weight and bias (each may be undefined to skip it). g, x, gx (N, C, H, W)
// contiguous. training: the batch statistics depend on x, so
//   gx = (g − mean(g) − x̂·mean(g·x̂))·invstd·w;
// eval: the statistics are constants and gx = g·invstd·w. In both gw = Σ g·x̂, gb = Σ g.
void batch_norm_backward(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                         const Tensor& weight, bool training, const Tensor& gx, const Tensor& gw, const Tensor& gb);

}  // namespace hmer::cpu
