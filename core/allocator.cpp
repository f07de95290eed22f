#include "core/allocator.h"

#include <cstdlib>
#include <limits>
#include <new>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/error.h"
#include "core/storage.h"
#ifdef HMER_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace hmer {

AllocatorStats CountingAllocator::stats() const {
  AllocatorStats s;
  s.allocated_bytes = allocated_.load();
  s.peak_bytes = peak_.load();
  s.num_allocs = num_allocs_.load();
  return s;
}

void CountingAllocator::reset_peak() { peak_.store(allocated_.load()); }

void CountingAllocator::note_alloc(size_t nbytes) {
  const int64_t now = allocated_.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
  int64_t prev = peak_.load();
  while (now > prev && !peak_.compare_exchange_weak(prev, now)) {
  }
  num_allocs_.fetch_add(1);
}

void CountingAllocator::note_free(size_t nbytes) { allocated_.fetch_sub(static_cast<int64_t>(nbytes)); }

void* CpuAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) fail("CpuAllocator: out of memory allocating ", nbytes, " bytes");
  note_alloc(nbytes);
  return p;
}

void CpuAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  note_free(nbytes);
}

bool keep_freed_host_memory() {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
#else
  return false;
#endif
}

namespace {
CpuAllocator& default_cpu_allocator() {
  static CpuAllocator a;
  return a;
}
Allocator* g_allocators[2] = {&default_cpu_allocator(), nullptr};
}  // namespace

Allocator* get_allocator(Device device) {
#ifdef HMER_WITH_CUDA
  // The CUDA backend registers its allocator on first use, and only when a device exists.
  if (device.is_cuda()) cuda::ensure_initialized();
#endif
  Allocator* a = g_allocators[static_cast<int>(device.type)];
  if (a == nullptr) {
    fail("no allocator for device ", device.str(),
         cuda_is_compiled() ? " (no CUDA device is available)" : " (hmer was built without CUDA: configure with -DHMER_CUDA=ON)");
  }
  return a;
}

Allocator* set_allocator(DeviceType type, Allocator* allocator) {
  Allocator* prev = g_allocators[static_cast<int>(type)];
  g_allocators[static_cast<int>(type)] = allocator;
  return prev;
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  allocator_ = get_allocator(device);
  data_ = allocator_->allocate(nbytes);
}

Storage::~Storage() { allocator_->deallocate(data_, nbytes_); }

}  // namespace hmer
