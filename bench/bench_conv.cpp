// Times CAN's dense-block 3x3 conv (96 -> 24, pad 1, with bias) on a CROHME-sized float32 batch
// (8, 96, 30, 120): forward alone and forward + backward (grads for x, w and b). Warm-up runs are
// excluded; prints the median of N runs as JSON. Usage: bench_conv [runs=20]
// tools/bench_conv_torch.py measures the same thing in PyTorch.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "kernels/cpu/parallel.h"

using namespace hmer;

namespace {

Tensor uniform(const Shape& shape, Generator& g, double scale) {
  Tensor t = Tensor::empty(shape, DType::Float32);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>((g.uniform_double() * 2.0 - 1.0) * scale);
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
  const int warmup = 2;
  Generator g(0);
  Tensor x = uniform({8, 96, 30, 120}, g, 1.0);
  Tensor w = uniform({24, 96, 3, 3}, g, 1.0 / std::sqrt(96.0 * 9.0));
  Tensor b = uniform({24}, g, 1.0 / std::sqrt(96.0 * 9.0));
  Tensor gy = uniform({8, 24, 30, 120}, g, 1.0);
  for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
  const Conv2dOptions opt{{1, 1}, {1, 1}, {1, 1}};

  std::vector<double> fwd, fwd_bwd;
  for (int i = 0; i < warmup + runs; ++i) {
    for (Tensor* t : {&x, &w, &b}) t->zero_grad();
    auto t0 = std::chrono::steady_clock::now();
    Tensor y = conv2d(x, w, b, opt);
    const double f = ms_since(t0);
    y.backward(gy);
    const double fb = ms_since(t0);
    if (i >= warmup) {
      fwd.push_back(f);
      fwd_bwd.push_back(fb);
    }
  }
  std::printf("{\"fwd_bwd_ms\": %.3f, \"fwd_ms\": %.3f, \"threads\": %d}\n", median(fwd_bwd), median(fwd),
              cpu::num_threads());
  return 0;
}
