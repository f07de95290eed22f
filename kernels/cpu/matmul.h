#pragma once
#include "core/tensor.h"

namespace hmer::cpu {

// out (M, N) = op(a) · op(b) + beta · out, op(t) = t or tᵀ. a, b, out are contiguous 2-D tensors
// of one floating dtype (a stored as (M, K) or, with trans_a, (K, M); likewise b). float products
// of at least 12 rows run on hmer's sgemm (kernels/cpu/sgemm.h) where the CPU has AVX-512, the rest
// on Eigen's GEMM; both split across the OpenMP threads for large products.
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& out, double beta = 0.0);

// Raw-pointer form for kernels that run GEMMs on slices of larger buffers (conv2d's im2col).
template <class T>
void gemm_raw(const T* a, bool trans_a, const T* b, bool trans_b, T* out, int64_t M, int64_t N, int64_t K, T beta);

// The same on blocks of wider row-major matrices: lda, ldb, ldc are the stored row lengths of a, b
// and out (e.g. a column block of a conv's (C, H*W) input); accumulate adds to out (beta 1) instead
// of overwriting it. For callers that split the work across threads themselves: inside an OpenMP
// parallel region it runs on the calling thread.
template <class T>
void gemm_raw_ld(const T* a, int64_t lda, bool trans_a, const T* b, int64_t ldb, bool trans_b, T* out, int64_t ldc,
                 int64_t M, int64_t N, int64_t K, bool accumulate);

}  // namespace hmer::cpu
