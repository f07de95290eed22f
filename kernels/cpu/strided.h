#pragma once
// Walks the elements of a strided view in row-major order from a given linear position,
// advancing the byte-free element offset incrementally (no divmod per element).
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace hmer::cpu {

class StridedCursor {
 public:
  StridedCursor(const Shape& shape, const Shape& strides, int64_t start)
      : shape_(shape), strides_(strides), index_(shape.size(), 0) {
    int64_t rem = start;
    for (int64_t d = static_cast<int64_t>(shape_.size()) - 1; d >= 0; --d) {
      const int64_t s = shape_[d] == 0 ? 1 : shape_[d];
      index_[d] = rem % s;
      rem /= s;
      offset_ += index_[d] * strides_[d];
    }
  }
  int64_t offset() const { return offset_; }
  void next() {
    for (int64_t d = static_cast<int64_t>(shape_.size()) - 1; d >= 0; --d) {
      if (++index_[d] < shape_[d]) {
        offset_ += strides_[d];
        return;
      }
      offset_ -= (shape_[d] - 1) * strides_[d];
      index_[d] = 0;
    }
  }

 private:
  const Shape& shape_;
  const Shape& strides_;
  std::vector<int64_t> index_;
  int64_t offset_ = 0;
};

}  // namespace hmer::cpu
