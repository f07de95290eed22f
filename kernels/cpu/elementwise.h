#pragma once
// CPU element-wise kernels: the loops around the shared functors in kernels/functors.h.
#include "core/tensor.h"
#include "kernels/functors.h"

namespace hmer::cpu {

// y = op(x); x and y contiguous with equal shapes and dtype.
void unary_forward(UnaryOp op, const Tensor& x, const Tensor& y, double param);
// gx = op'(x, y) * gy; all contiguous, equal shapes.
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx, double param);
// out = a (op) b, where a and b are (possibly stride-0 broadcast) views with out's shape and out is contiguous.
void binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
// dst[i] = src[i] with dtype conversion; any strides on both sides, equal shapes.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);

}  // namespace hmer::cpu
