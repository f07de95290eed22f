#pragma once
// Counter-based RNG (Philox4x32-10, Salmon et al. 2011). A random number is a pure function of
// (seed, counter), so element i of a dropout mask is the same on the CPU and on CUDA, whichever
// thread computes it, and a generator's state is just (seed, offset): trivially saved for resume.
#include <cstdint>
#include <cmath>

#include "core/hd.h"

namespace hmer {

struct Philox4x32 {
  uint32_t v[4];
};

HMER_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds on counter (c0..c3) and key (k0, k1).
HMER_HD Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = philox_mulhilo(M0, c0, &hi0);
    const uint32_t lo1 = philox_mulhilo(M1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n1 = lo1;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    const uint32_t n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0;
    k1 += W1;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

// The four 32-bit words for block `block` of stream (seed, offset): counter = offset + block.
HMER_HD Philox4x32 philox_block(uint64_t seed, uint64_t counter) {
  return philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// kPhiloxBatch consecutive blocks at once, counters first_counter + j: out[4·j + w] is word w of
// block j, exactly philox_block(seed, first_counter + j).v[w] (so out is the word stream in order). The same rounds as philox4x32_10 on arrays of
// 64-bit lanes holding 32-bit values, which the compiler turns into vector multiplies (one block at a
// time is a serial chain of ten 32x32->64 multiplies; 3-4x slower here). Host only.
constexpr int kPhiloxBatch = 16;
inline void philox_blocks(uint64_t seed, uint64_t first_counter, uint32_t (&out)[4 * kPhiloxBatch]) {
  const uint64_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u, kLow = 0xFFFFFFFFu;
  uint64_t c0[kPhiloxBatch], c1[kPhiloxBatch], c2[kPhiloxBatch], c3[kPhiloxBatch];
  for (int j = 0; j < kPhiloxBatch; ++j) {
    const uint64_t ctr = first_counter + static_cast<uint64_t>(j);
    c0[j] = ctr & kLow;
    c1[j] = ctr >> 32;
    c2[j] = 0u;
    c3[j] = 0u;
  }
  uint64_t k0 = seed & kLow, k1 = seed >> 32;
  for (int r = 0; r < 10; ++r) {
    // Kept rolled: fully unrolled, GCC vectorises only fragments of it. (nvcc does not know the pragma.)
#if !defined(__CUDACC__)
#pragma GCC unroll 1
#endif
    for (int j = 0; j < kPhiloxBatch; ++j) {
      const uint64_t p0 = M0 * c0[j], p1 = M1 * c2[j];  // < 2^64: the exact 32x32 products
      const uint64_t n0 = (p1 >> 32) ^ c1[j] ^ k0;
      const uint64_t n2 = (p0 >> 32) ^ c3[j] ^ k1;
      c1[j] = p1 & kLow;
      c3[j] = p0 & kLow;
      c0[j] = n0;
      c2[j] = n2;
    }
    k0 = (k0 + W0) & kLow;
    k1 = (k1 + W1) & kLow;
  }
  for (int j = 0; j < kPhiloxBatch; ++j) {
    out[4 * j + 0] = static_cast<uint32_t>(c0[j]);
    out[4 * j + 1] = static_cast<uint32_t>(c1[j]);
    out[4 * j + 2] = static_cast<uint32_t>(c2[j]);
    out[4 * j + 3] = static_cast<uint32_t>(c3[j]);
  }
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float32).
HMER_HD float uint_to_unit_float(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }
// Uniform in [0, 1) with 53 random bits.
HMER_HD double uints_to_unit_double(uint32_t a, uint32_t b) {
  const uint64_t m = (static_cast<uint64_t>(a) << 21) ^ (static_cast<uint64_t>(b) >> 11);
  return static_cast<double>(m & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Element i of the float stream starting at `offset` words: word (offset + i).
HMER_HD float philox_uniform_float(uint64_t seed, uint64_t offset, uint64_t i) {
  const uint64_t w = offset + i;
  const Philox4x32 b = philox_block(seed, w >> 2);
  return uint_to_unit_float(b.v[w & 3]);
}

// Holds (seed, offset). Every draw of n numbers consumes n words (rounded up to whole blocks of 4),
// so the streams of successive calls never overlap and are independent of thread count.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves `n` words and returns the offset of the first one.
  uint64_t reserve(uint64_t n) {
    const uint64_t start = offset_;
    offset_ += (n + 3) / 4 * 4;
    return start;
  }

  float uniform_float() { return philox_uniform_float(seed_, reserve(1), 0); }
  double uniform_double() {
    const uint64_t o = reserve(2);
    const Philox4x32 b = philox_block(seed_, o >> 2);
    return uints_to_unit_double(b.v[0], b.v[1]);
  }
  // Standard normal via Box-Muller on two doubles.
  double normal() {
    double u1 = uniform_double();
    const double u2 = uniform_double();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The process-wide default generator (seeded 0 until manual_seed is called).
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace hmer
