// matmul and linear. Operands are made contiguous once, then one GEMM (or one per batch).
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "kernels/cpu/matmul.h"

namespace hmer {

namespace {

// out = op(a)·op(b) for 2-D contiguous operands, no autograd.
Tensor mm_raw(const Tensor& a, bool ta, const Tensor& b, bool tb) {
  const int64_t M = ta ? a.size(1) : a.size(0);
  const int64_t N = tb ? b.size(0) : b.size(1);
  Tensor out = Tensor::empty({M, N}, a.dtype(), a.device());
  HMER_DISPATCH_DEVICE("matmul", a.device(), cpu::gemm(a, ta, b, tb, out), HMER_NO_CUDA);
  return out;
}

Tensor bmm_raw(const Tensor& a, bool ta, const Tensor& b, bool tb) {
  const int64_t B = a.size(0);
  const int64_t M = ta ? a.size(2) : a.size(1);
  const int64_t N = tb ? b.size(1) : b.size(2);
  Tensor out = Tensor::empty({B, M, N}, a.dtype(), a.device());
  for (int64_t i = 0; i < B; ++i) {
    Tensor ai = a.select(0, i), bi = b.select(0, i), oi = out.select(0, i);
    HMER_DISPATCH_DEVICE("matmul", a.device(), cpu::gemm(ai, ta, bi, tb, oi), HMER_NO_CUDA);
  }
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  HMER_CHECK(a_in.defined() && b_in.defined(), "matmul: undefined input");
  check_same_device("matmul", {&a_in, &b_in});
  check_same_dtype("matmul", {&a_in, &b_in});
  HMER_CHECK(is_floating(a_in.dtype()), "matmul: expected floating tensors, got ", a_in.str());
  const bool batched = a_in.dim() == 3;
  HMER_CHECK((a_in.dim() == 2 && b_in.dim() == 2) || (a_in.dim() == 3 && b_in.dim() == 3),
             "matmul: expected (M, K)x(K, N) or (B, M, K)x(B, K, N), got ", shape_str(a_in.shape()), " x ",
             shape_str(b_in.shape()));
  HMER_CHECK(a_in.size(-1) == b_in.size(-2), "matmul: inner dimensions differ: ", shape_str(a_in.shape()), " x ",
             shape_str(b_in.shape()));
  HMER_CHECK(!batched || a_in.size(0) == b_in.size(0), "matmul: batch sizes differ: ", shape_str(a_in.shape()),
             " x ", shape_str(b_in.shape()));
  Tensor a = a_in.detach().contiguous(), b = b_in.detach().contiguous();
  Tensor out = batched ? bmm_raw(a, false, b, false) : mm_raw(a, false, b, false);
  profiler::add_flops(2.0 * static_cast<double>(out.numel()) * static_cast<double>(a.size(-1)));
  const bool ga = a_in.requires_grad(), gb = b_in.requires_grad();
  return record_fn(out, "MatmulBackward", {a_in, b_in}, [a, b, ga, gb, batched](const Tensor& g_in) {
    Tensor g = g_in.contiguous();
    Tensor da, db;
    if (batched) {
      if (ga) da = bmm_raw(g, false, b, true);
      if (gb) db = bmm_raw(a, true, g, false);
    } else {
      if (ga) da = mm_raw(g, false, b, true);
      if (gb) db = mm_raw(a, true, g, false);
    }
    return std::vector<Tensor>{da, db};
  });
}

Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& bias) {
  HMER_CHECK(x_in.defined() && w_in.defined(), "linear: undefined input or weight");
  check_same_device("linear", {&x_in, &w_in, &bias});
  check_same_dtype("linear", {&x_in, &w_in, &bias});
  HMER_CHECK(is_floating(x_in.dtype()), "linear: expected floating tensors, got ", x_in.str());
  HMER_CHECK(w_in.dim() == 2, "linear: weight must be (out, in), got ", shape_str(w_in.shape()));
  HMER_CHECK(x_in.dim() >= 1 && x_in.size(-1) == w_in.size(1), "linear: input ", shape_str(x_in.shape()),
             " does not end in in_features = ", w_in.size(1), " of weight ", shape_str(w_in.shape()));
  HMER_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w_in.size(0)), "linear: bias ",
             bias.defined() ? shape_str(bias.shape()) : "", " must be (", w_in.size(0), ")");
  const Shape in_shape = x_in.shape();
  const int64_t in = w_in.size(1), outf = w_in.size(0);
  const int64_t rows = x_in.numel() / std::max<int64_t>(in, 1);
  Tensor x = x_in.detach().contiguous().reshape({rows, in});
  Tensor w = w_in.detach().contiguous();
  Tensor y = Tensor::empty({rows, outf}, x.dtype(), x.device());
  if (bias.defined()) {
    // y = 1·b + x·Wᵀ: bias first, then the GEMM accumulates onto it
    y.copy_(bias.detach().reshape({1, outf}).expand({rows, outf}));
    HMER_DISPATCH_DEVICE("linear", x.device(), cpu::gemm(x, false, w, true, y, 1.0), HMER_NO_CUDA);
  } else {
    HMER_DISPATCH_DEVICE("linear", x.device(), cpu::gemm(x, false, w, true, y, 0.0), HMER_NO_CUDA);
  }
  profiler::add_flops(2.0 * static_cast<double>(rows) * static_cast<double>(in) * static_cast<double>(outf));
  Shape out_shape = in_shape;
  out_shape.back() = outf;
  y = y.reshape(out_shape);
  const bool gx = x_in.requires_grad(), gw = w_in.requires_grad(), gbias = bias.defined() && bias.requires_grad();
  return record_fn(y, "LinearBackward", {x_in, w_in, bias}, [=](const Tensor& g_in) {
    Tensor g = g_in.contiguous().reshape({rows, outf});
    Tensor dx, dw, db;
    if (gx) dx = mm_raw(g, false, w, false).reshape(in_shape);
    if (gw) dw = mm_raw(g, true, x, false);
    if (gbias) db = sum(g, {0});
    return std::vector<Tensor>{dx, dw, db};
  });
}

}  // namespace hmer
