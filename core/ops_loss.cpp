// cross_entropy (torch semantics, framework-semantics §8), smooth_l1_loss and mse_loss.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/loss.h"

namespace hmer {

Tensor cross_entropy(const Tensor& logits_in, const Tensor& target_in, const Tensor& weight_in, int64_t ignore_index,
                     Reduction reduction) {
  HMER_CHECK(logits_in.defined() && target_in.defined(), "cross_entropy: undefined logits or target");
  HMER_CHECK(is_floating(logits_in.dtype()), "cross_entropy: logits must be floating, got ", logits_in.str());
  HMER_CHECK(target_in.dtype() == DType::Int64, "cross_entropy: target must be int64 class indices, got ",
             target_in.str());
  check_same_device("cross_entropy", {&logits_in, &target_in, &weight_in});
  HMER_CHECK(logits_in.dim() == 2, "cross_entropy: expected logits (N, C), got ", shape_str(logits_in.shape()));
  const int64_t N = logits_in.size(0), C = logits_in.size(1);
  HMER_CHECK(C > 0, "cross_entropy: logits ", shape_str(logits_in.shape()), " have no classes");
  HMER_CHECK(target_in.dim() == 1 && target_in.size(0) == N, "cross_entropy: target ", shape_str(target_in.shape()),
             " does not match logits ", shape_str(logits_in.shape()), " (expected (", N, "))");
  if (weight_in.defined()) {
    HMER_CHECK(weight_in.dim() == 1 && weight_in.size(0) == C, "cross_entropy: weight ", shape_str(weight_in.shape()),
               " must be (", C, ") for logits ", shape_str(logits_in.shape()));
    HMER_CHECK(weight_in.dtype() == logits_in.dtype(), "cross_entropy: weight is ", weight_in.str(),
               " but logits are ", logits_in.str());
  }
  Tensor logits = logits_in.detach().contiguous();
  Tensor target = contiguous_copy(target_in.detach());  // own copy: the backward re-reads it
  Tensor weight = weight_in.defined() ? weight_in.detach().contiguous() : Tensor();
  Tensor lse = Tensor::empty({N}, DType::Float64, logits.device());
  Tensor losses = reduction == Reduction::None ? Tensor::empty({N}, logits.dtype(), logits.device()) : Tensor();
  cpu::CrossEntropySums sums;
  HMER_DISPATCH_DEVICE("cross_entropy", logits.device(),
                       sums = cpu::cross_entropy_forward(logits, target, weight, ignore_index, losses, lse),
                       HMER_NO_CUDA);
  Tensor out;
  double scale = 1.0;
  switch (reduction) {
    case Reduction::None: out = losses; break;
    case Reduction::Sum: out = Tensor::full({}, sums.loss, logits.dtype(), logits.device()); break;
    case Reduction::Mean:
      // All entries ignored: 0/0 = NaN, as torch.
      out = Tensor::full({}, sums.loss / sums.weight, logits.dtype(), logits.device());
      scale = 1.0 / sums.weight;
      break;
  }
  return record_fn(out, "CrossEntropyBackward", {logits_in}, [=](const Tensor& g_in) {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    // With every entry ignored no row reads scale (inf), so the gradient is all zeros.
    HMER_DISPATCH_DEVICE("cross_entropy_backward", g.device(),
                         cpu::cross_entropy_backward(logits, target, weight, ignore_index, lse, g, scale, gx),
                         HMER_NO_CUDA);
    return std::vector<Tensor>{gx};
  });
}

namespace {

Tensor pointwise_loss(cpu::PointwiseLoss kind, const char* name, const Tensor& input_in, const Tensor& target_in,
                      Reduction reduction, double beta) {
  HMER_CHECK(input_in.defined() && target_in.defined(), name, ": undefined input or target");
  HMER_CHECK(is_floating(input_in.dtype()), name, ": input must be floating, got ", input_in.str());
  check_same_device(name, {&input_in, &target_in});
  check_same_dtype(name, {&input_in, &target_in});
  HMER_CHECK(input_in.shape() == target_in.shape(), name, ": input ", shape_str(input_in.shape()), " and target ",
             shape_str(target_in.shape()), " must have the same shape");
  Tensor input = input_in.detach().contiguous();
  Tensor target = target_in.detach().contiguous();
  Tensor elementwise = reduction == Reduction::None ? Tensor::empty(input.shape(), input.dtype(), input.device())
                                                    : Tensor();
  double total = 0.0;
  HMER_DISPATCH_DEVICE(name, input.device(),
                       total = cpu::pointwise_loss_forward(kind, input, target, beta, elementwise), HMER_NO_CUDA);
  const double n = static_cast<double>(input.numel());
  Tensor out;
  switch (reduction) {
    case Reduction::None: out = elementwise; break;
    case Reduction::Sum: out = Tensor::full({}, total, input.dtype(), input.device()); break;
    case Reduction::Mean: out = Tensor::full({}, total / n, input.dtype(), input.device()); break;
  }
  const double scale = reduction == Reduction::Mean ? 1.0 / n : 1.0;
  const bool gi_needed = input_in.requires_grad(), gt_needed = target_in.requires_grad();
  return record_fn(out, name, {input_in, target_in}, [=](const Tensor& g_in) {
    Tensor g = g_in.contiguous();
    Tensor gi = gi_needed ? Tensor::empty(input.shape(), input.dtype(), input.device()) : Tensor();
    Tensor gt = gt_needed ? Tensor::empty(input.shape(), input.dtype(), input.device()) : Tensor();
    HMER_DISPATCH_DEVICE(name, g.device(), cpu::pointwise_loss_backward(kind, input, target, beta, g, scale, gi, gt),
                         HMER_NO_CUDA);
    return std::vector<Tensor>{gi, gt};
  });
}

}  // namespace

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction, double beta) {
  HMER_CHECK(beta >= 0, "smooth_l1_loss: beta must be non-negative, got ", beta);
  return pointwise_loss(cpu::PointwiseLoss::SmoothL1, "smooth_l1_loss", input, target, reduction, beta);
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  return pointwise_loss(cpu::PointwiseLoss::Mse, "mse_loss", input, target, reduction, 0.0);
}

}  // namespace hmer
