#pragma once
// Parameter initialisers (torch.nn.init in C++) and the per-framework init presets.
//
// Every initialiser fills a floating tensor in place, on any device and through any view, without
// recording autograd, and draws from a Generator (default_generator() unless given). Random values
// are a pure function of (generator seed, offset, element index), so a fixed seed gives the same
// weights on any thread count; they do NOT reproduce PyTorch's or Paddle's random streams (a
// different RNG), only their distributions. Formulas: docs/layers.md.
#include <cstdint>
#include <optional>

#include "core/rng.h"
#include "core/tensor.h"
#include "layers/module.h"

namespace hmer {

enum class FanMode { FanIn, FanOut };
enum class Nonlinearity { Linear, Conv, Sigmoid, Tanh, Relu, LeakyRelu, Selu };

struct Fans {
  int64_t fan_in;
  int64_t fan_out;
};

// torch.nn.init.calculate_gain: linear/conv/sigmoid 1, tanh 5/3, relu sqrt(2),
// leaky_relu sqrt(2 / (1 + slope^2)) with slope = param or 0.01 when absent, selu 3/4.
double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param = std::nullopt);

// torch's rule (needs dim >= 2): fan_in = size(1) * rf, fan_out = size(0) * rf, rf = prod(shape[2:]).
Fans calculate_fan_in_and_fan_out(const Shape& shape);
// Paddle's _compute_fans: 1-D both shape[0]; 2-D fan_in = shape[0], fan_out = shape[1] (Paddle's
// Linear weight is [in, out]); >= 3-D like torch. Pass the shape in Paddle's layout.
Fans paddle_fans(const Shape& shape);

// U[a, b). Values are drawn in double and rounded to the tensor dtype.
Tensor uniform_(const Tensor& t, double a = 0.0, double b = 1.0, Generator& gen = default_generator());
// N(mean, std^2) by Box-Muller (two normals per four Philox words).
Tensor normal_(const Tensor& t, double mean = 0.0, double std = 1.0, Generator& gen = default_generator());
Tensor constant_(const Tensor& t, double value);
Tensor zeros_(const Tensor& t);
Tensor ones_(const Tensor& t);

// bound = sqrt(3) * gain / sqrt(fan), gain = calculate_gain(nonlinearity, a).
Tensor kaiming_uniform_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                        Nonlinearity nonlinearity = Nonlinearity::LeakyRelu, Generator& gen = default_generator());
// std = gain / sqrt(fan).
Tensor kaiming_normal_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                       Nonlinearity nonlinearity = Nonlinearity::LeakyRelu, Generator& gen = default_generator());
// a = gain * sqrt(6 / (fan_in + fan_out)) with torch's fans.
Tensor xavier_uniform_(const Tensor& t, double gain = 1.0, Generator& gen = default_generator());
// std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_normal_(const Tensor& t, double gain = 1.0, Generator& gen = default_generator());
// torch.nn.init.orthogonal_: rows = size(0), cols = numel / rows; an N(0,1) (rows x cols) matrix,
// transposed when rows < cols, reduced QR (Eigen HouseholderQR, double), Q * sign(diag R),
// transposed back, times gain. Rows (or columns, whichever are fewer) come out orthonormal.
Tensor orthogonal_(const Tensor& t, double gain = 1.0, Generator& gen = default_generator());

// Glorot / Xavier uniform limit for given fans: gain * sqrt(6 / (fan_in + fan_out)).
double xavier_uniform_bound(Fans fans, double gain = 1.0);

// Re-initialises every module of `model` (pre-order, the named_modules() order) with the preset's
// rule for its layer type; layers without parameters are left alone.
void apply_init_preset(Module& model, InitPreset preset, Generator& gen = default_generator());

}  // namespace hmer
