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

// A strided traversal cut into contiguous runs: the trailing dims that every view (all of `shape`)
// lays out row-major form one run of `run` elements, and a cursor walks only the `outer` dims in
// front of them. A channel slice of (N, C, H, W), say, is N runs of C'·H·W: the inner loop is then
// a plain vectorisable loop instead of a cursor step per element.
struct ContiguousRuns {
  Shape outer_shape;
  std::vector<Shape> outer_strides;  // one per view, same order as given
  int64_t run = 1;
  int64_t count() const {
    int64_t c = 1;
    for (int64_t v : outer_shape) c *= v;
    return c;
  }
};
inline ContiguousRuns contiguous_runs(const Shape& shape, const std::vector<const Shape*>& strides) {
  ContiguousRuns r;
  int64_t d = static_cast<int64_t>(shape.size());
  while (d > 0) {
    const int64_t size = shape[d - 1];
    bool ok = true;
    for (const Shape* st : strides) ok = ok && (size == 1 || (*st)[d - 1] == r.run);
    if (!ok) break;
    r.run *= size;
    --d;
  }
  r.outer_shape.assign(shape.begin(), shape.begin() + d);
  for (const Shape* st : strides) r.outer_strides.emplace_back(st->begin(), st->begin() + d);
  return r;
}

}  // namespace hmer::cpu
