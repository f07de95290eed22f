// The seam to cuDNN: handle creation and the library version. Convolution and batch-norm kernels
// that call cuDNN get their handle from here, so there is one place that owns cuDNN's lifetime.
#include <mutex>

#include "core/error.h"
#include "kernels/cuda/runtime.h"

namespace hmer::cuda {

namespace {
constexpr int kMaxDevices = 64;
}  // namespace

int cudnn_version() {
  // The loaded library's version, not the header's: they differ when a newer libcudnn is installed
  // next to older headers, and that is what a bug report needs.
  return static_cast<int>(cudnnGetVersion());
}

cudnnHandle_t cudnn_handle() {
  static std::mutex mu;
  static cudnnHandle_t handles[kMaxDevices] = {};
  int d = 0;
  HMER_CUDA_CHECK(cudaGetDevice(&d));
  HMER_CHECK(d >= 0 && d < kMaxDevices, "cuDNN: device index ", d, " exceeds the supported ", kMaxDevices);
  std::lock_guard<std::mutex> lock(mu);
  if (handles[d] == nullptr) {
    HMER_CHECK(cudnnGetVersion() / 10000 == CUDNN_MAJOR, "cuDNN: hmer was compiled against cuDNN ", CUDNN_MAJOR,
               ".x headers but the loaded library is ", cudnnGetVersion());
    // Never destroyed: destroying after the CUDA context is gone at exit crashes.
    HMER_CUDNN_CHECK(cudnnCreate(&handles[d]));
    // Legacy default stream, like every hmer kernel, so cuDNN calls are ordered with them.
    HMER_CUDNN_CHECK(cudnnSetStream(handles[d], nullptr));
  }
  return handles[d];
}

}  // namespace hmer::cuda
