#pragma once
// CPU conv2d (groups = 1): im2col + Eigen GEMM per image, forward and backward. Compute only: the
// caller (core/ops_conv.cpp) validates shapes and records autograd.
#include <cstdint>

#include "core/tensor.h"

namespace hmer::cpu {

struct Conv2dShape {
  int64_t N, C, H, W;   // input
  int64_t O, kh, kw;    // weight (O, C, kh, kw)
  int64_t OH, OW;       // output
  int64_t sh, sw, ph, pw, dh, dw;
  // Elements from one image of x to the next; 0 means C*H*W (a contiguous batch). Larger when x is a
  // leading channel slice of a wider buffer (DenseNet's in-place concatenation): each image is still
  // one contiguous (C, H, W) block, so the kernels read it in place instead of copying it out.
  int64_t x_batch_stride = 0;

  int64_t x_image_stride() const { return x_batch_stride > 0 ? x_batch_stride : C * H * W; }

  int64_t col_rows() const { return C * kh * kw; }  // K of the GEMM
  int64_t col_cols() const { return OH * OW; }      // L of the GEMM
  // A 1x1, stride-1, unpadded conv reads the input as is: x[n] (C, H*W) is already its column matrix.
  bool is_pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

// All buffers contiguous, except that x's images may lie x_image_stride() apart. x (N, C, H, W), w (O, C, kh, kw), bias (O) or null, y (N, O, OH, OW).
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

// gy (N, O, OH, OW). Each of gx (N, C, H, W), gw (O, C, kh, kw), gb (O) may be null (not wanted) and is
// overwritten otherwise. x is read only for gw, w only for gx.
template <class T>
void conv2d_backward(const Conv2dShape& s, const T* x, const T* w, const T* gy, T* gx, T* gw, T* gb);

// Tensor forms (dtype dispatch); undefined tensors stand for null pointers.
void conv2d_forward(const Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y);
void conv2d_backward(const Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& gy, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb);

}  // namespace hmer::cpu
