#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

template <class T>
void embedding_forward_impl(const Tensor& weight, const Tensor& indices, const Tensor& out) {
  const int64_t num = weight.size(0), dim = weight.size(1), n = indices.numel();
  const T* wp = weight.data_ptr<T>();
  const int64_t* ip = indices.data_ptr<int64_t>();
  T* op = out.data_ptr<T>();
  // Checked up front, on this thread: an exception must not leave an OpenMP region.
  for (int64_t k = 0; k < n; ++k) {
    HMER_CHECK(ip[k] >= 0 && ip[k] < num, "embedding: index ", ip[k], " at position ", k,
               " is out of range for a weight of ", num, " rows");
  }
  parallel_for(n, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) std::memcpy(op + k * dim, wp + ip[k] * dim, static_cast<size_t>(dim) * sizeof(T));
  });
}
template void embedding_forward_impl<float>(const Tensor&, const Tensor&, const Tensor&);
template void embedding_forward_impl<double>(const Tensor&, const Tensor&, const Tensor&);

template <class T>
void embedding_backward_impl(const Tensor& g, const Tensor& indices, int64_t padding_idx, const Tensor& gw) {
  const int64_t num = gw.size(0), dim = gw.size(1), n = indices.numel();
  const T* gp = g.data_ptr<T>();
  const int64_t* ip = indices.data_ptr<int64_t>();
  T* wp = gw.data_ptr<T>();
  std::fill(wp, wp + num * dim, T(0));
  // Each thread owns a column range of every row, so no two threads touch one element.
  parallel_for(dim, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
    for (int64_t k = 0; k < n; ++k) {
      const int64_t row = ip[k];
      if (row == padding_idx) continue;
      T* dst = wp + row * dim;
      const T* src = gp + k * dim;
      for (int64_t j = b; j < e; ++j) dst[j] += src[j];
    }
  });
}
template void embedding_backward_impl<float>(const Tensor&, const Tensor&, int64_t, const Tensor&);
template void embedding_backward_impl<double>(const Tensor&, const Tensor&, int64_t, const Tensor&);

void embedding_forward(const Tensor& weight, const Tensor& indices, const Tensor& out) {
  HMER_DISPATCH_FLOATING(weight.dtype(), "embedding", [&] { embedding_forward_impl<scalar_t>(weight, indices, out); });
}

void embedding_backward(const Tensor& g, const Tensor& indices, int64_t padding_idx, const Tensor& gw) {
  HMER_DISPATCH_FLOATING(g.dtype(), "embedding_backward", [&] {
    embedding_backward_impl<scalar_t>(g, indices, padding_idx, gw);
  });
}

}  // namespace hmer::cpu
