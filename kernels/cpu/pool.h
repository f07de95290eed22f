#pragma once
// CPU max/avg 2-D pooling over (N, C, H, W) planes with PyTorch's window rules, forward and
// backward. Compute only: the caller (core/ops_pool.cpp) validates and records autograd.
#include <cstdint>

#include "core/tensor.h"

namespace hmer::cpu {

struct Pool2dShape {
  int64_t N, C, H, W;
  int64_t OH, OW;
  int64_t kh, kw, sh, sw, ph, pw;
  bool count_include_pad = true;  // avg only
};

// x (N, C, H, W) -> y (N, C, OH, OW); indices (N, C, OH, OW) = ih * W + iw of each window's maximum
// within its plane (PyTorch's convention). Padding never wins: it acts as -inf.
template <class T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* indices);
// gx (N, C, H, W) is overwritten: zero except the routed gradients (summed where windows overlap).
template <class T>
void max_pool2d_backward(const Pool2dShape& s, const T* gy, const int64_t* indices, T* gx);

template <class T>
void avg_pool2d_forward(const Pool2dShape& s, const T* x, T* y);
template <class T>
void avg_pool2d_backward(const Pool2dShape& s, const T* gy, T* gx);

// Tensor forms (dtype dispatch), all contiguous.
void max_pool2d_forward(const Pool2dShape& s, const Tensor& x, const Tensor& y, const Tensor& indices);
void max_pool2d_backward(const Pool2dShape& s, const Tensor& gy, const Tensor& indices, const Tensor& gx);
void avg_pool2d_forward(const Pool2dShape& s, const Tensor& x, const Tensor& y);
void avg_pool2d_backward(const Pool2dShape& s, const Tensor& gy, const Tensor& gx);

}  // namespace hmer::cpu
