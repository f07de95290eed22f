#include "kernels/cpu/elementwise.h"

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"

namespace hmer {

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Square: return "square";
    case UnaryOp::Abs: return "abs";
    case UnaryOp::Pow: return "pow";
    case UnaryOp::Relu: return "relu";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::HardSigmoidKeras2: return "hard_sigmoid(keras2)";
    case UnaryOp::HardSigmoidKeras3: return "hard_sigmoid(keras3)";
  }
  return "?";
}

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
  }
  return "?";
}

namespace cpu {

void unary_forward(UnaryOp op, const Tensor& x, const Tensor& y, double param) {
  HMER_DISPATCH_FLOATING(x.dtype(), unary_op_name(op), [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t p = static_cast<scalar_t>(param);
    visit_unary(op, [&](auto f) {
      parallel_for(x.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) yp[i] = f.fwd(xp[i], p);
      });
      return 0;
    });
  });
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx, double param) {
  HMER_DISPATCH_FLOATING(gy.dtype(), unary_op_name(op), [&] {
    const scalar_t* xp = x.defined() ? x.data_ptr<scalar_t>() : nullptr;
    const scalar_t* yp = y.defined() ? y.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gp = gy.data_ptr<scalar_t>();
    scalar_t* op_ = gx.data_ptr<scalar_t>();
    const scalar_t p = static_cast<scalar_t>(param);
    visit_unary(op, [&](auto f) {
      parallel_for(gy.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          op_[i] = f.bwd(xp ? xp[i] : scalar_t(0), yp ? yp[i] : scalar_t(0), gp[i], p);
      });
      return 0;
    });
  });
}

namespace {
// Shortest contiguous run worth a loop of its own rather than the per-element cursor.
constexpr int64_t kMinRun = 16;

bool all_zero(const Shape& s) {
  for (int64_t v : s)
    if (v != 0) return false;
  return true;
}
}  // namespace

void binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  HMER_DISPATCH_ALL(out.dtype(), binary_op_name(op), [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    scalar_t* op_ = out.data_ptr<scalar_t>();
    const int64_t n = out.numel();
    const bool ac = a.is_contiguous(), bc = b.is_contiguous();
    const bool bs = all_zero(b.strides()), as = all_zero(a.strides());
    visit_binary(op, [&](auto f) {
      auto by_element = [&](int64_t lo, int64_t hi) {
        if (ac && bc) {
          for (int64_t i = lo; i < hi; ++i) op_[i] = f(ap[i], bp[i]);
        } else if (ac && bs) {
          const scalar_t s = bp[0];
          for (int64_t i = lo; i < hi; ++i) op_[i] = f(ap[i], s);
        } else if (as && bc) {
          const scalar_t s = ap[0];
          for (int64_t i = lo; i < hi; ++i) op_[i] = f(s, bp[i]);
        } else {
          StridedCursor ca(a.shape(), a.strides(), lo), cb(b.shape(), b.strides(), lo);
          for (int64_t i = lo; i < hi; ++i) {
            op_[i] = f(ap[ca.offset()], bp[cb.offset()]);
            ca.next();
            cb.next();
          }
        }
      };
      if ((ac && bc) || (ac && bs) || (as && bc)) {
        parallel_for(n, kElementwiseGrain, by_element);
        return 0;
      }
      // One operand contiguous over long trailing runs, the other constant along them (a per-channel
      // value broadcast over H x W: the attention's query added to its (B, A, H, W) terms at every
      // decoder step): a scalar per run instead of the per-element cursor.
      auto broadcast_runs = [&](const Tensor& full, const Tensor& each, bool full_first) {
        const Shape& shape = out.shape();
        int64_t d = static_cast<int64_t>(shape.size()), run = 1;
        while (d > 0 && (shape[d - 1] == 1 || (full.strides()[d - 1] == run && each.strides()[d - 1] == 0))) {
          run *= shape[d - 1];
          --d;
        }
        if (run < kMinRun || d == static_cast<int64_t>(shape.size())) return false;
        const Shape outer(shape.begin(), shape.begin() + d);
        const Shape fs(full.strides().begin(), full.strides().begin() + d);
        const Shape es(each.strides().begin(), each.strides().begin() + d);
        const scalar_t* fp = full.data_ptr<scalar_t>();
        const scalar_t* ep = each.data_ptr<scalar_t>();
        parallel_for(shape_numel(outer), std::max<int64_t>(1, kElementwiseGrain / run), [&](int64_t lo, int64_t hi) {
          StridedCursor cf(outer, fs, lo), ce(outer, es, lo);
          for (int64_t k = lo; k < hi; ++k, cf.next(), ce.next()) {
            const scalar_t* fr = fp + cf.offset();
            const scalar_t v = ep[ce.offset()];
            scalar_t* orow = op_ + k * run;
            if (full_first) {
              for (int64_t i = 0; i < run; ++i) orow[i] = f(fr[i], v);
            } else {
              for (int64_t i = 0; i < run; ++i) orow[i] = f(v, fr[i]);
            }
          }
        });
        return true;
      };
      if (broadcast_runs(a, b, true) || broadcast_runs(b, a, false)) return 0;
      // Views made of long contiguous runs (channel slices: the backward's gradient sums in a dense
      // block) go run by run; the rest element by element.
      const ContiguousRuns runs = contiguous_runs(out.shape(), {&a.strides(), &b.strides()});
      if (runs.run < kMinRun) {
        parallel_for(n, kElementwiseGrain, by_element);
        return 0;
      }
      parallel_for(runs.count(), std::max<int64_t>(1, kElementwiseGrain / runs.run), [&](int64_t lo, int64_t hi) {
        StridedCursor ca(runs.outer_shape, runs.outer_strides[0], lo), cb(runs.outer_shape, runs.outer_strides[1], lo);
        for (int64_t k = lo; k < hi; ++k, ca.next(), cb.next()) {
          const scalar_t* ar = ap + ca.offset();
          const scalar_t* br = bp + cb.offset();
          scalar_t* orow = op_ + k * runs.run;
          for (int64_t i = 0; i < runs.run; ++i) orow[i] = f(ar[i], br[i]);
        }
      });
      return 0;
    });
  });
}

void copy(const Tensor& src, const Tensor& dst) {
  HMER_CHECK(src.shape() == dst.shape(), "copy: shape ", shape_str(src.shape()), " vs ", shape_str(dst.shape()));
  HMER_DISPATCH_ALL(src.dtype(), "copy", [&] {
    using S = scalar_t;
    const S* sp = src.data_ptr<S>();
    HMER_DISPATCH_ALL(dst.dtype(), "copy", [&] {
      using D = scalar_t;
      D* dp = dst.data_ptr<D>();
      const int64_t n = src.numel();
      const bool sc = src.is_contiguous(), dc = dst.is_contiguous();
      const ContiguousRuns runs = contiguous_runs(src.shape(), {&src.strides(), &dst.strides()});
      if (!(sc && dc) && runs.run >= kMinRun) {
        // Run by run (e.g. ChannelConcat writing a layer's channels into its buffer).
        parallel_for(runs.count(), std::max<int64_t>(1, kElementwiseGrain / runs.run), [&](int64_t lo, int64_t hi) {
          StridedCursor cs(runs.outer_shape, runs.outer_strides[0], lo), cd(runs.outer_shape, runs.outer_strides[1], lo);
          for (int64_t k = lo; k < hi; ++k, cs.next(), cd.next()) {
            const S* sr = sp + cs.offset();
            D* dr = dp + cd.offset();
            for (int64_t i = 0; i < runs.run; ++i) dr[i] = static_cast<D>(sr[i]);
          }
        });
        return;
      }
      parallel_for(n, kElementwiseGrain, [&](int64_t lo, int64_t hi) {
        if (sc && dc) {
          for (int64_t i = lo; i < hi; ++i) dp[i] = static_cast<D>(sp[i]);
        } else if (dc) {
          StridedCursor cs(src.shape(), src.strides(), lo);
          for (int64_t i = lo; i < hi; ++i, cs.next()) dp[i] = static_cast<D>(sp[cs.offset()]);
        } else {
          StridedCursor cs(src.shape(), src.strides(), lo), cd(dst.shape(), dst.strides(), lo);
          for (int64_t i = lo; i < hi; ++i, cs.next(), cd.next()) dp[cd.offset()] = static_cast<D>(sp[cs.offset()]);
        }
      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  HMER_DISPATCH_ALL(dst.dtype(), "fill", [&] {
    scalar_t* dp = dst.data_ptr<scalar_t>();
    const scalar_t v = static_cast<scalar_t>(value);
    if (dst.is_contiguous()) {
      parallel_for(dst.numel(), kElementwiseGrain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) dp[i] = v;
      });
    } else {
      StridedCursor c(dst.shape(), dst.strides(), 0);
      for (int64_t i = 0; i < dst.numel(); ++i, c.next()) dp[c.offset()] = v;
    }
  });
}

}  // namespace cpu
}  // namespace hmer
