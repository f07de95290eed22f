#pragma once
// hmer's own float32 GEMM for x86-64 CPUs with AVX-512F (docs/performance.md says why: on this
// machine Eigen's GEMM reaches about 60% of the FMA peak, OpenBLAS's no more on CAN's shapes).
// The kernel is compiled for AVX-512 whatever the build flags and chosen at run time, so the
// portable build uses it on CPUs that have it and falls back on Eigen elsewhere.
#include <cstdint>

namespace hmer::cpu {

// Whether this CPU can run sgemm (AVX-512F, checked once), and the switch benchmarks and tests
// use to compare it with the Eigen path (on by default).
bool sgemm_available();
void set_sgemm_enabled(bool enabled);
bool sgemm_enabled();

// c (M, N) = [c +] A · B, where element (i, k) of A is a[i·a_rs + k·a_cs], element (k, j) of B is
// b[k·b_rs + j·b_cs] (so a transposed operand is just other strides) and c is row-major with row
// length ldc. Every element of c is the same sequence of float operations whatever the thread
// count: threads split the rows of c, never the sum over k. Runs on the OpenMP threads when called
// outside a parallel region and the product is large enough, else on the calling thread.
// Requires sgemm_available().
void sgemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
           int64_t b_cs, float* c, int64_t ldc, bool accumulate);

}  // namespace hmer::cpu
