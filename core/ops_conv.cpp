// conv2d (groups = 1). Validation and autograd here; the im2col + GEMM kernels in kernels/cpu/conv2d.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "core/ops_detail.h"
#include "core/profiler.h"
#include "kernels/cpu/conv2d.h"

namespace hmer {

namespace detail {

cpu::Conv2dShape conv2d_shape(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& o) {
  HMER_CHECK(x.defined() && w.defined(), "conv2d: undefined input or weight");
  check_same_device("conv2d", {&x, &w, &bias});
  check_same_dtype("conv2d", {&x, &w, &bias});
  HMER_CHECK(is_floating(x.dtype()), "conv2d: expected float32 or float64 tensors, got input ", x.str());
  HMER_CHECK(x.dim() == 4, "conv2d: expected input (N, C, H, W), got ", shape_str(x.shape()));
  HMER_CHECK(w.dim() == 4, "conv2d: expected weight (O, C, kh, kw), got ", shape_str(w.shape()));
  HMER_CHECK(w.size(0) >= 1 && w.size(1) >= 1 && w.size(2) >= 1 && w.size(3) >= 1, "conv2d: weight ",
             shape_str(w.shape()), " has an empty dimension");
  HMER_CHECK(w.size(1) == x.size(1), "conv2d: weight ", shape_str(w.shape()), " expects ", w.size(1),
             " input channels but input ", shape_str(x.shape()), " has ", x.size(1));
  HMER_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.size(0)), "conv2d: bias ",
             bias.defined() ? shape_str(bias.shape()) : "", " must be (", w.size(0), ") for weight ",
             shape_str(w.shape()));
  HMER_CHECK(o.stride[0] > 0 && o.stride[1] > 0, "conv2d: stride must be positive, got ", pair_str(o.stride));
  HMER_CHECK(o.dilation[0] > 0 && o.dilation[1] > 0, "conv2d: dilation must be positive, got ",
             pair_str(o.dilation));
  HMER_CHECK(o.padding[0] >= 0 && o.padding[1] >= 0, "conv2d: padding must be non-negative, got ",
             pair_str(o.padding));
  cpu::Conv2dShape s{};
  s.N = x.size(0);
  s.C = x.size(1);
  s.H = x.size(2);
  s.W = x.size(3);
  s.O = w.size(0);
  s.kh = w.size(2);
  s.kw = w.size(3);
  s.sh = o.stride[0];
  s.sw = o.stride[1];
  s.ph = o.padding[0];
  s.pw = o.padding[1];
  s.dh = o.dilation[0];
  s.dw = o.dilation[1];
  s.OH = pool_output_size(s.H, s.kh, s.sh, s.ph, s.dh, false);
  s.OW = pool_output_size(s.W, s.kw, s.sw, s.pw, s.dw, false);
  HMER_CHECK(s.OH >= 1 && s.OW >= 1, "conv2d: input ", shape_str(x.shape()), " with padding ", pair_str(o.padding),
             " is smaller than the dilated kernel of weight ", shape_str(w.shape()), " (dilation ",
             pair_str(o.dilation), "): output would be ", s.OH, "x", s.OW);
  return s;
}

bool images_contiguous(const Tensor& x) {
  if (x.is_contiguous()) return true;
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  return x.stride(3) == 1 && (H == 1 || x.stride(2) == W) && (C == 1 || x.stride(1) == H * W) &&
         x.stride(0) >= C * H * W;
}

}  // namespace detail

namespace {

// conv2d, and with a sink (ChannelConcat's gradient state) the variant whose backward adds the input
// gradient into the sink's buffer of the running pass when there is one, returning none for x.
Tensor conv2d_impl(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, const Conv2dOptions& options,
                   std::shared_ptr<detail::ConcatGrad> sink) {
  cpu::Conv2dShape s = detail::conv2d_shape(x_in, w_in, bias_in, options);
  Tensor x = detail::images_contiguous(x_in) ? x_in.detach() : x_in.detach().contiguous();
  if (!x.is_contiguous() && s.N > 1) s.x_batch_stride = x.stride(0);
  Tensor w = w_in.detach().contiguous();
  Tensor b = bias_in.defined() ? bias_in.detach().contiguous() : Tensor();
  Tensor y = Tensor::empty({s.N, s.O, s.OH, s.OW}, x.dtype(), x.device());
  HMER_DISPATCH_DEVICE("conv2d", x.device(), cpu::conv2d_forward(s, x, w, b, y), HMER_NO_CUDA);
  profiler::add_flops(2.0 * static_cast<double>(y.numel()) * static_cast<double>(s.C * s.kh * s.kw));

  const bool need_gx = x_in.requires_grad();
  const bool need_gw = w_in.requires_grad();
  const bool need_gb = bias_in.defined() && bias_in.requires_grad();
  if (!need_gx || !x.device().is_cpu()) sink = nullptr;
  // grad_weight reads x and grad_input reads w: keep only what the wanted gradients need.
  Tensor x_saved = need_gw ? x : Tensor();
  Tensor w_saved = need_gx ? w : Tensor();
  return record_fn(y, "Conv2dBackward", {x_in, w_in, bias_in},
                   [s, x_saved, w_saved, need_gx, need_gw, need_gb, sink](const Tensor& g_in) {
                     Tensor g = g_in.contiguous();  // (N, O, OH, OW)
                     Tensor gx, gw, gb, into;
                     cpu::Conv2dShape sb = s;
                     if (sink != nullptr) {
                       into = sink->current();
                       if (into.defined() && (into.size(0) != s.N || into.size(1) < s.C || into.size(2) != s.H ||
                                              into.size(3) != s.W || into.dtype() != g.dtype())) {
                         into = Tensor();
                       }
                     }
                     if (into.defined()) {
                       sb.gx_batch_stride = into.stride(0);
                       sb.gx_accumulate = true;
                     } else if (need_gx) {
                       gx = Tensor::empty({s.N, s.C, s.H, s.W}, g.dtype(), g.device());
                       into = gx;
                     }
                     if (need_gw) gw = Tensor::empty({s.O, s.C, s.kh, s.kw}, g.dtype(), g.device());
                     if (need_gb) gb = Tensor::empty({s.O}, g.dtype(), g.device());
                     HMER_DISPATCH_DEVICE("conv2d", g.device(),
                                          cpu::conv2d_backward(sb, x_saved, w_saved, g, into, gw, gb), HMER_NO_CUDA);
                     return std::vector<Tensor>{gx, gw, gb};
                   });
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, const Conv2dOptions& options) {
  return conv2d_impl(x_in, w_in, bias_in, options, nullptr);
}

Tensor ChannelConcat::conv2d(const Tensor& weight, const Tensor& bias, const Conv2dOptions& options) const {
  return conv2d_impl(result_, weight, bias, options, grad_);
}

}  // namespace hmer
