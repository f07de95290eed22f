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
  HMER_DISPATCH_FLOATING(x.dtype(), unary_op_name(op), [&] {
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
      parallel_for(n, kElementwiseGrain, [&](int64_t lo, int64_t hi) {
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
