#pragma once
#include <cstddef>
#include <memory>

#include "core/allocator.h"
#include "core/device.h"

namespace hmer {

// A flat byte buffer on one device. Tensors are views (shape, strides, offset) into a Storage,
// and several tensors may share one.
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

}  // namespace hmer
