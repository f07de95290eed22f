#pragma once
// CPU softmax and log_softmax over one dimension. The input is viewed as (outer, D, inner) with D
// the reduced dimension, so one kernel serves every axis without a transposing copy.
#include <cstdint>

#include "core/tensor.h"

namespace hmer::cpu {

// y = softmax(x) or log_softmax(x) along the D axis of x viewed as (outer, D, inner). x, y
// contiguous, same shape and floating dtype. Subtracts the maximum first; the sum of exponentials
// is accumulated in double.
void softmax_forward(const Tensor& x, const Tensor& y, int64_t outer, int64_t D, int64_t inner, bool log);

// From the forward output y and g = dL/dy:
//   softmax:     gx = y ⊙ (g − Σ g⊙y)
//   log_softmax: gx = g − exp(y)·Σ g
void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& gx, int64_t outer, int64_t D, int64_t inner,
                      bool log);

}  // namespace hmer::cpu
