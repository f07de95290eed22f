#pragma once
// Storage memory comes from a pluggable Allocator per device so that a caching allocator
// (or a test allocator that counts and poisons) can be swapped in without touching Tensor.
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace hmer {

struct AllocatorStats {
  int64_t allocated_bytes = 0;  // live bytes handed out
  int64_t peak_bytes = 0;       // high-water mark of allocated_bytes
  int64_t num_allocs = 0;       // calls to allocate()
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
};

// Counts live/peak bytes with atomics; subclasses call note_alloc/note_free.
class CountingAllocator : public Allocator {
 public:
  AllocatorStats stats() const override;
  void reset_peak() override;

 protected:
  void note_alloc(size_t nbytes);
  void note_free(size_t nbytes);

 private:
  std::atomic<int64_t> allocated_{0};
  std::atomic<int64_t> peak_{0};
  std::atomic<int64_t> num_allocs_{0};
};

// 64-byte aligned host memory (one cache line / one AVX-512 register).
class CpuAllocator : public CountingAllocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
};

// Makes glibc's malloc keep the host memory hmer frees for its next allocations instead of handing
// it back to the kernel: no mmap for large blocks (M_MMAP_MAX 0), no trimming of the heap top
// (M_TRIM_THRESHOLD at its maximum). A training step frees and re-allocates the same large tensors
// every step; given back, each comes back as fresh pages, and on this machine (a VM) faulting them
// in again made CAN's 200 x 800 step 7.4 to 12 s instead of a steady 7.4 (docs/performance.md).
// The CLI calls it at start-up; peak RSS stays the high-water mark of live memory plus the heap's
// fragmentation. Returns false when malloc refused a setting (not glibc).
bool keep_freed_host_memory();

// The allocator used for new storages on `device`. CUDA's is registered by the CUDA backend.
Allocator* get_allocator(Device device);
// Replaces the allocator for a device type (returns the previous one). Not thread-safe against
// concurrent allocation: call at start-up or in tests.
Allocator* set_allocator(DeviceType type, Allocator* allocator);

}  // namespace hmer
