#pragma once
// Splits [0, n) into contiguous chunks across the OpenMP threads when the work is large enough to
// pay for the fork (grain = minimum elements per thread). Small ops stay on the calling thread.
#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hmer::cpu {

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <class F>
void parallel_for(int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  const int64_t max_chunks = grain > 0 ? std::max<int64_t>(1, n / grain) : n;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
#ifdef _OPENMP
  if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      const int nt = omp_get_num_threads();
      const int64_t chunk = (n + nt - 1) / nt;
      const int64_t b = std::min<int64_t>(n, t * chunk);
      const int64_t e = std::min<int64_t>(n, b + chunk);
      if (b < e) f(b, e);
    }
    return;
  }
#endif
  (void)threads;
  f(0, n);
}

// Elements per thread below which element-wise work is not split.
constexpr int64_t kElementwiseGrain = 32768;

}  // namespace hmer::cpu
