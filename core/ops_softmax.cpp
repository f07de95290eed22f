// softmax / log_softmax over one dimension; the backward uses the saved output only.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/softmax.h"

namespace hmer {

namespace {

Tensor softmax_impl(const Tensor& x_in, int64_t dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  HMER_CHECK(x_in.defined(), name, ": undefined input");
  HMER_CHECK(is_floating(x_in.dtype()), name, ": expected a floating tensor, got ", x_in.str());
  const int64_t d = wrap_dim(dim, x_in.dim(), name);
  // (outer, D, inner) around the softmax axis; a 0-d tensor is one row of one element.
  int64_t outer = 1, D = 1, inner = 1;
  for (int64_t k = 0; k < x_in.dim(); ++k) {
    if (k < d) outer *= x_in.size(k);
    else if (k == d) D = x_in.size(k);
    else inner *= x_in.size(k);
  }
  Tensor x = x_in.detach().contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() > 0)
    HMER_DISPATCH_DEVICE(name, x.device(), cpu::softmax_forward(x, y, outer, D, inner, log), HMER_NO_CUDA);
  // A detached handle: capturing y itself would make y -> node -> closure -> y a reference cycle.
  const Tensor y_saved = y.detach();
  return record_fn(y, log ? "LogSoftmaxBackward" : "SoftmaxBackward", {x_in}, [=](const Tensor& g_in) {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    if (g.numel() > 0)
      HMER_DISPATCH_DEVICE(name, g.device(), cpu::softmax_backward(y_saved, g, gx, outer, D, inner, log), HMER_NO_CUDA);
    return std::vector<Tensor>{gx};
  });
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

}  // namespace hmer
