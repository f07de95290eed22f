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

  // The input gradient's image stride (0: C*H*W) and whether the backward adds into gx instead of
  // overwriting it: ChannelConcat's one gradient buffer per dense block, which each layer's conv
  // reads a leading channel slice of, takes every layer's input gradient in place.
  int64_t gx_batch_stride = 0;
  bool gx_accumulate = false;
  int64_t gx_image_stride() const { return gx_batch_stride > 0 ? gx_batch_stride : C * H * W; }

  int64_t col_rows() const { return C * kh * kw; }  // K of the GEMM
  int64_t col_cols() const { return OH * OW; }      // L of the GEMM
  // A 1x1, stride-1, unpadded conv reads the input as is: x[n] (C, H*W) is already its column matrix.
  bool is_pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

// All buffers contiguous, except that x's images may lie x_image_stride() apart. x (N, C, H, W), w (O, C, kh, kw), bias (O) or null, y (N, O, OH, OW).
template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

// gy (N, O, OH, OW). Each of gx (N, C, H, W; images gx_image_stride() apart), gw (O, C, kh, kw), gb (O)
// may be null (not wanted) and is overwritten otherwise (gx added to with gx_accumulate). x is read
// only for gw, w only for gx.
template <class T>
void conv2d_backward(const Conv2dShape& s, const T* x, const T* w, const T* gy, T* gx, T* gw, T* gb);

// float32 3x3 stride-1 pad-1 convs with at most 64 output channels (DenseNet's growth-24 conv) run a
// direct kernel (kernels/cpu/conv2d_3x3.h) instead of im2col + GEMM; off routes them through im2col,
// for A/B timing and for tests that compare the two. Process-wide; on by default.
void set_direct_conv3x3(bool enabled);
bool direct_conv3x3_enabled();

// Tensor forms (dtype dispatch); undefined tensors stand for null pointers.
void conv2d_forward(const Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y);
void conv2d_backward(const Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& gy, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb);

}  // namespace hmer::cpu
