// max_pool2d and avg_pool2d with PyTorch's output-size, padding and divisor rules.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/pool.h"

namespace hmer {

namespace {

int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

cpu::Pool2dShape pool_shape(const char* op, const Tensor& x, const Pool2dOptions& o) {
  HMER_CHECK(x.defined(), op, ": undefined input");
  HMER_CHECK(is_floating(x.dtype()), op, ": expected a float32 or float64 tensor, got ", x.str());
  HMER_CHECK(x.dim() == 4, op, ": expected input (N, C, H, W), got ", shape_str(x.shape()));
  HMER_CHECK(o.kernel[0] > 0 && o.kernel[1] > 0, op, ": kernel must be positive, got ", pair_str(o.kernel));
  HMER_CHECK(o.stride[0] >= 0 && o.stride[1] >= 0, op, ": stride must be positive (or 0 for the kernel size), got ",
             pair_str(o.stride));
  HMER_CHECK(o.padding[0] >= 0 && o.padding[1] >= 0, op, ": padding must be non-negative, got ",
             pair_str(o.padding));
  // PyTorch's rule: otherwise a window could lie entirely in the padding.
  HMER_CHECK(o.padding[0] <= o.kernel[0] / 2 && o.padding[1] <= o.kernel[1] / 2, op, ": padding ",
             pair_str(o.padding), " must be at most half the kernel ", pair_str(o.kernel));
  cpu::Pool2dShape s{};
  s.N = x.size(0);
  s.C = x.size(1);
  s.H = x.size(2);
  s.W = x.size(3);
  s.kh = o.kernel[0];
  s.kw = o.kernel[1];
  s.sh = o.stride[0] == 0 ? s.kh : o.stride[0];
  s.sw = o.stride[1] == 0 ? s.kw : o.stride[1];
  s.ph = o.padding[0];
  s.pw = o.padding[1];
  s.count_include_pad = o.count_include_pad;
  s.OH = pool_output_size(s.H, s.kh, s.sh, s.ph, 1, o.ceil_mode);
  s.OW = pool_output_size(s.W, s.kw, s.sw, s.pw, 1, o.ceil_mode);
  HMER_CHECK(s.OH >= 1 && s.OW >= 1, op, ": input ", shape_str(x.shape()), " is too small for kernel ",
             pair_str(o.kernel), " with padding ", pair_str(o.padding), ": output would be ", s.OH, "x", s.OW);
  return s;
}

}  // namespace

int64_t pool_output_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  HMER_CHECK(k > 0 && s > 0 && d > 0 && p >= 0, "pool_output_size: need kernel, stride, dilation > 0 and padding >= 0, got k=",
             k, " s=", s, " d=", d, " p=", p);
  int64_t out = floor_div(in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0), s) + 1;
  // The last window must start inside the input or its left padding, never in the right padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

Tensor max_pool2d(const Tensor& x_in, const Pool2dOptions& options) {
  const cpu::Pool2dShape s = pool_shape("max_pool2d", x_in, options);
  Tensor x = x_in.detach().contiguous();
  Tensor y = Tensor::empty({s.N, s.C, s.OH, s.OW}, x.dtype(), x.device());
  Tensor indices = Tensor::empty({s.N, s.C, s.OH, s.OW}, DType::Int64, x.device());
  HMER_DISPATCH_DEVICE("max_pool2d", x.device(), cpu::max_pool2d_forward(s, x, y, indices), HMER_NO_CUDA);
  return record_fn(y, "MaxPool2dBackward", {x_in}, [s, indices](const Tensor& g_in) {
    Tensor g = g_in.contiguous();  // (N, C, OH, OW)
    Tensor gx = Tensor::empty({s.N, s.C, s.H, s.W}, g.dtype(), g.device());
    HMER_DISPATCH_DEVICE("max_pool2d", g.device(), cpu::max_pool2d_backward(s, g, indices, gx), HMER_NO_CUDA);
    return std::vector<Tensor>{gx};
  });
}

Tensor avg_pool2d(const Tensor& x_in, const Pool2dOptions& options) {
  const cpu::Pool2dShape s = pool_shape("avg_pool2d", x_in, options);
  Tensor x = x_in.detach().contiguous();
  Tensor y = Tensor::empty({s.N, s.C, s.OH, s.OW}, x.dtype(), x.device());
  HMER_DISPATCH_DEVICE("avg_pool2d", x.device(), cpu::avg_pool2d_forward(s, x, y), HMER_NO_CUDA);
  return record_fn(y, "AvgPool2dBackward", {x_in}, [s](const Tensor& g_in) {
    Tensor g = g_in.contiguous();  // (N, C, OH, OW)
    Tensor gx = Tensor::empty({s.N, s.C, s.H, s.W}, g.dtype(), g.device());
    HMER_DISPATCH_DEVICE("avg_pool2d", g.device(), cpu::avg_pool2d_backward(s, g, gx), HMER_NO_CUDA);
    return std::vector<Tensor>{gx};
  });
}

}  // namespace hmer
