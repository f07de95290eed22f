// Reductions. Each permutes the reduced dims last, so one row kernel serves every axis set.
#include <algorithm>
#include <numeric>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/reduce.h"

namespace hmer {

namespace {

struct ReducePlan {
  std::vector<int64_t> reduced;  // sorted, unique
  std::vector<int64_t> kept;
  Shape out_shape;      // without keepdim
  Shape keep_shape;     // with keepdim
  int64_t rows = 1, cols = 1;
};

ReducePlan plan_reduce(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  ReducePlan p;
  std::vector<bool> is_red(x.dim(), false);
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, x.dim(), op);
    HMER_CHECK(!is_red[w] || x.dim() == 0, op, ": dimension ", d, " repeated");
    if (x.dim() > 0) is_red[w] = true;
  }
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (is_red[d]) {
      p.reduced.push_back(d);
      p.cols *= x.size(d);
      p.keep_shape.push_back(1);
    } else {
      p.kept.push_back(d);
      p.rows *= x.size(d);
      p.out_shape.push_back(x.size(d));
      p.keep_shape.push_back(x.size(d));
    }
  }
  return p;
}

// x viewed as (rows, cols) with the reduced dims last; copies only when the layout needs it.
Tensor as_rows(const Tensor& x, const ReducePlan& p) {
  std::vector<int64_t> order = p.kept;
  order.insert(order.end(), p.reduced.begin(), p.reduced.end());
  Tensor t = x.detach();
  bool identity = true;
  for (size_t i = 0; i < order.size(); ++i) identity = identity && order[i] == static_cast<int64_t>(i);
  if (!identity) t = t.permute(order);
  return t.contiguous().reshape({p.rows, p.cols});
}

Tensor sum_impl(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, const char* op) {
  HMER_CHECK(x.defined(), op, ": undefined input");
  HMER_CHECK(is_floating(x.dtype()), op, ": expected a floating tensor, got ", x.str());
  const ReducePlan p = plan_reduce(x, dims, op);
  Tensor rows = as_rows(x, p);
  Tensor out = Tensor::empty({p.rows}, x.dtype(), x.device());
  HMER_DISPATCH_DEVICE(op, x.device(), cpu::sum_rows(rows, out), HMER_NO_CUDA);
  out = out.reshape(keepdim ? p.keep_shape : p.out_shape);
  const Shape in_shape = x.shape(), keep_shape = p.keep_shape;
  return record_fn(out, "SumBackward", {x}, [in_shape, keep_shape](const Tensor& g) {
    return std::vector<Tensor>{g.reshape(keep_shape).expand(in_shape)};
  });
}

std::vector<int64_t> all_dims(const Tensor& x) {
  std::vector<int64_t> d(x.dim());
  std::iota(d.begin(), d.end(), 0);
  return d;
}

}  // namespace

Tensor sum(const Tensor& x) { return sum_impl(x, all_dims(x), false, "sum"); }
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_impl(x, dims, keepdim, "sum");
}

Tensor mean(const Tensor& x) { return mean(x, all_dims(x), false); }
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const ReducePlan p = plan_reduce(x, dims, "mean");
  return div(sum_impl(x, dims, keepdim, "mean"), static_cast<double>(p.cols));
}

ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) {
  HMER_CHECK(x.defined() && is_floating(x.dtype()), "max: expected a floating tensor");
  HMER_CHECK(x.dim() > 0 && x.size(dim) > 0, "max: cannot reduce an empty dimension of ", x.str());
  const ReducePlan p = plan_reduce(x, {dim}, "max");
  Tensor rows = as_rows(x, p);
  Tensor values = Tensor::empty({p.rows}, x.dtype(), x.device());
  Tensor indices = Tensor::empty({p.rows}, DType::Int64, x.device());
  HMER_DISPATCH_DEVICE("max", x.device(), cpu::max_rows(rows, values, indices), HMER_NO_CUDA);
  const Shape shape = keepdim ? p.keep_shape : p.out_shape;
  values = values.reshape(shape);
  indices = indices.reshape(shape);
  const Shape in_shape = x.shape();
  const std::vector<int64_t> kept = p.kept, reduced = p.reduced;
  const int64_t R = p.rows, C = p.cols;
  Tensor idx_rows = indices.reshape({R});
  values = record_fn(values, "MaxBackward", {x}, [=](const Tensor& g) {
    Tensor gr = Tensor::empty({R, C}, g.dtype(), g.device());
    Tensor gc = g.contiguous().reshape({R});
    HMER_DISPATCH_DEVICE("max_backward", g.device(), cpu::max_rows_backward(gc, idx_rows, gr), HMER_NO_CUDA);
    // back from (kept..., reduced) layout to the input layout
    Shape perm_shape;
    for (int64_t d : kept) perm_shape.push_back(in_shape[d]);
    for (int64_t d : reduced) perm_shape.push_back(in_shape[d]);
    std::vector<int64_t> order = kept;
    order.insert(order.end(), reduced.begin(), reduced.end());
    std::vector<int64_t> inverse(order.size());
    for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = static_cast<int64_t>(i);
    return std::vector<Tensor>{gr.reshape(perm_shape).permute(inverse).contiguous()};
  });
  return {values, indices};
}

Tensor amax(const Tensor& x) {
  HMER_CHECK(x.defined() && is_floating(x.dtype()) && x.numel() > 0, "amax: expected a non-empty floating tensor");
  Tensor flat = x.detach().contiguous().reshape({1, x.numel()});
  Tensor v = Tensor::empty({1}, x.dtype(), x.device());
  Tensor i = Tensor::empty({1}, DType::Int64, x.device());
  HMER_DISPATCH_DEVICE("amax", x.device(), cpu::max_rows(flat, v, i), HMER_NO_CUDA);
  Tensor out = v.reshape({});
  Tensor xd = x.detach();
  const double max_value = out.item<double>();
  return record_fn(out, "AmaxBackward", {x}, [xd, max_value](const Tensor& g) {
    // torch: the gradient is shared equally between all elements equal to the maximum
    const Tensor mask = Tensor::empty(xd.shape(), xd.dtype(), xd.device());
    HMER_DISPATCH_FLOATING(xd.dtype(), "amax_backward", [&] {
      const Tensor xc = xd.contiguous();
      const scalar_t* xp = xc.data_ptr<scalar_t>();
      scalar_t* mp = mask.data_ptr<scalar_t>();
      const scalar_t m = static_cast<scalar_t>(max_value);
      int64_t count = 0;
      for (int64_t k = 0; k < xc.numel(); ++k) count += xp[k] == m;
      for (int64_t k = 0; k < xc.numel(); ++k) mp[k] = xp[k] == m ? scalar_t(1) / scalar_t(count) : scalar_t(0);
    });
    return std::vector<Tensor>{mul(mask, g)};
  });
}

}  // namespace hmer
