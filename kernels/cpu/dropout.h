#pragma once
// CPU inverted dropout. The mask is a pure function of (seed, offset, element index) through the
// Philox stream of core/rng.h, so it is the same on every device and thread count, and the
// backward regenerates it instead of storing it.
#include <cstdint>

#include "core/rng.h"
#include "core/tensor.h"

namespace hmer::cpu {

// out[i] = in[i]·scale if philox_uniform_float(seed, offset, i) >= p, else 0, where scale is
// 1/(1 − p) rounded to the tensor dtype (torch multiplies by the float32 reciprocal). in, out
// contiguous, same shape and floating dtype. Serves the forward (in = x) and the backward (in = g).
void dropout_apply(const Tensor& in, const Tensor& out, double p, uint64_t seed, uint64_t offset);

// Calls f(k, keep) for k in [0, count): whether element first + k of the stream (seed, offset) is
// kept at drop probability p, exactly as dropout_apply decides it. For kernels that fuse dropout
// with other element-wise work (batch_norm_relu_dropout) and must draw the same mask.
template <class F>
inline void for_each_dropout_keep(uint64_t seed, uint64_t offset, uint64_t first, int64_t count, double p, F&& f) {
  int64_t k = 0;
  while (k < count) {
    const uint64_t w = offset + first + static_cast<uint64_t>(k);
    const Philox4x32 block = philox_block(seed, w >> 2);
    // One Philox block yields four words: drawn once per aligned group of four. Compared in double:
    // rounding p to float could move the threshold across a 24-bit grid point.
    for (uint64_t lane = w & 3; lane < 4 && k < count; ++lane, ++k)
      f(k, static_cast<double>(uint_to_unit_float(block.v[lane])) >= p);
  }
}

}  // namespace hmer::cpu
