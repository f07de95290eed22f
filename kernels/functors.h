#pragma once
// Element-wise math shared by the CPU loops and the CUDA kernels. Each functor has
//   fwd(x)            -> y
//   bwd(x, y, g)      -> dL/dx given g = dL/dy (x and y both available; each op uses what is cheaper)
// The formulas are chosen to round like PyTorch's CPU kernels where that is known (see
// framework-semantics.md), so parity tests can use tight tolerances.
#include <cmath>
#include <cstdint>
#include <cstring>

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
// hd_tanh<float> is defined below the other float specialisations: it is not a libm call.
template <> HMER_HD float hd_pow<float>(float x, float e) { return ::powf(x, e); }

// The float's bits and back: memcpy on the host (GCC turns it into a register move, also inside a
// vectorised loop), CUDA's intrinsics on the device.
HMER_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
HMER_HD float float_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Float tanh without libm. ::tanhf is an opaque call, so GCC cannot vectorise a loop around it
// (10-12 ns per element), and the attention's tanh over (B, 512, h, w) at every decoder step made
// that 5% of a training step and 11% of greedy decoding. Everything here is +, -, *, /, compares, integer
// ops and ternaries on the one element, so the CPU loop vectorises (both halves are computed, then
// selected) and the same code runs in the CUDA kernels. Those are correctly rounded IEEE operations,
// so with -ffp-contract=off / --fmad=false (CMakeLists.txt) the CPU and the GPU should give the same
// bits (not run: no GPU here); the error budget below was measured under exactly those flags, with
// no FMA anywhere.
//
// Accuracy (tests/test_tanh_approx.cpp, all 2^32 bit patterns against std::tanh in double rounded
// to float): at most 1 ulp from the correctly rounded tanh (1.06 ulp from the exact value; 0.12% of
// all inputs are not correctly rounded); odd symmetry is exact, tanh(+-0) = +-0, tanh(+-inf) = +-1,
// NaN gives NaN, |x| < 2^-12 (denormals included) gives x, |result| <= 1, monotone.
//
// Why two halves, split at |x| = 0.75: 1 - 2/(e^2|x| + 1) subtracts q = 2/(e^2|x| + 1) from 1, and
// q's relative error (that of the exp, the + 1 and the division) costs about q/(1 - q) of that in
// the result; near 0 it cancels catastrophically. Below 0.75 an odd polynomial is used instead;
// at 0.75, q = 0.37 and the measured worst case of the exp half is 1.06 ulp from the exact value
// (splitting at 0.55, just above atanh(1/2), measured 1.44; at 1.0, with two more terms in the
// polynomial, 1.31).
//
// Polynomial half, tanh(x) = x + x * (t * Q(t)), t = x^2: x is added last and exactly, so the
// rounding error of the correction, at most 0.18 of the result (at 0.75), is scaled down by that
// factor. Q is a degree-5 minimax fit of (tanh(x)/x - 1)/t on t in [0, 0.5625] with relative
// weight, computed for this file by a Remez exchange in mpmath at 60 digits and rounded to the
// nearest float: max relative error of Q 3.6e-8, which reaches the result multiplied by
// t|Q|/(tanh(x)/x) <= 0.18. (Degree 4 measured 2 ulp.)
//
// Exp half, e^a for a = 2|x| in [1.5, 19]: a = k ln2 + r with k = nearest integer, so e^a = 2^k e^r,
// |r| <= ln2/2. k comes from adding and subtracting 1.5 * 2^23, which rounds to an integer under the
// default rounding mode with no call (a log2e < 2^22). Cody-Waite: ln2 = hi + lo with hi = 355/512
// (9 bits), so k * hi is exact for k <= 27 and a - k * hi is exact (Sterbenz), leaving one rounding
// in r. e^r = 1 + (r + r^2 P(r)): the two leading terms are exact in float and added last, P a
// degree-4 minimax fit of (e^r - 1 - r)/r^2 on [-ln2/2, ln2/2] (same script; max relative error of
// P 1.24e-7, times r^2 P/e^r <= 0.08 in e^r). 2^k is built from its exponent bits, k in [2, 27].
//
// Each half only sees the inputs it can be selected for, clamped to its own range, so no lane of
// the vector loop computes with denormals (each such operation costs a microcode assist of ~100
// cycles on x86) or feeds inf/NaN to the float-to-int conversion (undefined behaviour):
// - the exp half takes |x| clamped to [0.75, 9.5]. From |x| = 9.0109 (e^-2|x| = 2^-26) on the
//   correctly rounded tanh is exactly 1, and at 9.5 q < 2^-26 already rounds 1 - q to 1, so the
//   clamp at 9.5 changes no result and saturates inf;
// - the polynomial half takes |x| raised to at least 2^-12, and below 2^-12 x itself is returned:
//   there x - tanh(x) < x^3/3 is under half the gap to the float below x, so x is the correctly
//   rounded tanh. NaN fails every compare, takes the polynomial half and propagates.
// The sign is put back by OR-ing the input's sign bit into the result for |x|, which makes the
// symmetry exact and gives -0 for -0 (x + x*(...) would give +0 there).
template <> HMER_HD float hd_tanh<float>(float x) {
  const uint32_t sign = float_bits(x) & 0x80000000u;
  const float ax = float_from_bits(float_bits(x) & 0x7fffffffu);

  const float as = ax < 0x1p-12f ? 0x1p-12f : ax;
  const float t = as * as;
  float q = 0x1.f49a16p-10f;
  q = q * t + -0x1.03fb4ap-7f;
  q = q * t + 0x1.6225a4p-6f;
  q = q * t + -0x1.b9d7bap-5f;
  q = q * t + 0x1.111042p-3f;
  q = q * t + -0x1.555554p-2f;
  const float small = as + as * (t * q);

  const float a = 2.0f * (ax < 0.75f ? 0.75f : (ax < 9.5f ? ax : 9.5f));
  const float k = (a * 0x1.715476p+0f + 0x1.8p23f) - 0x1.8p23f;
  const float r = (a - k * 0x1.63p-1f) - k * -0x1.bd0106p-13f;
  float p = 0x1.6c69f2p-10f;
  p = p * r + 0x1.120b1cp-7f;
  p = p * r + 0x1.5555bap-5f;
  p = p * r + 0x1.5554dep-3f;
  p = p * r + 0x1p-1f;
  const float er = 1.0f + (r + (r * r) * p);
  const float two_k = float_from_bits(static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23);
  const float big = 1.0f - 2.0f / (er * two_k + 1.0f);

  const float m = ax >= 0.75f ? big : (ax < 0x1p-12f ? ax : small);
  return float_from_bits(float_bits(m) | sign);
}

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
