// Float tanh on one thread: ns per element of a plain loop over N floats with hd_tanh<float>
// (kernels/functors.h) against the same loop calling libm's ::tanhf, plus the kernel behind the
// hmer::tanh op on a tensor (forced to one OpenMP thread). Median of R runs. Prints JSON.
// Usage: bench_tanh [n=16777216] [runs=7]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/tensor.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/functors.h"

using namespace hmer;

namespace {

// Kept out of line so both loops are compiled the same way and timed as whole calls; the noinline
// loop bodies still inline their element function, which is what vectorises (or not).
__attribute__((noinline)) void loop_hd(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fn::hd_tanh<float>(x[i]);
}
__attribute__((noinline)) void loop_libm(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = ::tanhf(x[i]);
}

template <class F>
double median_ns_per_element(int runs, int64_t n, F&& f) {
  std::vector<double> ns;
  f();  // warm-up: page faults, caches
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ns.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
                 static_cast<double>(n));
  }
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::max<int64_t>(1, std::atoll(argv[1])) : int64_t{16} << 20;
  const int runs = argc > 2 ? std::max(1, std::atoi(argv[2])) : 7;
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  // The attention's pre-activations are mostly within a few units of 0: uniform in [-6, 6) covers
  // both halves of hd_tanh and saturation; a fixed LCG keeps runs comparable.
  std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n)), z(static_cast<size_t>(n));
  uint32_t s = 1u;
  for (auto& v : x) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<float>((s >> 8) * 0x1p-24 * 12.0 - 6.0);
  }

  const double hd_ns = median_ns_per_element(runs, n, [&] { loop_hd(x.data(), y.data(), n); });
  const double libm_ns = median_ns_per_element(runs, n, [&] { loop_libm(x.data(), z.data(), n); });

  // Largest difference between the two, in ulps of libm's result, as a sanity check of the run.
  int64_t max_ulp = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(y[i]) - z[i]);
    const double u = std::ldexp(1.0, std::ilogb(std::max(std::fabs(z[i]), 0x1p-126f)) - 23);
    max_ulp = std::max<int64_t>(max_ulp, static_cast<int64_t>(std::llround(d / u)));
  }

  // The op's kernel on preallocated tensors (what hmer::tanh runs after allocating its output).
  const Tensor xt = Tensor::from_vector<float>(x, {n});
  const Tensor yt = Tensor::empty({n}, DType::Float32);
  const double op_ns =
      median_ns_per_element(runs, n, [&] { cpu::unary_forward(UnaryOp::Tanh, xt, yt, 0.0); });

  std::printf(
      "{\"bench\": \"tanh\", \"n\": %lld, \"runs\": %d, \"threads\": 1, \"native\": %d, "
      "\"hd_tanh_ns_per_element\": %.3f, \"libm_tanhf_ns_per_element\": %.3f, \"speedup\": %.2f, "
      "\"op_tanh_ns_per_element\": %.3f, \"max_ulp_hd_vs_libm\": %lld}\n",
      static_cast<long long>(n), runs, HMER_NATIVE_BUILD, hd_ns, libm_ns, libm_ns / hd_ns, op_ns,
      static_cast<long long>(max_ulp));
  return 0;
}
