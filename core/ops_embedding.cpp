// embedding: row gather forward, deterministic row scatter-add backward.
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/embedding.h"

namespace hmer {

Tensor embedding(const Tensor& weight_in, const Tensor& indices_in, std::optional<int64_t> padding_idx) {
  HMER_CHECK(weight_in.defined() && indices_in.defined(), "embedding: undefined weight or indices");
  HMER_CHECK(is_floating(weight_in.dtype()), "embedding: weight must be floating, got ", weight_in.str());
  HMER_CHECK(weight_in.dim() == 2, "embedding: weight must be (num_embeddings, dim), got ",
             shape_str(weight_in.shape()));
  HMER_CHECK(indices_in.dtype() == DType::Int64, "embedding: indices must be int64, got ", indices_in.str());
  check_same_device("embedding", {&weight_in, &indices_in});
  const int64_t num = weight_in.size(0), dim = weight_in.size(1);
  int64_t pad = -1;  // no padding row
  if (padding_idx.has_value()) {
    const int64_t p = *padding_idx;
    HMER_CHECK(p >= -num && p < num, "embedding: padding_idx ", p, " must be within [", -num, ", ", num,
               ") for a weight of ", num, " rows");
    pad = p < 0 ? p + num : p;  // torch wraps a negative padding_idx
  }
  Tensor weight = weight_in.detach().contiguous();
  Tensor indices = contiguous_copy(indices_in.detach());  // own copy: the backward re-reads it
  const int64_t n = indices.numel();
  Tensor out = Tensor::empty({n, dim}, weight.dtype(), weight.device());
  HMER_DISPATCH_DEVICE("embedding", weight.device(), cpu::embedding_forward(weight, indices, out), HMER_NO_CUDA);
  Shape out_shape = indices.shape();
  out_shape.push_back(dim);
  out = out.reshape(out_shape);
  return record_fn(out, "EmbeddingBackward", {weight_in}, [indices, num, dim, n, pad](const Tensor& g_in) {
    Tensor g = g_in.contiguous().reshape({n, dim});
    Tensor gw = Tensor::empty({num, dim}, g.dtype(), g.device());
    HMER_DISPATCH_DEVICE("embedding_backward", g.device(), cpu::embedding_backward(g, indices, pad, gw),
                         HMER_NO_CUDA);
    return std::vector<Tensor>{gw};
  });
}

}  // namespace hmer
