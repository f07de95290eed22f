#pragma once
// CPU inverted dropout. The mask is a pure function of (seed, offset, element index) through the
// Philox stream of core/rng.h, so it is the same on every device and thread count, and the
// backward regenerates it instead of storing it.
#include <algorithm>
#include <cmath>
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
//
// The decision is uint_to_unit_float(word) >= p, compared in double (rounding p to float could move
// the threshold across a 24-bit grid point). uint_to_unit_float is exactly (word >> 8) / 2^24 and
// p·2^24 is exact in double, so it is the integer test (word >> 8) >= ceil(p·2^24), done here on
// batches of kPhiloxBatch blocks generated together.
template <class F>
inline void for_each_dropout_keep(uint64_t seed, uint64_t offset, uint64_t first, int64_t count, double p, F&& f) {
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(p * 16777216.0));
  uint32_t words[4 * kPhiloxBatch];
  int64_t k = 0;
  while (k < count) {
    const uint64_t w = offset + first + static_cast<uint64_t>(k);
    philox_blocks(seed, w >> 2, words);  // words 4·(w >> 2) onwards
    const int64_t at = static_cast<int64_t>(w & 3);
    const int64_t n = std::min<int64_t>(4 * kPhiloxBatch - at, count - k);
    for (int64_t i = 0; i < n; ++i) f(k + i, (words[at + i] >> 8) >= threshold);
    k += n;
  }
}

// out[k] = word first + k of stream seed, k in [0, count): the words for_each_dropout_keep tests.
inline void philox_words(uint64_t seed, uint64_t first, int64_t count, uint32_t* out) {
  uint32_t words[4 * kPhiloxBatch];
  int64_t k = 0;
  while (k < count) {
    const uint64_t w = first + static_cast<uint64_t>(k);
    philox_blocks(seed, w >> 2, words);
    const int64_t at = static_cast<int64_t>(w & 3);
    const int64_t n = std::min<int64_t>(4 * kPhiloxBatch - at, count - k);
    std::copy(words + at, words + at + n, out + k);
    k += n;
  }
}

// The keep decisions of one row of count elements as dropout multipliers (scale where kept, 0 where
// dropped), decided as for_each_dropout_keep decides them: from the stream (words: count scratch
// words) and then, when `record` is given, packed into ceil(count / 64) words, element k at bit k % 64
// of word k / 64; or, with `replay`, unpacked from such words. Branch-free, so the compiler vectorises
// it: a kept/dropped branch per element mispredicts at any useful p.
template <class T>
void dropout_row_multipliers(uint64_t seed, uint64_t first, int64_t count, double p, T scale, uint32_t* words,
                             uint64_t* record, const uint64_t* replay, T* mult) {
  if (replay != nullptr) {
    for (int64_t b = 0; b < count; b += 64) {
      const uint64_t bits = replay[b / 64];
      const int64_t e = std::min<int64_t>(64, count - b);
      for (int64_t k = 0; k < e; ++k) mult[b + k] = ((bits >> k) & 1u) != 0 ? scale : T(0);
    }
    return;
  }
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(p * 16777216.0));
  philox_words(seed, first, count, words);
  for (int64_t k = 0; k < count; ++k) mult[k] = (words[k] >> 8) >= threshold ? scale : T(0);
  if (record == nullptr) return;
  for (int64_t b = 0; b < count; b += 64) {
    const int64_t e = std::min<int64_t>(64, count - b);
    uint64_t bits = 0;
    for (int64_t k = 0; k < e; ++k) bits |= static_cast<uint64_t>((words[b + k] >> 8) >= threshold) << k;
    record[b / 64] = bits;
  }
}

}  // namespace hmer::cpu
