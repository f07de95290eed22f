#pragma once
// Tensor files that other tools read: NumPy .npy (v1.0/2.0, little-endian, C or Fortran order on
// read; C order on write) and safetensors (u64 little-endian header length, JSON header with
// dtype/shape/data_offsets per name and optional "__metadata__", then raw little-endian data).
// Supported dtypes: float32 (F32 / <f4), float64 (F64 / <f8), int64 (I64 / <i8).
// Every error names the file and what was wrong with it.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace hmer {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

void save_npy(const std::string& path, const Tensor& t);
Tensor load_npy(const std::string& path);

// Writes atomically (to path + ".tmp", then rename), so a crash never leaves a torn file.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Tensors in file order (by data offset).
NamedTensors load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

}  // namespace hmer
