#pragma once
// Shared by the op files (core/ops_*.cpp), not public API: the pieces the fused ops compose
// (core/ops_dense.cpp uses the batch-norm pass and the checked conv2d shape together).
#include "core/ops.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/conv2d.h"

namespace hmer::detail {

// Validated conv2d geometry for x (N, C, H, W), w (O, C, kh, kw) and optional bias (O).
cpu::Conv2dShape conv2d_shape(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& o);

// True when every image of x (N, C, H, W) is one contiguous (C, H, W) block, however far apart the
// images are: a leading channel slice of a wider buffer (DenseNet's in-place concatenation). The
// kernels then read x in place, and the graph keeps a view instead of a private copy.
bool images_contiguous(const Tensor& x);

// What a batch norm's forward and backward share: the contiguous input and affine, the float64
// statistics (batch or running).
struct BatchNormPass {
  Tensor x, w, b, mean, invstd;
  Tensor var;  // training with deferred statistics: the batch variance, filled by the fused kernel
  bool training = true;                             // batch statistics (their gradient flows into x)
  bool need_x = false, need_w = false, need_b = false;  // which inputs want a gradient
  bool needs_grad() const { return need_x || need_w || need_b; }
  // The fused ops recompute their activation from w and b in the backward: private copies (C values
  // each), so an in-place parameter update before the backward cannot change the recomputed masks.
  void copy_affine();
  // {grad_x, grad_weight, grad_bias} (undefined where not wanted) from the gradient g_bn (N, C, H, W,
  // contiguous) reaching the normalised output.
  std::vector<Tensor> input_grads(const Tensor& g_bn, const char* op) const;
  // The same from the gradient g reaching relu(dropout(...)) of the normalised output, through one
  // fused kernel: g_bn (N, C, H, W) receives the intermediate gradient and may be g itself.
  std::vector<Tensor> relu_dropout_input_grads(const Tensor& g, const cpu::ReluDropout& rd, const Tensor& g_bn,
                                               const char* op) const;
  // After a fused kernel has filled the deferred batch statistics: the running buffers' update
  // batch_norm_prepare would have made (nothing in eval mode or without buffers).
  void update_running(const Tensor& running_mean, const Tensor& running_var, const BatchNormOptions& options) const;
};

// Validates, computes the statistics and, when training, updates the running buffers in place.
// `op` names the caller in error messages. With defer_batch_stats (training only), the batch
// statistics are left to a fused kernel that computes them on its way over the input
// (cpu::batch_norm_relu_dropout_train_forward into mean, var, invstd), and the caller then calls
// update_running.
BatchNormPass batch_norm_prepare(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 const Tensor& running_mean, const Tensor& running_var,
                                 const BatchNormOptions& options, bool defer_batch_stats = false);

// The dropout part of a fused batch_norm_relu_dropout over x (N, C, H, W): draws from the generator
// (default_generator() when null) exactly what dropout() would, or nothing (p = 0 or not training).
// With `for_backward`, a one-bit-per-element keep mask is recorded by the forward and replayed by
// the backward passes, so the Philox stream runs once per element instead of once per pass.
struct ReluDropoutPlan {
  cpu::ReluDropout rd;
  Tensor keep_bits;  // int64 words, (N·C·row_words); undefined without dropout or backward
  cpu::ReluDropout recording() const;
  cpu::ReluDropout replaying() const;
};
ReluDropoutPlan plan_relu_dropout(double p, bool dropout_training, Generator* generator, const Tensor& x,
                                  bool for_backward);

// y = dropout(relu(batch_norm(x))) for a pass from batch_norm_prepare with deferred statistics: in
// training the fused kernel also computes them (the caller then updates the running buffers).
void batch_norm_relu_dropout_forward(const BatchNormPass& bn, const BatchNormOptions& options,
                                     const cpu::ReluDropout& rd, const Tensor& y);

// ChannelConcat's gradient buffer: the gradient of its channels [0, C) during one backward pass.
struct ConcatGrad {
  Tensor buffer;     // (N, C, H, W), contiguous
  uint64_t pass = 0;  // the backward pass it belongs to (backward_pass_id())
  // This pass's buffer, or undefined when no result's gradient has arrived yet in this pass.
  Tensor current() const;
  // The gradient `grad` (N, C', H, W) of a result with C' channels as channels [0, C') of this pass's
  // buffer: `grad` itself when it already is that slice (the common case: the next result's backward
  // handed it down and only in-place conv2d gradients were added), otherwise copied in (the first
  // gradient of the pass, or one the engine summed from other consumers).
  Tensor adopt(const Tensor& grad);
};

}  // namespace hmer::detail
