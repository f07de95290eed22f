#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace hmer {

// float64 exists for finite-difference gradient checks on the CPU; training runs in float32.
enum class DType : uint8_t { Float32, Float64, Int64 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::Int64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
  }
  return "?";
}

inline bool is_floating(DType t) { return t == DType::Float32 || t == DType::Float64; }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };

}  // namespace hmer

// Runs the body with `scalar_t` bound to the C++ type of a floating dtype; anything else is an
// error naming the op, so an int64 tensor handed to conv2d fails loudly instead of reading garbage.
#define HMER_DISPATCH_FLOATING(dtype, op_name, ...)                                        \
  [&] {                                                                                    \
    switch (dtype) {                                                                       \
      case ::hmer::DType::Float32: { using scalar_t = float; return __VA_ARGS__(); }       \
      case ::hmer::DType::Float64: { using scalar_t = double; return __VA_ARGS__(); }      \
      default:                                                                             \
        ::hmer::fail(op_name, ": dtype ", ::hmer::dtype_name(dtype),                      \
                     " is not supported (expected float32 or float64)");                  \
    }                                                                                      \
  }()

#define HMER_DISPATCH_ALL(dtype, op_name, ...)                                             \
  [&] {                                                                                    \
    switch (dtype) {                                                                       \
      case ::hmer::DType::Float32: { using scalar_t = float; return __VA_ARGS__(); }       \
      case ::hmer::DType::Float64: { using scalar_t = double; return __VA_ARGS__(); }      \
      case ::hmer::DType::Int64: { using scalar_t = int64_t; return __VA_ARGS__(); }       \
    }                                                                                      \
    ::hmer::fail(op_name, ": unknown dtype");                                              \
  }()
