#pragma once
// Element-wise math shared by the CPU loops and the CUDA kernels. Each functor has
//   fwd(x)            -> y
//   bwd(x, y, g)      -> dL/dx given g = dL/dy (x and y both available; each op uses what is cheaper)
// The formulas are chosen to round like PyTorch's CPU kernels where that is known (see
// framework-semantics.md), so parity tests can use tight tolerances.
#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace hmer {

enum class UnaryOp : uint8_t {
  Neg, Exp, Log, Sqrt, Square, Abs, Pow, Relu, Sigmoid, Tanh, HardSigmoidKeras2, HardSigmoidKeras3
};
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);

// Which of (x, y) a unary op's bwd below reads, so the graph keeps only that one alive (the attention's
// tanh over (B, 512, h, w) at every decoder step, say, needs its output but not its input).
inline bool unary_backward_reads_x(UnaryOp op) {
  switch (op) {
    case UnaryOp::Log: case UnaryOp::Square: case UnaryOp::Abs: case UnaryOp::Pow:
    case UnaryOp::HardSigmoidKeras2: case UnaryOp::HardSigmoidKeras3: return true;
    default: return false;
  }
}
inline bool unary_backward_reads_y(UnaryOp op) {
  switch (op) {
    case UnaryOp::Exp: case UnaryOp::Sqrt: case UnaryOp::Relu: case UnaryOp::Sigmoid: case UnaryOp::Tanh: return true;
    default: return false;
  }
}

namespace fn {

template <class T> HMER_HD T hd_exp(T x) { return ::exp(x); }
template <class T> HMER_HD T hd_log(T x) { return ::log(x); }
template <class T> HMER_HD T hd_sqrt(T x) { return ::sqrt(x); }
template <class T> HMER_HD T hd_tanh(T x) { return ::tanh(x); }
template <class T> HMER_HD T hd_pow(T x, T e) { return ::pow(x, e); }
template <> HMER_HD float hd_exp<float>(float x) { return ::expf(x); }
template <> HMER_HD float hd_log<float>(float x) { return ::logf(x); }
template <> HMER_HD float hd_sqrt<float>(float x) { return ::sqrtf(x); }
template <> HMER_HD float hd_tanh<float>(float x) { return ::tanhf(x); }
template <> HMER_HD float hd_pow<float>(float x, float e) { return ::powf(x, e); }

struct Neg {
  template <class T> HMER_HD T fwd(T x, T) const { return -x; }
  template <class T> HMER_HD T bwd(T, T, T g, T) const { return -g; }
};
struct Exp {
  template <class T> HMER_HD T fwd(T x, T) const { return hd_exp(x); }
  template <class T> HMER_HD T bwd(T, T y, T g, T) const { return g * y; }
};
struct Log {
  template <class T> HMER_HD T fwd(T x, T) const { return hd_log(x); }
  template <class T> HMER_HD T bwd(T x, T, T g, T) const { return g / x; }
};
struct Sqrt {
  template <class T> HMER_HD T fwd(T x, T) const { return hd_sqrt(x); }
  // torch: grad / (2 * result)
  template <class T> HMER_HD T bwd(T, T y, T g, T) const { return g / (y * T(2)); }
};
struct Square {
  template <class T> HMER_HD T fwd(T x, T) const { return x * x; }
  template <class T> HMER_HD T bwd(T x, T, T g, T) const { return g * (x * T(2)); }
};
struct Abs {
  template <class T> HMER_HD T fwd(T x, T) const { return x < T(0) ? -x : x; }
  template <class T> HMER_HD T bwd(T x, T, T g, T) const {
    return x > T(0) ? g : (x < T(0) ? -g : T(0));
  }
};
// Scalar exponent e. torch's pow backward: e * x^(e-1) * g (0 where e == 0).
struct Pow {
  template <class T> HMER_HD T fwd(T x, T e) const {
    if (e == T(2)) return x * x;
    if (e == T(1)) return x;
    return hd_pow(x, e);
  }
  template <class T> HMER_HD T bwd(T x, T, T g, T e) const {
    if (e == T(0)) return T(0);
    return g * (e * hd_pow(x, e - T(1)));
  }
};
struct Relu {
  template <class T> HMER_HD T fwd(T x, T) const { return x > T(0) ? x : T(0); }
  // torch uses the output: grad where result > 0
  template <class T> HMER_HD T bwd(T, T y, T g, T) const { return y > T(0) ? g : T(0); }
};
struct Sigmoid {
  template <class T> HMER_HD T fwd(T x, T) const { return T(1) / (T(1) + hd_exp(-x)); }
  // torch: grad * (1 - y) * y
  template <class T> HMER_HD T bwd(T, T y, T g, T) const { return g * ((T(1) - y) * y); }
};
struct Tanh {
  template <class T> HMER_HD T fwd(T x, T) const { return hd_tanh(x); }
  // torch: grad * (1 - y*y)
  template <class T> HMER_HD T bwd(T, T y, T g, T) const { return g * (T(1) - y * y); }
};
// Keras 2.x backend: fl(fl(x*0.2) + 0.5) clipped to [0, 1]; slope 0.2 inside (-2.5, 2.5).
struct HardSigmoidKeras2 {
  template <class T> HMER_HD T fwd(T x, T) const {
    const T v = x * T(0.2) + T(0.5);
    return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
  }
  template <class T> HMER_HD T bwd(T x, T, T g, T) const {
    return (x > T(-2.5) && x < T(2.5)) ? g * T(0.2) : T(0);
  }
};
// Keras >= 3.1 and torch.nn.Hardsigmoid: relu6(x + 3) / 6; slope 1/6 inside (-3, 3).
struct HardSigmoidKeras3 {
  template <class T> HMER_HD T fwd(T x, T) const {
    T v = x + T(3);
    v = v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
    return v / T(6);
  }
  template <class T> HMER_HD T bwd(T x, T, T g, T) const {
    return (x > T(-3) && x < T(3)) ? g / T(6) : T(0);
  }
};

struct Add { template <class T> HMER_HD T operator()(T a, T b) const { return a + b; } };
struct Sub { template <class T> HMER_HD T operator()(T a, T b) const { return a - b; } };
struct Mul { template <class T> HMER_HD T operator()(T a, T b) const { return a * b; } };
struct Div { template <class T> HMER_HD T operator()(T a, T b) const { return a / b; } };

}  // namespace fn

// Calls f(functor) for the functor that implements `op`; the single switch used by both backends.
template <class F>
HMER_HD decltype(auto) visit_unary(UnaryOp op, F&& f) {
  switch (op) {
    case UnaryOp::Neg: return f(fn::Neg{});
    case UnaryOp::Exp: return f(fn::Exp{});
    case UnaryOp::Log: return f(fn::Log{});
    case UnaryOp::Sqrt: return f(fn::Sqrt{});
    case UnaryOp::Square: return f(fn::Square{});
    case UnaryOp::Abs: return f(fn::Abs{});
    case UnaryOp::Pow: return f(fn::Pow{});
    case UnaryOp::Relu: return f(fn::Relu{});
    case UnaryOp::Sigmoid: return f(fn::Sigmoid{});
    case UnaryOp::Tanh: return f(fn::Tanh{});
    case UnaryOp::HardSigmoidKeras2: return f(fn::HardSigmoidKeras2{});
    case UnaryOp::HardSigmoidKeras3: return f(fn::HardSigmoidKeras3{});
  }
  return f(fn::Neg{});
}

template <class F>
HMER_HD decltype(auto) visit_binary(BinaryOp op, F&& f) {
  switch (op) {
    case BinaryOp::Add: return f(fn::Add{});
    case BinaryOp::Sub: return f(fn::Sub{});
    case BinaryOp::Mul: return f(fn::Mul{});
    case BinaryOp::Div: return f(fn::Div{});
  }
  return f(fn::Add{});
}

}  // namespace hmer
