// hd_tanh<float> (kernels/functors.h, the libm-free, vectorisable tanh) against std::tanh in double
// rounded to float, over every float bit pattern: ulp error, sign of zero, infinities, NaN, exact odd
// symmetry, tiny inputs returned unchanged, |result| <= 1 and monotonicity. Prints
//   TANH max_ulp=.. max_err_vs_exact_ulp=.. not_correctly_rounded=.. checked=..
// so `ctest -V | grep TANH` shows the measured accuracy.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/functors.h"

using hmer::fn::hd_tanh;

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Position of a float on the number line counted in floats (+0 and -0 both 0), so the difference of
// two positions is their distance in ulps, across zero and binades.
int64_t ordinal(float f) {
  const uint32_t u = bits(f);
  const int64_t mag = static_cast<int64_t>(u & 0x7fffffffu);
  return (u & 0x80000000u) ? -mag : mag;
}

// The spacing of floats at the magnitude of v (denormal spacing below FLT_MIN), for errors against
// the exact value in fractional ulps.
double ulp_at(float v) {
  const float a = std::fabs(v);
  if (a < std::numeric_limits<float>::min()) return std::ldexp(1.0, -149);
  return std::ldexp(1.0, std::ilogb(a) - 23);
}

// Below this |x| the correctly rounded tanh is x itself (x - tanh x < x^3/3 stays under half the
// gap to the float below x), and the function must return x bit for bit, denormals included.
constexpr float kTiny = 0x1p-12f;
// The correctly rounded result must be within this many ulps (the requirement, not the measurement).
constexpr int64_t kMaxUlp = 2;

struct BlockStats {
  int64_t checked = 0;
  int64_t max_ulp = 0;
  uint32_t worst_ulp_bits = 0;
  double max_exact = 0.0;
  uint32_t worst_exact_bits = 0;
  int64_t not_cr = 0;        // results 1 ulp or more from the correctly rounded value
  int64_t over_limit = 0;    // results more than kMaxUlp from it
  int64_t nan_bad = 0;       // NaN in, not NaN out
  int64_t bound_bad = 0;     // |result| > 1
  int64_t zero_sign_bad = 0; // a zero result whose sign differs from the reference's
  int64_t odd_bad = 0;       // tanh(-x) not bitwise -tanh(x)
  int64_t tiny_bad = 0;      // |x| < kTiny but result != x
  int64_t mono_bad = 0;      // a step against the order of the inputs
  uint32_t first_bad_bits = 0xffffffffu;
};

void note_bad(BlockStats& s, uint32_t b) {
  if (s.first_bad_bits == 0xffffffffu) s.first_bad_bits = b;
}

// In Release every pattern is checked; a Debug build (no inlining, no vectorisation) checks every
// 7th pattern plus every pattern with |x| < 1, where the polynomial and both branch points are.
#ifdef NDEBUG
constexpr uint32_t kStride = 1;
#else
constexpr uint32_t kStride = 7;
#endif

// Checks the patterns [first, first + 2^16): one block never straddles the sign boundary 2^31, so
// the order of the values along the block's bit patterns is one direction throughout.
BlockStats check_block(uint32_t first) {
  constexpr uint32_t kBlock = 1u << 16;
  BlockStats s;
  const bool negative = first >= 0x80000000u;
  // Monotonicity runs across block boundaries by comparing with the pattern just before the block
  // (same sign half unless the block starts the half).
  bool have_prev = false;
  float prev = 0.0f;
  if ((first & 0x7fffffffu) != 0) {
    const float xp = from_bits(first - 1);
    if (!std::isnan(xp)) {
      prev = hd_tanh<float>(xp);
      have_prev = true;
    }
  }
  for (uint32_t i = 0; i < kBlock; ++i) {
    const uint32_t b = first + i;
    const float x = from_bits(b);
    if (kStride != 1 && b % kStride != 0 && !(std::fabs(x) < 1.0f)) continue;
    const float y = hd_tanh<float>(x);
    ++s.checked;
    if (std::isnan(x)) {
      if (!std::isnan(y)) ++s.nan_bad, note_bad(s, b);
      continue;  // NaN patterns end each half: the ordered run is over
    }
    const double ref = std::tanh(static_cast<double>(x));
    const float cr = static_cast<float>(ref);
    const int64_t d = std::llabs(ordinal(y) - ordinal(cr));
    if (d > s.max_ulp) s.max_ulp = d, s.worst_ulp_bits = b;
    if (d > 0) ++s.not_cr;
    if (d > kMaxUlp) ++s.over_limit, note_bad(s, b);
    const double exact = std::fabs(static_cast<double>(y) - ref) / ulp_at(cr);
    if (exact > s.max_exact) s.max_exact = exact, s.worst_exact_bits = b;
    if (!(std::fabs(y) <= 1.0f)) ++s.bound_bad, note_bad(s, b);
    if (y == 0.0f && std::signbit(y) != std::signbit(cr)) ++s.zero_sign_bad, note_bad(s, b);
    if (bits(hd_tanh<float>(-x)) != (bits(y) ^ 0x80000000u)) ++s.odd_bad, note_bad(s, b);
    if (std::fabs(x) < kTiny && bits(y) != bits(x)) ++s.tiny_bad, note_bad(s, b);
    // Increasing patterns are increasing values for +x and decreasing values for -x.
    if (have_prev && (negative ? y > prev : y < prev)) ++s.mono_bad, note_bad(s, b);
    prev = y;
    have_prev = true;
  }
  return s;
}

TEST(TanhApprox, EveryFloatWithinTwoUlpsOfCorrectlyRounded) {
  constexpr int64_t kBlocks = int64_t{1} << 16;  // 2^16 blocks of 2^16 patterns: all 2^32
  std::vector<BlockStats> blocks(kBlocks);
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t k = 0; k < kBlocks; ++k) blocks[k] = check_block(static_cast<uint32_t>(k) << 16);

  BlockStats all;
  for (const BlockStats& s : blocks) {
    all.checked += s.checked;
    if (s.max_ulp > all.max_ulp) all.max_ulp = s.max_ulp, all.worst_ulp_bits = s.worst_ulp_bits;
    if (s.max_exact > all.max_exact) all.max_exact = s.max_exact, all.worst_exact_bits = s.worst_exact_bits;
    all.not_cr += s.not_cr;
    all.over_limit += s.over_limit;
    all.nan_bad += s.nan_bad;
    all.bound_bad += s.bound_bad;
    all.zero_sign_bad += s.zero_sign_bad;
    all.odd_bad += s.odd_bad;
    all.tiny_bad += s.tiny_bad;
    all.mono_bad += s.mono_bad;
    if (all.first_bad_bits == 0xffffffffu) all.first_bad_bits = s.first_bad_bits;
  }
  std::printf("TANH max_ulp=%lld (x=%a) max_err_vs_exact_ulp=%.3f (x=%a) not_correctly_rounded=%lld checked=%lld\n",
              static_cast<long long>(all.max_ulp), static_cast<double>(from_bits(all.worst_ulp_bits)), all.max_exact,
              static_cast<double>(from_bits(all.worst_exact_bits)), static_cast<long long>(all.not_cr),
              static_cast<long long>(all.checked));
  const double first_bad = static_cast<double>(from_bits(all.first_bad_bits));
  if constexpr (kStride == 1) {
    EXPECT_EQ(all.checked, int64_t{1} << 32);
  }
  EXPECT_LE(all.max_ulp, kMaxUlp) << "worst at x = " << static_cast<double>(from_bits(all.worst_ulp_bits));
  EXPECT_EQ(all.over_limit, 0);
  EXPECT_EQ(all.nan_bad, 0) << "first failing x = " << first_bad;
  EXPECT_EQ(all.bound_bad, 0) << "first failing x = " << first_bad;
  EXPECT_EQ(all.zero_sign_bad, 0) << "first failing x = " << first_bad;
  EXPECT_EQ(all.odd_bad, 0) << "first failing x = " << first_bad;
  EXPECT_EQ(all.tiny_bad, 0) << "first failing x = " << first_bad;
  EXPECT_EQ(all.mono_bad, 0) << "first failing x = " << first_bad;
}

TEST(TanhApprox, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bits(hd_tanh<float>(0.0f)), bits(0.0f));
  EXPECT_EQ(bits(hd_tanh<float>(-0.0f)), bits(-0.0f));
  EXPECT_EQ(hd_tanh<float>(inf), 1.0f);
  EXPECT_EQ(hd_tanh<float>(-inf), -1.0f);
  EXPECT_EQ(hd_tanh<float>(std::numeric_limits<float>::max()), 1.0f);
  EXPECT_EQ(hd_tanh<float>(-std::numeric_limits<float>::max()), -1.0f);
  EXPECT_TRUE(std::isnan(hd_tanh<float>(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(hd_tanh<float>(-std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(hd_tanh<float>(std::numeric_limits<float>::signaling_NaN())));
  for (float tiny : {std::numeric_limits<float>::denorm_min(), 0x1.8p-140f, std::numeric_limits<float>::min(),
                     0x1p-20f, 0x1.fffffep-13f}) {
    EXPECT_EQ(bits(hd_tanh<float>(tiny)), bits(tiny)) << tiny;
    EXPECT_EQ(bits(hd_tanh<float>(-tiny)), bits(-tiny)) << tiny;
  }
  // Around the switch between the two halves (0.75) and the clamp of the exp half (9.5): within the
  // 2-ulp bound of the double reference and in order.
  for (float c : {0.75f, 9.5f, 9.0109f}) {
    float prev = hd_tanh<float>(std::nextafter(std::nextafter(c, 0.0f), 0.0f));
    for (float x = std::nextafter(c, 0.0f), end = std::nextafter(std::nextafter(c, inf), inf); x <= end;
         x = std::nextafter(x, inf)) {
      const float y = hd_tanh<float>(x);
      EXPECT_LE(std::llabs(ordinal(y) - ordinal(static_cast<float>(std::tanh(static_cast<double>(x))))), kMaxUlp)
          << x;
      EXPECT_GE(y, prev) << x;
      prev = y;
    }
  }
  // The double version is still libm's.
  EXPECT_EQ(hd_tanh<double>(0.5), std::tanh(0.5));
  EXPECT_EQ(hd_tanh<double>(-3.25), std::tanh(-3.25));
}

// The element-wise op (the vectorised loop of kernels/cpu/elementwise.cpp, OpenMP-split) gives the
// same bits as the scalar function, special values included: vectorising must not change results.
TEST(TanhApprox, TensorOpMatchesScalarBitForBit) {
  std::vector<float> v;
  uint32_t state = 12345u;
  for (int i = 0; i < (1 << 20); ++i) {
    state = state * 1664525u + 1013904223u;
    // Random bit patterns (every magnitude) mixed with uniform values in [-12, 12).
    v.push_back(i % 2 ? from_bits(state) : static_cast<float>((state >> 8) * 0x1p-24 * 24.0 - 12.0));
  }
  for (float s : {0.0f, -0.0f, 0.75f, -0.75f, 9.5f, std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::denorm_min()})
    v.push_back(s);
  const hmer::Tensor x = hmer::Tensor::from_vector<float>(v, {static_cast<int64_t>(v.size())});
  const std::vector<float> y = hmer::tanh(x).to_vector<float>();
  ASSERT_EQ(y.size(), v.size());
  int64_t differ = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const float want = hd_tanh<float>(v[i]);
    const bool same = bits(y[i]) == bits(want) || (std::isnan(y[i]) && std::isnan(want));
    if (!same && differ++ == 0) ADD_FAILURE() << "x = " << v[i] << ": op " << y[i] << " vs scalar " << want;
  }
  EXPECT_EQ(differ, 0);
}

}  // namespace
