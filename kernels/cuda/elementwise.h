#pragma once
// CUDA element-wise kernels: the launchers around the shared functors in kernels/functors.h (the
// same fwd/bwd the CPU loops in kernels/cpu/elementwise.cpp call), so both backends compute one
// formula. Same contracts as hmer::cpu; every tensor must be on the same CUDA device.
#include <cstdint>

#include "core/tensor.h"
#include "kernels/functors.h"

namespace hmer::cuda {

// y = op(x); x and y contiguous with equal shapes and dtype (float32/float64).
void unary_forward(UnaryOp op, const Tensor& x, const Tensor& y, double param);
// gx = op'(x, y) * gy; all contiguous, equal shapes. x or y may be undefined when the op does not
// read it (it then sees 0), as on the CPU.
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx, double param);
// out = a (op) b, where a and b are (possibly stride-0 broadcast) views with out's shape, up to 8
// dimensions after merging, and out is contiguous.
void binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
// dst[i] = src[i] with dtype conversion; any strides on both sides, equal shapes, one device.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);
// Host <-> device or device <-> device copy of the bytes of two contiguous tensors with the same
// dtype and shape. Synchronous with respect to the host.
void copy_between_devices(const Tensor& src, const Tensor& dst);
// out_mask[i] = (philox_uniform_float(seed, offset, i) >= p) ? 1 : 0, i.e. an element is kept with
// probability 1 - p. out_mask contiguous float32/float64. Element i depends only on (seed, offset, i),
// so a CPU loop over philox_uniform_float produces the identical mask.
void dropout_mask(uint64_t seed, uint64_t offset, float p, const Tensor& out_mask);

}  // namespace hmer::cuda
