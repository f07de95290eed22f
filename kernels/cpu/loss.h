#pragma once
// CPU losses: cross-entropy over class logits, and the point-wise regression losses (smooth L1, MSE).
// Sums are accumulated in double over fixed-size chunks combined in order, so a reduced loss is
// bitwise the same whatever the thread count.
#include <cstdint>

#include "core/tensor.h"

namespace hmer::cpu {

struct CrossEntropySums {
  double loss = 0.0;    // Σ_i w_{y_i}·(−log p_{i,y_i}) over non-ignored entries
  double weight = 0.0;  // Σ_i w_{y_i} over non-ignored entries (the count without class weights)
};

// logits (N, C) contiguous floating; target (N) contiguous int64; weight (C) contiguous in the
// logits' dtype or undefined. Fails naming the first target that is neither ignore_index nor in
// [0, C). Writes losses (N) (0 for ignored entries, logits' dtype) when defined, and lse (N) float64
// = max + log Σ exp(x − max) per row for the backward.
CrossEntropySums cross_entropy_forward(const Tensor& logits, const Tensor& target, const Tensor& weight,
                                       int64_t ignore_index, const Tensor& losses, const Tensor& lse);

// gx_{ij} = coef_i·(softmax_{ij} − [j == y_i]) with coef_i = g_i·w_{y_i}·scale (0 for ignored
// entries). g is (N) for reduction none or one element for mean/sum; scale is 1/Σw for mean, else 1.
void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& weight, int64_t ignore_index,
                            const Tensor& lse, const Tensor& g, double scale, const Tensor& gx);

enum class PointwiseLoss { SmoothL1, Mse };

// Element-wise loss of input vs target (contiguous, same shape and floating dtype) in their dtype:
//   smooth L1: |d| < beta ? 0.5·d²/beta : |d| − 0.5·beta   (d = input − target; beta = 0 is L1)
//   mse:       d²
// Writes it to `out` (same shape) when defined; returns the sum of the element-wise values in double.
double pointwise_loss_forward(PointwiseLoss kind, const Tensor& input, const Tensor& target, double beta,
                              const Tensor& out);

// gi = dL/dinput for upstream g (same shape as input, or one element for mean/sum) times scale
// (1/n for mean, else 1); gt = −gi. Either output may be undefined.
void pointwise_loss_backward(PointwiseLoss kind, const Tensor& input, const Tensor& target, double beta,
                             const Tensor& g, double scale, const Tensor& gi, const Tensor& gt);

}  // namespace hmer::cpu
