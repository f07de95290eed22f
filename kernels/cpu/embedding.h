#pragma once
// CPU embedding lookup (row gather) and its backward (row scatter-add).
#include <cstdint>

#include "core/tensor.h"

namespace hmer::cpu {

// out (n, dim) = weight[indices[k]] for the n = indices.numel() flattened indices. weight
// (num, dim) contiguous floating; indices contiguous int64. Fails naming the first index outside
// [0, num) and its position.
void embedding_forward(const Tensor& weight, const Tensor& indices, const Tensor& out);

// gw (num, dim) = Σ_k [indices[k] == row]·g[k] over rows ≠ padding_idx (pass −1 for none); the
// padding row stays zero. g (n, dim) contiguous. Threads split the dim axis and each adds the
// indices in order, so the sums are race-free and bitwise deterministic (the same order as torch).
void embedding_backward(const Tensor& g, const Tensor& indices, int64_t padding_idx, const Tensor& gw);

}  // namespace hmer::cpu
