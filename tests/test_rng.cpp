// Philox4x32-10 known-answer vectors, the word-stream layout the CPU and CUDA dropout masks rely
// on, Generator bookkeeping (determinism, reserve offsets, state round trip) and distribution
// statistics of uniform and normal draws.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "core/rng.h"

using namespace hmer;

namespace {

struct Kat {
  uint32_t ctr[4];
  uint32_t key[2];
  uint32_t expected[4];
};

// Random123 kat_vectors, philox4x32 with 10 rounds.
const Kat kKats[] = {
    {{0u, 0u, 0u, 0u}, {0u, 0u}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

TEST(Philox, KnownAnswerVectors) {
  for (const Kat& k : kKats) {
    const Philox4x32 r = philox4x32_10(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(r.v[i], k.expected[i]) << std::hex << "counter " << k.ctr[0] << " " << k.ctr[1] << " " << k.ctr[2]
                                       << " " << k.ctr[3] << " key " << k.key[0] << " " << k.key[1] << ", word " << i;
  }
}

// The stream layout is a contract between the CPU and CUDA kernels: block = (seed, counter) with the
// 64-bit counter in the low two counter words and the 64-bit seed as the key.
TEST(Philox, BlockLayout) {
  const uint64_t seed = 0x0123456789abcdefull, counter = 0xfedcba9876543210ull;
  const Philox4x32 a = philox_block(seed, counter);
  const Philox4x32 b = philox4x32_10(0x76543210u, 0xfedcba98u, 0u, 0u, 0x89abcdefu, 0x01234567u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.v[i], b.v[i]) << "word " << i;
  // A different seed or counter changes the block.
  EXPECT_NE(philox_block(seed + 1, counter).v[0], a.v[0]);
  EXPECT_NE(philox_block(seed, counter + 1).v[0], a.v[0]);
}

TEST(Philox, UniformFloatIsWordOfTheStream) {
  const uint64_t seed = 42;
  for (uint64_t offset : {0ull, 1ull, 3ull, 4ull, 1000001ull, (1ull << 34) + 2}) {
    for (uint64_t i = 0; i < 37; ++i) {
      const uint64_t w = offset + i;
      const float want = uint_to_unit_float(philox_block(seed, w >> 2).v[w & 3]);
      ASSERT_EQ(philox_uniform_float(seed, offset, i), want) << "offset " << offset << " i " << i;
    }
  }
  // Shifting the offset by k shifts the stream by k words.
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(philox_uniform_float(seed, 5, i), philox_uniform_float(seed, 0, i + 5));
}

// The batched generator (vector multiplies) must be the scalar one word for word, across the
// 2^32 carry into the counter's high word and for seeds with both halves set.
TEST(Philox, BatchedBlocksEqualScalarBlocks) {
  uint32_t words[4 * kPhiloxBatch];
  for (const uint64_t seed : {uint64_t{0}, uint64_t{20211024}, uint64_t{0xDEADBEEF12345678ull}}) {
    for (const uint64_t first : {uint64_t{0}, uint64_t{12345}, (uint64_t{1} << 32) - 5, uint64_t{0x123456789ABCull}}) {
      philox_blocks(seed, first, words);
      for (int j = 0; j < kPhiloxBatch; ++j) {
        const Philox4x32 b = philox_block(seed, first + static_cast<uint64_t>(j));
        for (int w = 0; w < 4; ++w) ASSERT_EQ(words[4 * j + w], b.v[w]) << "seed " << seed << " block " << first + j;
      }
    }
  }
}

TEST(Philox, UnitConversionsStayInHalfOpenInterval) {
  EXPECT_EQ(uint_to_unit_float(0u), 0.0f);
  EXPECT_EQ(uint_to_unit_float(0xffffffffu), 1.0f - 1.0f / 16777216.0f);
  EXPECT_LT(uint_to_unit_float(0xffffffffu), 1.0f);
  // Only the top 24 bits matter, so every value is exactly representable.
  EXPECT_EQ(uint_to_unit_float(0x000000ffu), 0.0f);
  EXPECT_EQ(uint_to_unit_float(0x00000100u), 1.0f / 16777216.0f);
  EXPECT_EQ(uints_to_unit_double(0u, 0u), 0.0);
  EXPECT_LT(uints_to_unit_double(0xffffffffu, 0xffffffffu), 1.0);
  EXPECT_EQ(uints_to_unit_double(0xffffffffu, 0xffffffffu), 1.0 - 1.0 / 9007199254740992.0);
  EXPECT_GT(uints_to_unit_double(0u, 0x800u), 0.0);  // the low word contributes
}

// ---- Generator ----------------------------------------------------------------------------------

TEST(Generator, SameSeedSameSequenceDifferentSeedDifferent) {
  Generator a(1234), b(1234), c(1235);
  std::vector<double> va, vb, vc;
  for (int i = 0; i < 100; ++i) {
    va.push_back(a.uniform_double());
    vb.push_back(b.uniform_double());
    vc.push_back(c.uniform_double());
  }
  EXPECT_EQ(va, vb);
  int same = 0;
  for (int i = 0; i < 100; ++i) same += va[i] == vc[i];
  EXPECT_EQ(same, 0);
}

TEST(Generator, ManualSeedRestartsAndSetStateResumes) {
  Generator g(7);
  std::vector<float> first;
  for (int i = 0; i < 10; ++i) first.push_back(g.uniform_float());
  const uint64_t mid_offset = g.offset();
  std::vector<float> rest;
  for (int i = 0; i < 10; ++i) rest.push_back(g.uniform_float());

  g.manual_seed(7);
  EXPECT_EQ(g.offset(), 0u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(g.uniform_float(), first[i]) << i;

  // A checkpoint stores (seed, offset); restoring it continues the stream exactly.
  Generator resumed(999);
  resumed.set_state(7, mid_offset);
  EXPECT_EQ(resumed.seed(), 7u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(resumed.uniform_float(), rest[i]) << i;
}

TEST(Generator, ReserveRoundsUpToWholeBlocks) {
  Generator g(3);
  EXPECT_EQ(g.offset(), 0u);
  EXPECT_EQ(g.reserve(1), 0u);
  EXPECT_EQ(g.offset(), 4u);
  EXPECT_EQ(g.reserve(5), 4u);
  EXPECT_EQ(g.offset(), 12u);
  EXPECT_EQ(g.reserve(4), 12u);
  EXPECT_EQ(g.offset(), 16u);
  EXPECT_EQ(g.reserve(0), 16u);
  EXPECT_EQ(g.offset(), 16u);
  const uint64_t big = (1ull << 33) + 1;
  EXPECT_EQ(g.reserve(big), 16u);
  EXPECT_EQ(g.offset(), 16u + (1ull << 33) + 4);
  // Each scalar draw consumes one block, so successive draws never share words.
  g.manual_seed(3);
  g.uniform_float();
  EXPECT_EQ(g.offset(), 4u);
  g.uniform_double();
  EXPECT_EQ(g.offset(), 8u);
  g.normal();
  EXPECT_EQ(g.offset(), 16u);
}

// Two reservations in sequence give disjoint word ranges: the dropout masks of consecutive layers
// are independent, and the mask of a tensor does not depend on how it is split across threads.
TEST(Generator, ReservedRangesDoNotOverlap) {
  Generator g(11);
  const uint64_t n1 = 10, n2 = 7;
  const uint64_t o1 = g.reserve(n1), o2 = g.reserve(n2);
  EXPECT_GE(o2, o1 + n1);
  std::set<float> a;
  for (uint64_t i = 0; i < n1; ++i) a.insert(philox_uniform_float(g.seed(), o1, i));
  for (uint64_t i = 0; i < n2; ++i) EXPECT_EQ(a.count(philox_uniform_float(g.seed(), o2, i)), 0u) << i;
}

TEST(Generator, DefaultGeneratorManualSeed) {
  manual_seed(20211024);
  EXPECT_EQ(default_generator().seed(), 20211024u);
  EXPECT_EQ(default_generator().offset(), 0u);
  const float a = default_generator().uniform_float();
  manual_seed(20211024);
  EXPECT_EQ(default_generator().uniform_float(), a);
  manual_seed(0);
}

// ---- statistics ---------------------------------------------------------------------------------
// Bounds are about 5 standard errors of each estimator for N draws, so a correct generator fails
// with probability < 1e-5 (and the draws are deterministic anyway), while an off-by-a-bit
// conversion or a lane that repeats is far outside them.

constexpr int kN = 200000;

struct Moments {
  double mean = 0, var = 0;
};

Moments moments(const std::vector<double>& v) {
  Moments m;
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  for (double x : v) m.var += (x - m.mean) * (x - m.mean);
  m.var /= static_cast<double>(v.size() - 1);
  return m;
}

// Pearson chi-square of `bins` equal-width bins on [0, 1).
double chi_square(const std::vector<double>& v, int bins) {
  std::vector<int64_t> count(bins, 0);
  for (double x : v) ++count[static_cast<int>(x * bins)];
  const double expected = static_cast<double>(v.size()) / bins;
  double chi2 = 0;
  for (int64_t c : count) chi2 += (c - expected) * (c - expected) / expected;
  return chi2;
}

void check_uniform(const std::vector<double>& v, const char* what) {
  for (double x : v) {
    ASSERT_GE(x, 0.0) << what;
    ASSERT_LT(x, 1.0) << what;
  }
  const Moments m = moments(v);
  // se(mean) = sqrt(1/12/N) ~ 6.5e-4; se(var) = sqrt((1/80 - 1/144)/N) ~ 1.7e-4.
  EXPECT_NEAR(m.mean, 0.5, 0.0035) << what;
  EXPECT_NEAR(m.var, 1.0 / 12.0, 0.0009) << what;
  // 32 bins: 31 degrees of freedom; P(chi2 > 75) ~ 1e-5.
  EXPECT_LT(chi_square(v, 32), 75.0) << what;
  // Lag-1 correlation of successive draws ~ N(0, 1/N).
  double c = 0;
  for (size_t i = 1; i < v.size(); ++i) c += (v[i] - m.mean) * (v[i - 1] - m.mean);
  c /= static_cast<double>(v.size() - 1) * m.var;
  EXPECT_LT(std::fabs(c), 5.0 / std::sqrt(static_cast<double>(kN))) << what;
}

TEST(Generator, UniformFloatStatistics) {
  Generator g(20211024);
  std::vector<double> v(kN);
  for (double& x : v) x = g.uniform_float();
  check_uniform(v, "uniform_float");
}

TEST(Generator, UniformDoubleStatistics) {
  Generator g(99);
  std::vector<double> v(kN);
  for (double& x : v) x = g.uniform_double();
  check_uniform(v, "uniform_double");
}

// The stream a dropout mask reads: all four words of each block, consecutively.
TEST(Philox, StreamStatisticsAllLanes) {
  std::vector<double> v(kN);
  for (int i = 0; i < kN; ++i) v[i] = philox_uniform_float(5, 12, static_cast<uint64_t>(i));
  check_uniform(v, "philox_uniform_float stream");
  // Each lane on its own is uniform too (a broken lane would hide in the pooled mean).
  for (int lane = 0; lane < 4; ++lane) {
    std::vector<double> l;
    for (int i = lane; i < kN; i += 4) l.push_back(v[i]);
    EXPECT_NEAR(moments(l).mean, 0.5, 5 * std::sqrt(1.0 / 12.0 / l.size())) << "lane " << lane;
  }
  // Keep-fraction of a dropout mask with p = 0.2.
  int64_t kept = 0;
  for (double x : v) kept += x >= 0.2f;
  EXPECT_NEAR(static_cast<double>(kept) / kN, 0.8, 5 * std::sqrt(0.16 / kN));
}

TEST(Generator, NormalStatistics) {
  Generator g(7);
  std::vector<double> v(kN);
  for (double& x : v) x = g.normal();
  const Moments m = moments(v);
  // se(mean) = 1/sqrt(N) ~ 2.2e-3; se(std) ~ 1/sqrt(2N) ~ 1.6e-3.
  EXPECT_NEAR(m.mean, 0.0, 0.011);
  EXPECT_NEAR(std::sqrt(m.var), 1.0, 0.008);
  // Shape, not just two moments: P(|z| < 1) = 0.682689, P(|z| < 2) = 0.954500.
  int64_t in1 = 0, in2 = 0;
  double m3 = 0, m4 = 0;
  for (double x : v) {
    in1 += std::fabs(x) < 1.0;
    in2 += std::fabs(x) < 2.0;
    const double z = x - m.mean;
    m3 += z * z * z;
    m4 += z * z * z * z;
  }
  EXPECT_NEAR(static_cast<double>(in1) / kN, 0.682689, 5 * std::sqrt(0.682689 * 0.317311 / kN));
  EXPECT_NEAR(static_cast<double>(in2) / kN, 0.954500, 5 * std::sqrt(0.9545 * 0.0455 / kN));
  // Skewness 0 (se sqrt(6/N) ~ 5.5e-3), kurtosis 3 (se sqrt(24/N) ~ 1.1e-2).
  EXPECT_NEAR(m3 / kN / std::pow(m.var, 1.5), 0.0, 0.03);
  EXPECT_NEAR(m4 / kN / (m.var * m.var), 3.0, 0.06);
  for (double x : v) ASSERT_TRUE(std::isfinite(x));
}

}  // namespace
