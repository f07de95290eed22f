#include "layers/init.h"

#include <Eigen/Dense>
#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "kernels/cpu/parallel.h"

namespace hmer {

namespace {

constexpr double kTwoPi = 6.283185307179586476925;

void check_init_target(const Tensor& t, const char* op) {
  HMER_CHECK(t.defined(), op, ": undefined tensor");
  HMER_CHECK(is_floating(t.dtype()), op, ": expected a floating tensor, got ", t.str());
}

// Writes host values (row-major over t's shape) into t, whatever its device, dtype or strides.
void assign(const Tensor& t, const std::vector<double>& values) {
  Tensor host = Tensor::from_vector<double>(values, t.shape());
  Tensor dst = t.detach();
  dst.copy_(host);
}

// n uniforms in [0, 1): element i takes words (2i, 2i+1) of the reserved range.
std::vector<double> unit_uniforms(int64_t n, Generator& gen) {
  std::vector<double> out(static_cast<size_t>(n));
  const uint64_t seed = gen.seed();
  const uint64_t base = gen.reserve(2 * static_cast<uint64_t>(n)) >> 2;  // reserve() is 4-aligned
  cpu::parallel_for(n, 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const Philox4x32 b = philox_block(seed, base + static_cast<uint64_t>(i) / 2);
      const int lane = static_cast<int>(i & 1) * 2;
      out[static_cast<size_t>(i)] = uints_to_unit_double(b.v[lane], b.v[lane + 1]);
    }
  });
  return out;
}

// n standard normals: each Philox block gives two uniforms (u1, u2) and Box-Muller turns them
// into the pair (r cos 2πu2, r sin 2πu2).
std::vector<double> standard_normals(int64_t n, Generator& gen) {
  std::vector<double> out(static_cast<size_t>(n));
  const int64_t pairs = (n + 1) / 2;
  const uint64_t seed = gen.seed();
  const uint64_t base = gen.reserve(4 * static_cast<uint64_t>(pairs)) >> 2;
  cpu::parallel_for(pairs, 1 << 13, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const Philox4x32 b = philox_block(seed, base + static_cast<uint64_t>(k));
      // 1 - u lies in (0, 1], so the log is finite.
      const double u1 = 1.0 - uints_to_unit_double(b.v[0], b.v[1]);
      const double u2 = uints_to_unit_double(b.v[2], b.v[3]);
      const double r = std::sqrt(-2.0 * std::log(u1));
      out[static_cast<size_t>(2 * k)] = r * std::cos(kTwoPi * u2);
      if (2 * k + 1 < n) out[static_cast<size_t>(2 * k + 1)] = r * std::sin(kTwoPi * u2);
    }
  });
  return out;
}

double fan_for(const Tensor& t, FanMode mode, const char* op) {
  HMER_CHECK(t.dim() >= 2, op, ": fan in and fan out can not be computed for a tensor with fewer than 2 dimensions, got ",
             shape_str(t.shape()));
  const Fans f = calculate_fan_in_and_fan_out(t.shape());
  const int64_t fan = mode == FanMode::FanIn ? f.fan_in : f.fan_out;
  HMER_CHECK(fan > 0, op, ": zero fan for tensor ", shape_str(t.shape()));
  return static_cast<double>(fan);
}

}  // namespace

double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param) {
  switch (nonlinearity) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv:
    case Nonlinearity::Sigmoid:
      return 1.0;
    case Nonlinearity::Tanh:
      return 5.0 / 3.0;
    case Nonlinearity::Relu:
      return std::sqrt(2.0);
    case Nonlinearity::LeakyRelu: {
      const double slope = param.value_or(0.01);
      return std::sqrt(2.0 / (1.0 + slope * slope));
    }
    case Nonlinearity::Selu:
      return 3.0 / 4.0;
  }
  return 1.0;
}

Fans calculate_fan_in_and_fan_out(const Shape& shape) {
  HMER_CHECK(shape.size() >= 2,
             "calculate_fan_in_and_fan_out: fan in and fan out can not be computed for a tensor with fewer than 2 "
             "dimensions, got ",
             shape_str(shape));
  int64_t rf = 1;
  for (size_t i = 2; i < shape.size(); ++i) rf *= shape[i];
  return {shape[1] * rf, shape[0] * rf};
}

Fans paddle_fans(const Shape& shape) {
  HMER_CHECK(!shape.empty(), "paddle_fans: scalar shape has no fans");
  if (shape.size() == 1) return {shape[0], shape[0]};
  if (shape.size() == 2) return {shape[0], shape[1]};
  int64_t rf = 1;
  for (size_t i = 2; i < shape.size(); ++i) rf *= shape[i];
  return {shape[1] * rf, shape[0] * rf};
}

double xavier_uniform_bound(Fans fans, double gain) {
  HMER_CHECK(fans.fan_in + fans.fan_out > 0, "xavier_uniform_bound: fan_in + fan_out is zero");
  return gain * std::sqrt(6.0 / static_cast<double>(fans.fan_in + fans.fan_out));
}

Tensor uniform_(const Tensor& t, double a, double b, Generator& gen) {
  check_init_target(t, "uniform_");
  HMER_CHECK(a <= b, "uniform_: expected a <= b, got a = ", a, ", b = ", b);
  std::vector<double> v = unit_uniforms(t.numel(), gen);
  const double width = b - a;
  for (double& x : v) x = a + width * x;
  assign(t, v);
  return t;
}

Tensor normal_(const Tensor& t, double mean, double std, Generator& gen) {
  check_init_target(t, "normal_");
  HMER_CHECK(std >= 0.0, "normal_: std must be >= 0, got ", std);
  std::vector<double> v = standard_normals(t.numel(), gen);
  for (double& x : v) x = mean + std * x;
  assign(t, v);
  return t;
}

Tensor constant_(const Tensor& t, double value) {
  HMER_CHECK(t.defined(), "constant_: undefined tensor");
  Tensor d = t.detach();
  d.fill_(value);
  return t;
}

Tensor zeros_(const Tensor& t) { return constant_(t, 0.0); }
Tensor ones_(const Tensor& t) { return constant_(t, 1.0); }

Tensor kaiming_uniform_(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity, Generator& gen) {
  check_init_target(t, "kaiming_uniform_");
  if (t.numel() == 0) return t;  // torch: initialising a zero-element tensor is a no-op
  const double fan = fan_for(t, mode, "kaiming_uniform_");
  // Same operation order as torch: std = gain / sqrt(fan), bound = sqrt(3) * std.
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(fan);
  const double bound = std::sqrt(3.0) * std;
  return uniform_(t, -bound, bound, gen);
}

Tensor kaiming_normal_(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity, Generator& gen) {
  check_init_target(t, "kaiming_normal_");
  if (t.numel() == 0) return t;  // torch: initialising a zero-element tensor is a no-op
  const double fan = fan_for(t, mode, "kaiming_normal_");
  return normal_(t, 0.0, calculate_gain(nonlinearity, a) / std::sqrt(fan), gen);
}

Tensor xavier_uniform_(const Tensor& t, double gain, Generator& gen) {
  check_init_target(t, "xavier_uniform_");
  if (t.numel() == 0) return t;  // torch: initialising a zero-element tensor is a no-op
  fan_for(t, FanMode::FanIn, "xavier_uniform_");
  const double a = xavier_uniform_bound(calculate_fan_in_and_fan_out(t.shape()), gain);
  return uniform_(t, -a, a, gen);
}

Tensor xavier_normal_(const Tensor& t, double gain, Generator& gen) {
  check_init_target(t, "xavier_normal_");
  if (t.numel() == 0) return t;  // torch: initialising a zero-element tensor is a no-op
  fan_for(t, FanMode::FanIn, "xavier_normal_");
  const Fans f = calculate_fan_in_and_fan_out(t.shape());
  return normal_(t, 0.0, gain * std::sqrt(2.0 / static_cast<double>(f.fan_in + f.fan_out)), gen);
}

Tensor orthogonal_(const Tensor& t, double gain, Generator& gen) {
  check_init_target(t, "orthogonal_");
  HMER_CHECK(t.dim() >= 2, "orthogonal_: only tensors with 2 or more dimensions are supported, got ",
             shape_str(t.shape()));
  if (t.numel() == 0) return t;
  const int64_t rows = t.size(0);
  const int64_t cols = t.numel() / rows;
  const std::vector<double> flat = standard_normals(rows * cols, gen);
  const bool transposed = rows < cols;
  const int64_t m = transposed ? cols : rows, n = transposed ? rows : cols;
  // A (m x n), m >= n: the (rows x cols) sample, transposed when it is wide.
  Eigen::MatrixXd A(m, n);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const double v = flat[static_cast<size_t>(i * cols + j)];
      if (transposed) A(j, i) = v; else A(i, j) = v;
    }
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(A);
  Eigen::MatrixXd Q = qr.householderQ() * Eigen::MatrixXd::Identity(m, n);
  const Eigen::MatrixXd& R = qr.matrixQR();
  for (int64_t j = 0; j < n; ++j) {
    // torch multiplies by sign(diag R): makes the factorisation unique, so Q is Haar-distributed.
    const double d = R(j, j);
    const double s = d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0);
    Q.col(j) *= s;
  }
  std::vector<double> out(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      out[static_cast<size_t>(i * cols + j)] = gain * (transposed ? Q(j, i) : Q(i, j));
  assign(t, out);
  return t;
}

void apply_init_preset(Module& model, InitPreset preset, Generator& gen) {
  NoGradGuard no_grad;
  for (auto& [name, m] : model.named_modules()) m->reset_parameters(preset, gen);
}

}  // namespace hmer
