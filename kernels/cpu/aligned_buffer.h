#pragma once
// Kernel scratch on a 64-byte boundary (a cache line, and an AVX-512 vector), for rows that are read
// a vector at a time from their start: an unaligned vector load splits across two cache lines.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace hmer::cpu {

struct AlignedFloatsDelete {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t{64}); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedFloatsDelete>;

// n floats (at least one), uninitialised.
inline AlignedFloats aligned_floats(int64_t n) {
  return AlignedFloats(new (std::align_val_t{64}) float[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

}  // namespace hmer::cpu
