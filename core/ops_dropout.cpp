// Inverted dropout with a counter-based mask (see kernels/cpu/dropout.h): the node keeps only
// (p, seed, offset) and regenerates the mask in the backward.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "core/rng.h"
#include "kernels/cpu/dropout.h"

namespace hmer {

Tensor dropout(const Tensor& x_in, double p, bool training, Generator* generator) {
  HMER_CHECK(x_in.defined(), "dropout: undefined input");
  HMER_CHECK(is_floating(x_in.dtype()), "dropout: expected a floating tensor, got ", x_in.str());
  HMER_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability has to be between 0 and 1, but got ", p);
  if (!training || p == 0.0) return x_in;
  // torch: input * 0, so the result and its gradient are zeros (NaN for non-finite inputs).
  if (p == 1.0) return mul(x_in, 0.0);
  Generator& gen = generator != nullptr ? *generator : default_generator();
  const uint64_t seed = gen.seed();
  const uint64_t offset = gen.reserve(static_cast<uint64_t>(x_in.numel()));
  Tensor x = x_in.detach().contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  HMER_DISPATCH_DEVICE("dropout", x.device(), cpu::dropout_apply(x, y, p, seed, offset), HMER_NO_CUDA);
  return record_fn(y, "DropoutBackward", {x_in}, [p, seed, offset](const Tensor& g_in) {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    HMER_DISPATCH_DEVICE("dropout_backward", g.device(), cpu::dropout_apply(g, gx, p, seed, offset), HMER_NO_CUDA);
    return std::vector<Tensor>{gx};
  });
}

}  // namespace hmer
