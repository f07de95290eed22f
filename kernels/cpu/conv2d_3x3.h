#pragma once
// Direct (im2col-free) float32 3x3 convolution, stride 1, padding 1, for few output channels: the
// DenseNet bottleneck's growth-24 conv. Internal to kernels/cpu/conv2d.cpp, which routes the shapes
// below here and everything else through im2col + GEMM.
//
// Why: with 24 output channels the im2col GEMM does only 24 multiply-adds per element of a 9x larger
// column matrix (864 x H*W per image, 12 MB at 30 x 120), so it streams memory instead of computing
// (~125 GFLOP/s here against ~250 for the wide GEMMs). Read directly, one image's 96 input planes
// (1.4 MB, padded) stay in L2 and each element is used 9 x 24 times from registers.
#include "kernels/cpu/conv2d.h"

namespace hmer::cpu::detail {

// The shapes the direct kernels take: 3x3, stride 1, padding 1, dilation 1, at most 64 output channels.
bool conv3x3_direct_applies(const Conv2dShape& s);

// Same contracts as conv2d_forward / conv2d_backward (x's images x_image_stride() apart; gx and gw
// overwritten; either may be null). The bias gradient stays with the caller.
void conv3x3_direct_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);
void conv3x3_direct_backward(const Conv2dShape& s, const float* x, const float* w, const float* gy, float* gx,
                             float* gw);

}  // namespace hmer::cpu::detail
