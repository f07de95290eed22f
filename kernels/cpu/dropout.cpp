#include "kernels/cpu/dropout.h"

#include "core/rng.h"
#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

template <class T>
void dropout_apply_impl(const T* in, T* out, int64_t n, double p, uint64_t seed, uint64_t offset) {
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  parallel_for(n, kElementwiseGrain, [&](int64_t b, int64_t e) {
    // One Philox block yields four words: draw it once per aligned group of four.
    int64_t i = b;
    while (i < e) {
      const uint64_t w = offset + static_cast<uint64_t>(i);
      const Philox4x32 block = philox_block(seed, w >> 2);
      for (uint64_t lane = w & 3; lane < 4 && i < e; ++lane, ++i) {
        // Compared in double: rounding p to float could move the threshold across a 24-bit grid point.
        const bool keep = static_cast<double>(uint_to_unit_float(block.v[lane])) >= p;
        out[i] = in[i] * (keep ? scale : T(0));  // as torch: x·noise, so inf·0 is NaN
      }
    }
  });
}
template void dropout_apply_impl<float>(const float*, float*, int64_t, double, uint64_t, uint64_t);
template void dropout_apply_impl<double>(const double*, double*, int64_t, double, uint64_t, uint64_t);

void dropout_apply(const Tensor& in, const Tensor& out, double p, uint64_t seed, uint64_t offset) {
  HMER_DISPATCH_FLOATING(in.dtype(), "dropout", [&] {
    dropout_apply_impl<scalar_t>(in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), in.numel(), p, seed, offset);
  });
}

}  // namespace hmer::cpu
