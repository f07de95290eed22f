#pragma once
// HMER_HD marks functions compiled for both host and device, so element-wise math and the RNG are
// one source of truth for the CPU loops (exercised by the CPU tests) and the CUDA kernels.
#if defined(__CUDACC__)
#define HMER_HD __host__ __device__ __forceinline__
#else
#define HMER_HD inline
#endif
