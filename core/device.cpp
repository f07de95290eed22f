#include "core/device.h"

#ifdef HMER_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace hmer {

bool cuda_is_compiled() {
#ifdef HMER_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_is_available() {
#ifdef HMER_WITH_CUDA
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

}  // namespace hmer
