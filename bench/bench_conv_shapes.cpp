// Times the CPU conv2d kernels on every convolution shape of one CAN training step (configs/can.yaml:
// DenseNet growth 24, 16 bottleneck layers per block, the two counting convs, the decoder's 1x1
// encoder projection and fused 11x11 coverage conv), forward and backward, and prints each shape's
// median time per call, its calls per step and its share, as JSON lines followed by the totals.
// It says which convolutions a step's conv time goes to, and is the A/B harness for conv kernels.
// Usage: bench_conv_shapes [batch=8] [height=120] [width=480] [tokens=30] [runs=5]
// With batch 1 and "decode" as a sixth argument it times the forward only (greedy decoding).
// HMER_BENCH_NO_DIRECT=1 routes the 3x3 growth convs through im2col + GEMM (A/B of the direct kernel);
// HMER_BENCH_NO_SGEMM=1 runs every float GEMM on Eigen instead of hmer's sgemm (A/B of the GEMM);
// HMER_BENCH_GEMM_CASE=1 adds the block-1 3x3 conv's GEMM alone (a 1x1 conv with its 864 column rows as
// channels), which showed that GEMM, not im2col, was what made the im2col path slow.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/parallel.h"

using namespace hmer;

namespace {

struct Case {
  std::string name;
  cpu::Conv2dShape s;
  int64_t calls;     // per step
  bool backward_x;   // the step wants the input's gradient (not for the image)
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

cpu::Conv2dShape shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t k, int64_t stride,
                       int64_t pad) {
  cpu::Conv2dShape s{};
  s.N = N, s.C = C, s.H = H, s.W = W, s.O = O, s.kh = k, s.kw = k;
  s.sh = s.sw = stride, s.ph = s.pw = pad, s.dh = s.dw = 1;
  s.OH = (H + 2 * pad - k) / stride + 1;
  s.OW = (W + 2 * pad - k) / stride + 1;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::atoll(argv[1]) : 8;
  const int64_t H = argc > 2 ? std::atoll(argv[2]) : 120;
  const int64_t W = argc > 3 ? std::atoll(argv[3]) : 480;
  const int64_t T = argc > 4 ? std::atoll(argv[4]) : 30;
  const int runs = argc > 5 ? std::max(1, std::atoi(argv[5])) : 5;
  const bool decode = argc > 6 && std::strcmp(argv[6], "decode") == 0;

  // Feature map sizes as the model computes them: stem conv stride 2, max pool 2, two avg-pool transitions.
  const int64_t h1 = (H + 6 - 7) / 2 + 1, w1 = (W + 6 - 7) / 2 + 1;
  const int64_t hb1 = h1 / 2, wb1 = w1 / 2, hb2 = hb1 / 2, wb2 = wb1 / 2, hb3 = hb2 / 2, wb3 = wb2 / 2;
  std::vector<Case> cases;
  cases.push_back({"stem 7x7 1->48 s2", shape(N, 1, H, W, 48, 7, 2, 3), 1, false});
  const int64_t dims[3][3] = {{48, hb1, wb1}, {216, hb2, wb2}, {300, hb3, wb3}};
  for (int b = 0; b < 3; ++b) {
    const int64_t c0 = dims[b][0], bh = dims[b][1], bw = dims[b][2];
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t C = c0 + 24 * i;
      cases.push_back({"b" + std::to_string(b + 1) + " 1x1 " + std::to_string(C) + "->96", shape(N, C, bh, bw, 96, 1, 1, 0),
                       1, true});
    }
    cases.push_back({"b" + std::to_string(b + 1) + " 3x3 96->24", shape(N, 96, bh, bw, 24, 3, 1, 1), 16, true});
    if (b < 2) {
      const int64_t C = c0 + 24 * 16;
      cases.push_back({"t" + std::to_string(b + 1) + " 1x1 " + std::to_string(C) + "->" + std::to_string(C / 2),
                       shape(N, C, bh, bw, C / 2, 1, 1, 0), 1, true});
    }
  }
  if (const char* e = std::getenv("HMER_BENCH_NO_DIRECT"); e != nullptr && std::strcmp(e, "1") == 0) {
    cpu::set_direct_conv3x3(false);
  }
  if (const char* e = std::getenv("HMER_BENCH_NO_SGEMM"); e != nullptr && std::strcmp(e, "1") == 0) {
    cpu::set_sgemm_enabled(false);
  }
  if (const char* e = std::getenv("HMER_BENCH_GEMM_CASE"); e != nullptr && std::strcmp(e, "1") == 0) {
    cases.push_back({"gemm-only 1x1 864->24", shape(N, 864, hb1, wb1, 24, 1, 1, 0), 16, true});
  }
  cases.push_back({"count 3x3 684->512", shape(N, 684, hb3, wb3, 512, 3, 1, 1), 1, true});
  cases.push_back({"count 5x5 684->512", shape(N, 684, hb3, wb3, 512, 5, 1, 2), 1, true});
  cases.push_back({"count 1x1 512->111", shape(N, 512, hb3, wb3, 111, 1, 1, 0), 2, true});
  cases.push_back({"enc proj 1x1 684->512", shape(N, 684, hb3, wb3, 512, 1, 1, 0), 1, true});
  cases.push_back({"coverage 11x11 1->512", shape(N, 1, hb3, wb3, 512, 11, 1, 5), T, true});

  Generator g(0);
  auto fill = [&](std::vector<float>& v, int64_t n) {
    v.resize(static_cast<size_t>(n));
    for (auto& e : v) e = static_cast<float>(g.uniform_double() * 2.0 - 1.0);
  };
  double total_f = 0, total_b = 0;
  std::vector<std::pair<std::string, double>> rows;
  for (Case& c : cases) {
    const auto& s = c.s;
    std::vector<float> x, w, b, y, gy, gx, gw, gb;
    fill(x, s.N * s.C * s.H * s.W);
    fill(w, s.O * s.C * s.kh * s.kw);
    fill(b, s.O);
    fill(gy, s.N * s.O * s.OH * s.OW);
    y.resize(gy.size());
    gx.resize(x.size());
    gw.resize(w.size());
    gb.resize(b.size());
    std::vector<double> tf, tb, tgx;
    for (int r = 0; r < runs + 1; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      cpu::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
      auto t1 = std::chrono::steady_clock::now();
      if (!decode) {
        cpu::conv2d_backward<float>(s, x.data(), w.data(), gy.data(), c.backward_x ? gx.data() : nullptr, gw.data(),
                                    gb.data());
      }
      auto t2 = std::chrono::steady_clock::now();
      if (!decode && c.backward_x) {
        cpu::conv2d_backward<float>(s, x.data(), w.data(), gy.data(), gx.data(), nullptr, nullptr);
      }
      auto t3 = std::chrono::steady_clock::now();
      if (r == 0) continue;
      tgx.push_back(std::chrono::duration<double, std::milli>(t3 - t2).count());
      tf.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      tb.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
    const double f = median(tf), bw = median(tb), gxt = median(tgx);
    const double gflop = 2.0 * s.N * s.O * s.col_rows() * s.col_cols() * 1e-9;
    std::printf("{\"conv\": \"%s\", \"shape\": [%lld, %lld, %lld, %lld], \"calls\": %lld, \"fwd_ms\": %.3f, "
                "\"bwd_ms\": %.3f, \"bwd_gx_only_ms\": %.3f, \"fwd_gflops\": %.1f, \"bwd_gflops\": %.1f}\n",
                c.name.c_str(), (long long)s.N, (long long)s.C, (long long)s.OH, (long long)s.OW, (long long)c.calls, f,
                bw, gxt, gflop / f * 1e3, (c.backward_x ? 2 : 1) * gflop / std::max(bw, 1e-9) * 1e3);
    total_f += f * c.calls;
    total_b += bw * c.calls;
  }
  std::printf("{\"total_fwd_ms\": %.1f, \"total_bwd_ms\": %.1f, \"threads\": %d}\n", total_f, total_b,
              cpu::num_threads());
  return 0;
}
