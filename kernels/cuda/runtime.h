#pragma once
// CUDA runtime glue: error checks that name the failing call and its file:line, device discovery
// that reports 0 devices (never throws) on a machine without a GPU or driver, the device allocator,
// and the per-device cuBLAS / cuDNN handles. Included by host code (g++) and by .cu files (nvcc).
#include <cstddef>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "core/allocator.h"

namespace hmer::cuda {

namespace detail {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file, int line);
}  // namespace detail

// Number of usable CUDA devices; 0 when there is no device, no driver, or the driver is older than
// the runtime. The first call probes the driver and registers the CUDA allocator when a device exists.
int device_count();

// Idempotent and thread-safe: probes the devices once and, if there is at least one, registers
// CudaAllocator for DeviceType::CUDA with set_allocator. get_allocator(Device::cuda()) should call
// this before looking up its table so the first CUDA tensor works without an explicit init call.
void ensure_initialized();

// Plain cudaMalloc / cudaFree with live/peak accounting; no caching (a caching allocator can replace
// it later through set_allocator without touching Tensor). Allocates on the current device.
class CudaAllocator : public CountingAllocator {
 public:
  void* allocate(size_t nbytes) override;
  // Never throws: it runs from Storage's destructor. Errors other than the runtime already being
  // torn down at process exit are reported on stderr.
  void deallocate(void* ptr, size_t nbytes) override;
};

// Makes `index` the current device for the lifetime of the guard (restores the previous one).
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// Lazily created handles for the current device, bound to the default stream.
cublasHandle_t cublas_handle();
cudnnHandle_t cudnn_handle();
// cuDNN library version (e.g. 90100 for 9.1.0) as reported by the loaded library; needs no device.
int cudnn_version();
// CUDA runtime version (e.g. 13000); needs no device.
int runtime_version();

}  // namespace hmer::cuda

// Each macro evaluates its argument once and throws hmer::Error naming the expression, the error
// string and the call site.
#define HMER_CUDA_CHECK(expr)                                                              \
  do {                                                                                     \
    const cudaError_t hmer_cuda_err_ = (expr);                                             \
    if (hmer_cuda_err_ != cudaSuccess)                                                     \
      ::hmer::cuda::detail::throw_cuda_error(hmer_cuda_err_, #expr, __FILE__, __LINE__);   \
  } while (0)

// After a <<<...>>> launch: reports bad launch configurations (asynchronous faults surface at the
// next synchronising call).
#define HMER_CUDA_CHECK_LAUNCH() HMER_CUDA_CHECK(cudaGetLastError())

#define HMER_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                           \
    const cublasStatus_t hmer_cublas_status_ = (expr);                                           \
    if (hmer_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::hmer::cuda::detail::throw_cublas_error(hmer_cublas_status_, #expr, __FILE__, __LINE__);  \
  } while (0)

#define HMER_CUDNN_CHECK(expr)                                                                 \
  do {                                                                                         \
    const cudnnStatus_t hmer_cudnn_status_ = (expr);                                           \
    if (hmer_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                            \
      ::hmer::cuda::detail::throw_cudnn_error(hmer_cudnn_status_, #expr, __FILE__, __LINE__);  \
  } while (0)
