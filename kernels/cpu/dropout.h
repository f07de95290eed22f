#pragma once
// CPU inverted dropout. The mask is a pure function of (seed, offset, element index) through the
// Philox stream of core/rng.h, so it is the same on every device and thread count, and the
// backward regenerates it instead of storing it.
#include <cstdint>

#include "core/tensor.h"

namespace hmer::cpu {

// out[i] = in[i]·scale if philox_uniform_float(seed, offset, i) >= p, else 0, where scale is
// 1/(1 − p) rounded to the tensor dtype (torch multiplies by the float32 reciprocal). in, out
// contiguous, same shape and floating dtype. Serves the forward (in = x) and the backward (in = g).
void dropout_apply(const Tensor& in, const Tensor& out, double p, uint64_t seed, uint64_t offset);

}  // namespace hmer::cpu
