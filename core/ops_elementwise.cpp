// Element-wise ops and the small helpers every op shares.
#include <algorithm>
#include <sstream>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/elementwise.h"
#ifdef HMER_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace hmer {

Reduction reduction_from_string(const std::string& s) {
  if (s == "none") return Reduction::None;
  if (s == "mean") return Reduction::Mean;
  if (s == "sum") return Reduction::Sum;
  fail("reduction must be one of none|mean|sum, got '", s, "'");
}

void check_same_device(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (t == nullptr || !t->defined()) continue;
    if (first == nullptr) {
      first = t;
    } else {
      HMER_CHECK(t->device() == first->device(), op, ": expected all tensors on one device, got ", first->str(),
                 " and ", t->str());
    }
  }
}

void check_same_dtype(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (t == nullptr || !t->defined()) continue;
    if (first == nullptr) {
      first = t;
    } else {
      HMER_CHECK(t->dtype() == first->dtype(), op, ": expected one dtype, got ", first->str(), " and ", t->str());
    }
  }
}

Tensor contiguous_copy(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  out.copy_(x);
  return out;
}

std::string pair_str(const Pair& p) {
  // ostringstream rather than string operator+: GCC 12 emits a false -Wrestrict on the latter.
  std::ostringstream os;
  os << '(' << p[0] << ", " << p[1] << ')';
  return os.str();
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    HMER_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

Tensor unary(UnaryOp op, const Tensor& x_in, double param = 0.0) {
  const char* name = unary_op_name(op);
  HMER_CHECK(x_in.defined(), name, ": undefined input");
  HMER_CHECK(is_floating(x_in.dtype()), name, ": expected a floating tensor, got ", x_in.str());
  Tensor x = x_in.detach().contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  HMER_DISPATCH_DEVICE(name, x.device(), cpu::unary_forward(op, x, y, param), cuda::unary_forward(op, x, y, param));
  // Capture a detached alias of y: capturing y itself would make y -> node -> closure -> y a cycle.
  // Only what the op's backward reads is kept alive.
  Tensor y_saved = unary_backward_reads_y(op) ? y.detach() : Tensor();
  Tensor x_saved = unary_backward_reads_x(op) ? x : Tensor();
  return record_fn(y, name, {x_in}, [op, x = x_saved, y = y_saved, param](const Tensor& g_in) {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    HMER_DISPATCH_DEVICE(unary_op_name(op), g.device(), cpu::unary_backward(op, x, y, g, gx, param),
                         cuda::unary_backward(op, x, y, g, gx, param));
    return std::vector<Tensor>{gx};
  });
}

Tensor binary_raw(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_op_name(op);
  HMER_CHECK(a.defined() && b.defined(), name, ": undefined input");
  check_same_device(name, {&a, &b});
  check_same_dtype(name, {&a, &b});
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor ae = a.shape() == shape ? a.detach() : a.detach().expand(shape);
  Tensor be = b.shape() == shape ? b.detach() : b.detach().expand(shape);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  HMER_DISPATCH_DEVICE(name, out.device(), cpu::binary_forward(op, ae, be, out),
                       cuda::binary_forward(op, ae, be, out));
  return out;
}

Tensor scalar_like(const Tensor& t, double v) {
  return Tensor::full({}, v, t.dtype(), t.device());
}

}  // namespace

Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::Square, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x); }
Tensor pow(const Tensor& x, double e) { return unary(UnaryOp::Pow, x, e); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x); }
Tensor hard_sigmoid(const Tensor& x, HardSigmoidKind kind) {
  return unary(kind == HardSigmoidKind::Keras2 ? UnaryOp::HardSigmoidKeras2 : UnaryOp::HardSigmoidKeras3, x);
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::Add, a, b);
  const Shape sa = a.shape(), sb = b.shape();
  return record_fn(out, "AddBackward", {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(g, sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::Sub, a, b);
  const Shape sa = a.shape(), sb = b.shape();
  return record_fn(out, "SubBackward", {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(neg(g), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::Mul, a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  return record_fn(out, "MulBackward", {a, b}, [ad, bd, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to_shape(binary_raw(BinaryOp::Mul, g, bd), ad.shape()) : Tensor(),
                               gb ? sum_to_shape(binary_raw(BinaryOp::Mul, g, ad), bd.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(BinaryOp::Div, a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  return record_fn(out, "DivBackward", {a, b}, [ad, bd, ga, gb](const Tensor& g) {
    Tensor gA, gB;
    if (ga) gA = sum_to_shape(binary_raw(BinaryOp::Div, g, bd), ad.shape());
    if (gb) {
      // torch: -grad * a / (b * b)
      Tensor t = binary_raw(BinaryOp::Mul, neg(g), ad);
      gB = sum_to_shape(binary_raw(BinaryOp::Div, t, binary_raw(BinaryOp::Mul, bd, bd)), bd.shape());
    }
    return std::vector<Tensor>{gA, gB};
  });
}

Tensor add(const Tensor& a, double b) {
  Tensor out = binary_raw(BinaryOp::Add, a, scalar_like(a, b));
  return record_fn(out, "AddScalarBackward", {a}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor mul(const Tensor& a, double b) {
  Tensor s = scalar_like(a, b);
  Tensor out = binary_raw(BinaryOp::Mul, a, s);
  return record_fn(out, "MulScalarBackward", {a}, [s](const Tensor& g) {
    return std::vector<Tensor>{binary_raw(BinaryOp::Mul, g, s)};
  });
}

Tensor rsub(const Tensor& a, double b) {
  Tensor out = binary_raw(BinaryOp::Sub, scalar_like(a, b), a);
  return record_fn(out, "RsubScalarBackward", {a}, [](const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
}

Tensor div(const Tensor& a, double b) {
  Tensor s = scalar_like(a, b);
  Tensor out = binary_raw(BinaryOp::Div, a, s);
  return record_fn(out, "DivScalarBackward", {a}, [s](const Tensor& g) {
    return std::vector<Tensor>{binary_raw(BinaryOp::Div, g, s)};
  });
}

}  // namespace hmer
