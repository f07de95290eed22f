#pragma once
// CPU batch normalisation over (N, C, H, W): per-channel statistics, the normalising forward, the
// running-statistics update and the backward. Statistics are float64 tensors of shape (C) whatever
// the input dtype, so float32 training accumulates like torch's CPU kernel (acc_type<float> = double).
#include <cstdint>

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

// The fused y = dropout(relu(batch_norm(x))) of DenseNet's post-activation layers. `p` 0 means
// no dropout (eval, or a layer without it); otherwise element i is kept as dropout_apply decides for
// the stream (seed, offset). Each value is computed as the three separate kernels compute it, so
// the result is bit-identical to batch_norm_forward + relu + dropout_apply.
struct ReluDropout {
  double p = 0.0;
  uint64_t seed = 0, offset = 0;
  // Optional packed keep mask, one bit per element, each (n, c) row starting on its own 64-bit word
  // (row_words of them) so threads never share a word: the forward records the Philox decisions in
  // `record`, and later passes read them from `replay` instead of running the generator again.
  uint64_t* record = nullptr;
  const uint64_t* replay = nullptr;
  int64_t row_words = 0;
};
// Words per (n, c) row of a keep mask for x (N, C, H, W): ceil(H·W / 64).
inline int64_t keep_mask_row_words(int64_t hw) { return (hw + 63) / 64; }
void batch_norm_relu_dropout_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                                     const Tensor& bias, const ReluDropout& rd, const Tensor& y);

// Training mode: batch_norm_batch_stats and batch_norm_relu_dropout_forward in one pass over the
// channels, the same numbers bit for bit. Each channel's statistics are computed just before its
// rows are normalised, so its N·H·W values come from memory once and from cache after (the two
// kernels apart read the whole input three times from memory). mean, var, invstd (C) float64, out.
void batch_norm_relu_dropout_train_forward(const Tensor& x, double eps, const Tensor& mean, const Tensor& var,
                                           const Tensor& invstd, const Tensor& weight, const Tensor& bias,
                                           const ReluDropout& rd, const Tensor& y);

// The gradient reaching the batch norm's output: g·mask·scale where the recomputed normalised value is
// positive, else 0 (relu's and dropout_apply's backward in one pass; the ReLU sign recomputed from
// x, the dropout mask replayed from rd's bits or regenerated from the stream). g, x, g_bn (N, C, H, W) contiguous.
void batch_norm_relu_dropout_grad(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                  const Tensor& weight, const Tensor& bias, const ReluDropout& rd,
                                  const Tensor& g_bn);

// batch_norm_relu_dropout_grad and then batch_norm_backward on its result, channel by channel in one
// pass (a channel's g_bn rows are still in cache when its batch-norm gradient reads them), the same
// numbers bit for bit. g_bn receives the intermediate gradient and may be g itself (in place); gx,
// gw, gb as batch_norm_backward (each may be undefined).
void batch_norm_relu_dropout_backward(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                      const Tensor& weight, const Tensor& bias, const ReluDropout& rd, bool training,
                                      const Tensor& g_bn, const Tensor& gx, const Tensor& gw, const Tensor& gb);

}  // namespace hmer::cpu
