#include "kernels/cpu/matmul.h"

#include <Eigen/Core>

#include <type_traits>

#include "kernels/cpu/sgemm.h"

namespace hmer::cpu {

namespace {

// float products with at least one whole register tile of rows go to hmer's own GEMM on CPUs with
// AVX-512 (from par to 1.7x Eigen's on CAN's shapes here); smaller ones and double stay with Eigen.
template <class T>
bool use_sgemm(int64_t M, int64_t N, int64_t K) {
  return std::is_same_v<T, float> && M >= 12 && N >= 16 && M * N * K >= (int64_t{1} << 15) && sgemm_enabled() &&
         sgemm_available();
}

}  // namespace

template <class T>
void gemm_raw(const T* a, bool trans_a, const T* b, bool trans_b, T* out, int64_t M, int64_t N, int64_t K, T beta) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat>;
  Eigen::Map<Mat> C(out, M, N);
  if constexpr (std::is_same_v<T, float>) {
    if (use_sgemm<T>(M, N, K)) {
      if (beta != T(0) && beta != T(1)) C *= beta;
      // Stored shapes as below: a (M, K) or (K, M), b (K, N) or (N, K).
      sgemm(M, N, K, a, trans_a ? 1 : K, trans_a ? M : 1, b, trans_b ? 1 : N, trans_b ? K : 1, out, N, beta != T(0));
      return;
    }
  }
  // Stored shapes: a is (M, K) or (K, M) when transposed; b is (K, N) or (N, K).
  CMap A(a, trans_a ? K : M, trans_a ? M : K);
  CMap B(b, trans_b ? N : K, trans_b ? K : N);
  if (beta == T(0)) {
    if (!trans_a && !trans_b) C.noalias() = A * B;
    else if (trans_a && !trans_b) C.noalias() = A.transpose() * B;
    else if (!trans_a && trans_b) C.noalias() = A * B.transpose();
    else C.noalias() = A.transpose() * B.transpose();
  } else {
    if (beta != T(1)) C *= beta;
    if (!trans_a && !trans_b) C.noalias() += A * B;
    else if (trans_a && !trans_b) C.noalias() += A.transpose() * B;
    else if (!trans_a && trans_b) C.noalias() += A * B.transpose();
    else C.noalias() += A.transpose() * B.transpose();
  }
}
template <class T>
void gemm_raw_ld(const T* a, int64_t lda, bool trans_a, const T* b, int64_t ldb, bool trans_b, T* out, int64_t ldc,
                 int64_t M, int64_t N, int64_t K, bool accumulate) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  if constexpr (std::is_same_v<T, float>) {
    if (use_sgemm<T>(M, N, K)) {
      sgemm(M, N, K, a, trans_a ? 1 : lda, trans_a ? lda : 1, b, trans_b ? 1 : ldb, trans_b ? ldb : 1, out, ldc,
            accumulate);
      return;
    }
  }
  using Stride = Eigen::OuterStride<>;
  using CMap = Eigen::Map<const Mat, 0, Stride>;
  Eigen::Map<Mat, 0, Stride> C(out, M, N, Stride(ldc));
  CMap A(a, trans_a ? K : M, trans_a ? M : K, Stride(lda));
  CMap B(b, trans_b ? N : K, trans_b ? K : N, Stride(ldb));
  if (accumulate) {
    if (!trans_a && !trans_b) C.noalias() += A * B;
    else if (trans_a && !trans_b) C.noalias() += A.transpose() * B;
    else if (!trans_a && trans_b) C.noalias() += A * B.transpose();
    else C.noalias() += A.transpose() * B.transpose();
  } else {
    if (!trans_a && !trans_b) C.noalias() = A * B;
    else if (trans_a && !trans_b) C.noalias() = A.transpose() * B;
    else if (!trans_a && trans_b) C.noalias() = A * B.transpose();
    else C.noalias() = A.transpose() * B.transpose();
  }
}
template void gemm_raw_ld<float>(const float*, int64_t, bool, const float*, int64_t, bool, float*, int64_t, int64_t,
                                 int64_t, int64_t, bool);
template void gemm_raw_ld<double>(const double*, int64_t, bool, const double*, int64_t, bool, double*, int64_t,
                                  int64_t, int64_t, int64_t, bool);

template void gemm_raw<float>(const float*, bool, const float*, bool, float*, int64_t, int64_t, int64_t, float);
template void gemm_raw<double>(const double*, bool, const double*, bool, double*, int64_t, int64_t, int64_t, double);

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& out, double beta) {
  const int64_t M = out.size(0), N = out.size(1);
  const int64_t K = trans_a ? a.size(0) : a.size(1);
  HMER_DISPATCH_FLOATING(out.dtype(), "matmul", [&] {
    gemm_raw<scalar_t>(a.data_ptr<scalar_t>(), trans_a, b.data_ptr<scalar_t>(), trans_b, out.data_ptr<scalar_t>(), M,
                       N, K, static_cast<scalar_t>(beta));
  });
}

}  // namespace hmer::cpu
