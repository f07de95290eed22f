#pragma once
#include "core/tensor.h"

namespace hmer::cpu {

// out[r] = sum_c x[r, c]; x (R, C) contiguous, out (R). Accumulates in double for float32.
void sum_rows(const Tensor& x, const Tensor& out);
// values[r] = max_c x[r, c], indices[r] = first argmax; x (R, C) contiguous.
void max_rows(const Tensor& x, const Tensor& values, const Tensor& indices);
// gx (R, C) = 0 except gx[r, indices[r]] = g[r].
void max_rows_backward(const Tensor& g, const Tensor& indices, const Tensor& gx);

}  // namespace hmer::cpu
