// hmer's AVX-512 sgemm (kernels/cpu/sgemm.h) against a long-double evaluation of the same product:
// every operand layout, sizes around its register tile (12 x 32) and its blocks (depth 256, 512
// columns, 240 rows), row strides wider than the rows, accumulation, the same bits on 1 and 2
// threads, and the dispatch in gemm_raw / gemm_raw_ld. Skipped on CPUs without AVX-512.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/sgemm.h"

using namespace hmer::cpu;

namespace {

struct Case {
  int64_t M, N, K;
  bool ta = false, tb = false;  // A stored (K, M), B stored (N, K)
  int64_t pad = 0;              // extra floats at the end of every stored row of a, b and c
  bool accumulate = false;
  std::string str() const {
    return std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + (ta ? " A^T" : "") +
           (tb ? " B^T" : "") + " pad " + std::to_string(pad) + (accumulate ? " +=" : "");
  }
};

struct Operands {
  Case c;
  int64_t lda, ldb, ldc;
  std::vector<float> a, b, c0;
  float at(int64_t i, int64_t k) const { return c.ta ? a[k * lda + i] : a[i * lda + k]; }
  float bt(int64_t k, int64_t j) const { return c.tb ? b[j * ldb + k] : b[k * ldb + j]; }
};

constexpr float kSentinel = 12345.0f;

Operands make(const Case& c, std::mt19937& rng) {
  Operands o{c, (c.ta ? c.M : c.K) + c.pad, (c.tb ? c.K : c.N) + c.pad, c.N + c.pad, {}, {}, {}};
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Padding holds NaN in the inputs (a read of it would poison an output) and a sentinel in c.
  auto fill = [&](std::vector<float>& v, int64_t rows, int64_t cols, int64_t ld, float pad_value) {
    v.assign(static_cast<size_t>(std::max<int64_t>(rows * ld, 1)), pad_value);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t q = 0; q < cols; ++q) v[r * ld + q] = u(rng);
  };
  fill(o.a, c.ta ? c.K : c.M, c.ta ? c.M : c.K, o.lda, nan);
  fill(o.b, c.tb ? c.N : c.K, c.tb ? c.K : c.N, o.ldb, nan);
  fill(o.c0, c.M, c.N, o.ldc, kSentinel);
  return o;
}

std::vector<float> run_sgemm(const Operands& o) {
  std::vector<float> out = o.c0;
  const Case& c = o.c;
  sgemm(c.M, c.N, c.K, o.a.data(), c.ta ? 1 : o.lda, c.ta ? o.lda : 1, o.b.data(), c.tb ? 1 : o.ldb,
        c.tb ? o.ldb : 1, out.data(), o.ldc, c.accumulate);
  return out;
}

// Every output within the error bound of any summation order of K float products plus the
// accumulated value, (K + 2)·2^-24·(Σ|a||b| + |c0|), of the long-double sum; padding untouched.
void expect_close_to_exact(const Operands& o, const std::vector<float>& out, const std::string& what) {
  const Case& c = o.c;
  int bad = 0;
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      long double exact = c.accumulate ? o.c0[i * o.ldc + j] : 0.0L;
      long double mag = c.accumulate ? std::fabs(o.c0[i * o.ldc + j]) : 0.0L;
      for (int64_t k = 0; k < c.K; ++k) {
        exact += static_cast<long double>(o.at(i, k)) * o.bt(k, j);
        mag += std::fabs(static_cast<long double>(o.at(i, k)) * o.bt(k, j));
      }
      const long double bound = static_cast<long double>(c.K + 2) * std::ldexp(1.0L, -24) * mag;
      const float got = out[i * o.ldc + j];
      if (!(std::fabs(got - exact) <= bound) && bad++ < 3) {
        ADD_FAILURE() << what << " " << c.str() << ": c(" << i << ", " << j << ") = " << got << ", exact "
                      << static_cast<double>(exact) << ", bound " << static_cast<double>(bound);
      }
    }
    for (int64_t j = c.N; j < o.ldc; ++j) {
      if (out[i * o.ldc + j] != kSentinel && bad++ < 3) {
        ADD_FAILURE() << what << " " << c.str() << ": wrote padding at (" << i << ", " << j << ")";
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << " " << c.str();
}

bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

class Sgemm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!sgemm_available()) GTEST_SKIP() << "this CPU has no AVX-512F: gemm stays on Eigen";
  }
};

}  // namespace

TEST_F(Sgemm, EdgeSizesLayoutsAndAccumulationMatchTheExactProduct) {
  std::mt19937 rng(7);
  const std::vector<int64_t> ms = {1, 11, 12, 13, 25, 37};
  const std::vector<int64_t> ns = {1, 15, 16, 17, 31, 32, 33, 65};
  const std::vector<int64_t> ks = {0, 1, 15, 16, 17, 40};
  int cases = 0;
  for (const int64_t m : ms)
    for (const int64_t n : ns)
      for (const int64_t k : ks) {
        // All four layouts each time; pad and accumulation vary with the case.
        for (int layout = 0; layout < 4; ++layout) {
          Case c{m, n, k, (layout & 1) != 0, (layout & 2) != 0, (m + n + k + layout) % 3 == 0 ? 5 : 0,
                 (m * n + k + layout) % 2 == 0};
          const Operands o = make(c, rng);
          expect_close_to_exact(o, run_sgemm(o), "sgemm");
          ++cases;
        }
      }
  EXPECT_EQ(cases, 6 * 8 * 6 * 4);
}

// Sizes past one block in every direction: depth 256 (sums over several packed blocks), 512 columns,
// 240 rows, with the 16 x 16 transposes of the packing and their tails.
TEST_F(Sgemm, SeveralBlocksInEveryDirection) {
  std::mt19937 rng(11);
  for (const Case& c : {Case{250, 530, 300, false, false, 3, false}, Case{250, 530, 300, true, true, 0, true},
                        Case{130, 520, 513, true, false, 1, false}, Case{61, 700, 270, false, true, 2, true}}) {
    const Operands o = make(c, rng);
    expect_close_to_exact(o, run_sgemm(o), "sgemm");
  }
}

// Threads split rows (or, for few rows, columns) and never a sum: the bits do not depend on the
// thread count.
TEST_F(Sgemm, SameBitsOnOneAndTwoThreads) {
#ifdef _OPENMP
  std::mt19937 rng(13);
  const int saved = omp_get_max_threads();
  for (const Case& c : {Case{250, 210, 400, false, false, 0, false},  // rows split
                        Case{60, 800, 100, false, true, 0, true},     // columns split
                        Case{200, 300, 96, true, false, 4, false}}) {
    const Operands o = make(c, rng);
    omp_set_num_threads(1);
    const std::vector<float> one = run_sgemm(o);
    omp_set_num_threads(2);
    const std::vector<float> two = run_sgemm(o);
    EXPECT_TRUE(same_bits(one, two)) << c.str();
    expect_close_to_exact(o, two, "sgemm, 2 threads");
  }
  omp_set_num_threads(saved);
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

// gemm_raw (with a beta other than 0 and 1) and gemm_raw_ld reach sgemm for float and agree with
// the Eigen path within the bound of either.
TEST_F(Sgemm, GemmRawDispatchAgreesWithEigen) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t M = 40, N = 70, K = 90;
  std::vector<float> a(M * K), b(K * N), c0(M * N);
  for (float& v : a) v = u(rng);
  for (float& v : b) v = u(rng);
  for (float& v : c0) v = u(rng);
  auto with = [&](bool use_sgemm, float beta) {
    set_sgemm_enabled(use_sgemm);
    std::vector<float> out = c0;
    gemm_raw<float>(a.data(), false, b.data(), false, out.data(), M, N, K, beta);
    set_sgemm_enabled(true);
    return out;
  };
  for (const float beta : {0.0f, 1.0f, 0.5f}) {
    const std::vector<float> ours = with(true, beta), eigen = with(false, beta);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double exact = beta * static_cast<double>(c0[i * N + j]), mag = std::fabs(exact);
        for (int64_t k = 0; k < K; ++k) {
          exact += static_cast<double>(a[i * K + k]) * b[k * N + j];
          mag += std::fabs(static_cast<double>(a[i * K + k]) * b[k * N + j]);
        }
        const double bound = (K + 3) * std::ldexp(1.0, -24) * mag;
        ASSERT_LE(std::fabs(ours[i * N + j] - exact), bound) << "beta " << beta << " at " << i << ", " << j;
        ASSERT_LE(std::fabs(eigen[i * N + j] - exact), bound) << "beta " << beta << " at " << i << ", " << j;
      }
    if (beta == 0.0f) {
      EXPECT_FALSE(same_bits(ours, eigen)) << "both paths ran Eigen: the switch did nothing";
    }
  }
  // gemm_raw_ld on a column block of wider matrices (a conv's per-thread column split).
  std::vector<float> out(M * N, kSentinel);
  gemm_raw_ld<float>(a.data(), K, false, b.data() + 10, N, false, out.data() + 10, N, M, 50, K, false);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      if (j < 10 || j >= 60) {
        ASSERT_EQ(out[i * N + j], kSentinel) << i << ", " << j;
        continue;
      }
      double exact = 0.0, mag = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        exact += static_cast<double>(a[i * K + k]) * b[k * N + j];
        mag += std::fabs(static_cast<double>(a[i * K + k]) * b[k * N + j]);
      }
      ASSERT_LE(std::fabs(out[i * N + j] - exact), (K + 2) * std::ldexp(1.0, -24) * mag) << i << ", " << j;
    }
  }
}
