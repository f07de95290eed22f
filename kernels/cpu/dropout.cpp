#include "kernels/cpu/dropout.h"

#include "core/rng.h"
#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

template <class T>
void dropout_apply_impl(const T* in, T* out, int64_t n, double p, uint64_t seed, uint64_t offset) {
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  parallel_for(n, kElementwiseGrain, [&](int64_t b, int64_t e) {
    for_each_dropout_keep(seed, offset, static_cast<uint64_t>(b), e - b, p, [&](int64_t k, bool keep) {
      out[b + k] = in[b + k] * (keep ? scale : T(0));  // as torch: x·noise, so inf·0 is NaN
    });
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
