#pragma once
// Device dispatch: every op picks its backend here and nowhere else.
//
//   HMER_DISPATCH_DEVICE("conv2d", x.device(),
//       cpu::conv2d_forward(...),          // CPU
//       cuda::conv2d_forward(...));        // CUDA (only compiled with HMER_WITH_CUDA)
//
// An op with no CUDA kernel yet passes HMER_NO_CUDA as the CUDA branch, which raises an error
// naming the op, so a missing kernel is a clear message rather than a silent CPU fallback.
#include "core/device.h"
#include "core/error.h"
#include "core/profiler.h"

namespace hmer::detail {
[[noreturn]] inline void no_cuda_build(const char* op) {
  fail(op, ": tensor is on CUDA but hmer was built without CUDA (configure with -DHMER_CUDA=ON)");
}
[[noreturn]] inline void no_cuda_kernel(const char* op) {
  fail(op, ": no CUDA kernel yet; move the tensors to the CPU with .to(Device::cpu())");
}
}  // namespace hmer::detail

#define HMER_NO_CUDA ::hmer::detail::no_cuda_kernel(hmer_dispatch_op_)

#ifdef HMER_WITH_CUDA
#define HMER_DISPATCH_DEVICE(op, device, cpu_stmt, cuda_stmt) \
  do {                                                       \
    [[maybe_unused]] const char* hmer_dispatch_op_ = op;     \
    ::hmer::profiler::Scope hmer_profile_scope_(op);         \
    if ((device).is_cpu()) {                                 \
      cpu_stmt;                                              \
    } else {                                                 \
      cuda_stmt;                                             \
    }                                                        \
  } while (0)
#else
#define HMER_DISPATCH_DEVICE(op, device, cpu_stmt, cuda_stmt) \
  do {                                                       \
    [[maybe_unused]] const char* hmer_dispatch_op_ = op;     \
    ::hmer::profiler::Scope hmer_profile_scope_(op);         \
    if ((device).is_cpu()) {                                 \
      cpu_stmt;                                              \
    } else {                                                 \
      ::hmer::detail::no_cuda_build(op);                     \
    }                                                        \
  } while (0)
#endif
