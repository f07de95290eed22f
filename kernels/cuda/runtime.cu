#include "kernels/cuda/runtime.h"

#include <cstdio>
#include <mutex>
#include <string>

#include "core/error.h"

namespace hmer::cuda {

namespace detail {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  fail("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") from ", expr, " at ", file, ":",
       line);
}

[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  fail("cuBLAS error ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ") from ", expr, " at ",
       file, ":", line);
}

[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file, int line) {
  fail("cuDNN error ", cudnnGetErrorString(status), " (status ", static_cast<int>(status), ") from ", expr, " at ",
       file, ":", line);
}

}  // namespace detail

namespace {

// Probed once: cudaGetDeviceCount fails (cudaErrorNoDevice, cudaErrorInsufficientDriver, ...) on a
// machine without a usable GPU, which is a normal situation for a CPU build host, not an error.
int probed_device_count() {
  static const int n = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear it so the next checked call does not report it
      return 0;
    }
    return count;
  }();
  return n;
}

// More devices than this is not a configuration hmer targets; the handle tables are fixed-size.
constexpr int kMaxDevices = 64;

int current_device() {
  int d = 0;
  HMER_CUDA_CHECK(cudaGetDevice(&d));
  HMER_CHECK(d >= 0 && d < kMaxDevices, "CUDA: device index ", d, " exceeds the supported ", kMaxDevices);
  return d;
}

}  // namespace

void ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (probed_device_count() == 0) return;
    // Leaked on purpose: storages released during static destruction must still find it.
    auto* allocator = new CudaAllocator();
    Allocator* prev = set_allocator(DeviceType::CUDA, allocator);
    // Keep an allocator installed before the first probe (a test's counting or poisoning one).
    if (prev != nullptr) set_allocator(DeviceType::CUDA, prev);
  });
}

int device_count() {
  ensure_initialized();
  return probed_device_count();
}

int runtime_version() {
  int v = 0;
  HMER_CUDA_CHECK(cudaRuntimeGetVersion(&v));
  return v;
}

// ---- allocator --------------------------------------------------------------------------------

void* CudaAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, nbytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // out-of-memory is not sticky: clear it so later checks stay accurate
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    const AllocatorStats s = stats();
    fail("CudaAllocator: out of memory allocating ", nbytes, " bytes (hmer holds ", s.allocated_bytes,
         " bytes, peak ", s.peak_bytes, "; device reports ", free_b, " free of ", total_b, ")");
  }
  HMER_CUDA_CHECK(err);
  note_alloc(nbytes);
  return p;
}

void CudaAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  const cudaError_t err = cudaFree(ptr);
  note_free(nbytes);
  // At process exit the runtime may be unloaded before the last static tensor dies: harmless.
  if (err != cudaSuccess && err != cudaErrorCudartUnloading) {
    std::fprintf(stderr, "hmer: cudaFree(%p, %zu bytes) failed: %s\n", ptr, nbytes, cudaGetErrorString(err));
    (void)cudaGetLastError();
  }
}

// ---- device guard -----------------------------------------------------------------------------

DeviceGuard::DeviceGuard(int index) {
  int cur = 0;
  HMER_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != index) {
    HMER_CUDA_CHECK(cudaSetDevice(index));
    prev_ = cur;
  }
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0) (void)cudaSetDevice(prev_);
}

// ---- cuBLAS -----------------------------------------------------------------------------------

cublasHandle_t cublas_handle() {
  static std::mutex mu;
  static cublasHandle_t handles[kMaxDevices] = {};
  const int d = current_device();
  std::lock_guard<std::mutex> lock(mu);
  if (handles[d] == nullptr) {
    // Never destroyed: destroying after the CUDA context is gone at exit crashes.
    HMER_CUBLAS_CHECK(cublasCreate(&handles[d]));
    // Bit-reproducible GEMMs: no TF32 tensor-core rounding of float32 inputs.
    HMER_CUBLAS_CHECK(cublasSetMathMode(handles[d], CUBLAS_DEFAULT_MATH));
  }
  return handles[d];
}

}  // namespace hmer::cuda
