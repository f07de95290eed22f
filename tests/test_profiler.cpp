// core/profiler: the FLOP counter `hmer bench` reports and the per-op table of `hmer bench --profile`.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "core/rng.h"

namespace hmer {
namespace {

Tensor randn(const Shape& s, Generator& g, bool grad = false) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(g.normal());
  Tensor t = Tensor::from_vector<float>(v, s);
  t.set_requires_grad(grad);
  return t;
}

// Counting is scoped: it has to be switched off again whatever a test does.
struct CountFlops {
  CountFlops() {
    profiler::reset();
    profiler::set_count_flops(true);
  }
  ~CountFlops() {
    profiler::set_count_flops(false);
    profiler::reset();
  }
};

TEST(Profiler, FlopsOfConvLinearMatmul) {
  Generator g(1);
  const Tensor x = randn({2, 3, 9, 11}, g), w = randn({5, 3, 3, 3}, g);
  Conv2dOptions o;
  o.stride = {2, 1};
  o.padding = {1, 0};
  {
    CountFlops c;
    const Tensor y = conv2d(x, w, Tensor(), o);  // (2, 5, 5, 9)
    ASSERT_EQ(y.shape(), (Shape{2, 5, 5, 9}));
    EXPECT_EQ(profiler::flops(), 2.0 * (2 * 5 * 5 * 9) * (3 * 3 * 3));
  }
  {
    CountFlops c;
    (void)linear(randn({4, 6, 7}, g), randn({8, 7}, g), randn({8}, g));  // rows 24, in 7, out 8
    EXPECT_EQ(profiler::flops(), 2.0 * 24 * 7 * 8);
    (void)matmul(randn({3, 4, 5}, g), randn({3, 5, 6}, g));
    EXPECT_EQ(profiler::flops(), 2.0 * 24 * 7 * 8 + 2.0 * 3 * 4 * 5 * 6);
  }
  // Off by default: nothing is counted.
  profiler::reset();
  (void)conv2d(x, w, Tensor(), o);
  EXPECT_EQ(profiler::flops(), 0.0);
}

TEST(Profiler, ExclusiveTimesPerPhaseAddUpToTheWallTime) {
  Generator g(2);
  const Tensor x = randn({4, 8, 32, 32}, g, true), w = randn({16, 8, 3, 3}, g, true);
  Conv2dOptions o;
  o.padding = {1, 1};

  // Disabled: no entries at all.
  profiler::reset();
  (void)sum(relu(conv2d(x, w, Tensor(), o)));
  EXPECT_TRUE(profiler::entries().empty());

  profiler::reset();
  profiler::set_enabled(true);
  const auto t0 = std::chrono::steady_clock::now();
  const Tensor loss = sum(relu(conv2d(x, w, Tensor(), o)));
  loss.backward();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  profiler::set_enabled(false);

  std::map<std::pair<std::string, std::string>, profiler::Entry> by;
  double total = 0;
  for (const auto& e : profiler::entries()) {
    by[{e.phase, e.name}] = e;
    total += e.seconds;
    EXPECT_GE(e.seconds, 0.0) << e.name;
  }
  ASSERT_TRUE(by.count({"forward", "conv2d"}));
  EXPECT_EQ((by[{"forward", "conv2d"}].calls), 1);
  EXPECT_TRUE(by.count({"forward", "relu"}));
  // Backward work is booked under "backward": the autograd node of the conv, and whatever kernels it ran.
  ASSERT_TRUE(by.count({"backward", "Conv2dBackward"}));
  EXPECT_EQ((by[{"backward", "Conv2dBackward"}].calls), 1);
  bool backward_conv_time = false;
  for (const auto& [k, e] : by)
    if (k.first == "backward" && e.seconds > 0) backward_conv_time = true;
  EXPECT_TRUE(backward_conv_time);
  // Exclusive times never count a nested op twice: together they fit in the wall time.
  EXPECT_LE(total, wall * 1.000001);
  EXPECT_GT(total, 0.0);
  profiler::reset();
  EXPECT_TRUE(profiler::entries().empty());
}

TEST(Profiler, PhaseGuardNests) {
  Generator g(3);
  const Tensor a = randn({16, 16}, g);
  profiler::reset();
  profiler::set_enabled(true);
  {
    profiler::PhaseGuard p("optimizer");
    profiler::Scope s("outer");
    (void)add(a, a);
  }
  (void)mul(a, a);
  profiler::set_enabled(false);
  std::map<std::pair<std::string, std::string>, int64_t> calls;
  for (const auto& e : profiler::entries()) calls[{e.phase, e.name}] = e.calls;
  profiler::reset();
  EXPECT_EQ((calls[{"optimizer", "outer"}]), 1);
  EXPECT_EQ((calls[{"optimizer", "add"}]), 1);
  EXPECT_EQ((calls[{"forward", "mul"}]), 1);
  EXPECT_EQ(calls.count({"forward", "add"}), 0u);
}

}  // namespace
}  // namespace hmer
