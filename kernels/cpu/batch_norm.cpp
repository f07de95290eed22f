#include "kernels/cpu/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dropout.h"
#include "kernels/cpu/parallel.h"
#include "kernels/functors.h"

namespace hmer::cpu {

namespace {

struct Nchw {
  int64_t N, C, HW;
  explicit Nchw(const Tensor& x) : N(x.size(0)), C(x.size(1)), HW(x.size(2) * x.size(3)) {}
  int64_t per_channel() const { return N * HW; }
  // Channels per thread chunk so that each chunk holds about one element-wise grain of work.
  int64_t channel_grain() const {
    return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(per_channel(), 1));
  }
};

// Independent partial sums in double, combined in a fixed order at the end. One running sum is a
// single dependency chain (an add's latency per element); kLanes of them let the compiler keep the
// lanes in vector registers. The order depends only on the element index, never on threads.
constexpr int64_t kLanes = 8;
struct LaneSum {
  double lane[kLanes] = {};
  // Adds f(i) for i in [0, n): element i goes to lane i % kLanes.
  template <class F>
  void add(int64_t n, F&& f) {
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
      for (int64_t k = 0; k < kLanes; ++k) lane[k] += f(i + k);
    for (int64_t k = 0; i < n; ++i, ++k) lane[k] += f(i);
  }
  double total() const {
    double t = 0.0;
    for (int64_t k = 0; k < kLanes; ++k) t += lane[k];
    return t;
  }
};

// Reads element c of a (C) tensor of either floating dtype with any stride.
double read_param(const Tensor& t, int64_t c) {
  const int64_t s = t.stride(0);
  return t.dtype() == DType::Float32 ? static_cast<double>(t.data_ptr<float>()[c * s]) : t.data_ptr<double>()[c * s];
}

// Channel c's batch mean, biased variance and invstd, two-pass in double.
template <class T>
void channel_stats(const T* xp, const Nchw& d, int64_t c, double eps, double* mp, double* vp, double* ip) {
  const double count = static_cast<double>(d.per_channel());
  LaneSum s;
  for (int64_t n = 0; n < d.N; ++n) {
    const T* row = xp + (n * d.C + c) * d.HW;
    s.add(d.HW, [&](int64_t i) { return static_cast<double>(row[i]); });
  }
  const double m = s.total() / count;
  // Second pass on the centred values: E[x²] − m² cancels catastrophically for large means.
  LaneSum ss;
  for (int64_t n = 0; n < d.N; ++n) {
    const T* row = xp + (n * d.C + c) * d.HW;
    ss.add(d.HW, [&](int64_t i) {
      const double v = static_cast<double>(row[i]) - m;
      return v * v;
    });
  }
  mp[c] = m;
  vp[c] = ss.total() / count;
  ip[c] = 1.0 / std::sqrt(vp[c] + eps);
}

}  // namespace

template <class T>
void batch_norm_batch_stats_impl(const Tensor& x, double eps, const Tensor& mean, const Tensor& var,
                                 const Tensor& invstd) {
  const Nchw d(x);
  const T* xp = x.data_ptr<T>();
  double* mp = mean.data_ptr<double>();
  double* vp = var.data_ptr<double>();
  double* ip = invstd.data_ptr<double>();
  parallel_for(d.C, d.channel_grain(), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) channel_stats(xp, d, c, eps, mp, vp, ip);
  });
}
template void batch_norm_batch_stats_impl<float>(const Tensor&, double, const Tensor&, const Tensor&, const Tensor&);
template void batch_norm_batch_stats_impl<double>(const Tensor&, double, const Tensor&, const Tensor&, const Tensor&);

void batch_norm_batch_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& var, const Tensor& invstd) {
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm2d", [&] {
    batch_norm_batch_stats_impl<scalar_t>(x, eps, mean, var, invstd);
  });
}

void batch_norm_running_stats(const Tensor& running_mean, const Tensor& running_var, double eps, const Tensor& mean,
                              const Tensor& invstd) {
  double* mp = mean.data_ptr<double>();
  double* ip = invstd.data_ptr<double>();
  for (int64_t c = 0; c < mean.numel(); ++c) {
    mp[c] = read_param(running_mean, c);
    ip[c] = 1.0 / std::sqrt(read_param(running_var, c) + eps);
  }
}

template <class T>
void batch_norm_update_running_impl(const Tensor& batch_mean, const Tensor& batch_var, double keep, double take,
                                    double var_correction, const Tensor& running_mean, const Tensor& running_var) {
  const double* bm = batch_mean.data_ptr<double>();
  const double* bv = batch_var.data_ptr<double>();
  T* rm = running_mean.data_ptr<T>();
  T* rv = running_var.data_ptr<T>();
  const int64_t sm = running_mean.stride(0), sv = running_var.stride(0);
  for (int64_t c = 0; c < batch_mean.numel(); ++c) {
    rm[c * sm] = static_cast<T>(take * bm[c] + keep * static_cast<double>(rm[c * sm]));
    rv[c * sv] = static_cast<T>(take * (bv[c] * var_correction) + keep * static_cast<double>(rv[c * sv]));
  }
}
template void batch_norm_update_running_impl<float>(const Tensor&, const Tensor&, double, double, double,
                                                    const Tensor&, const Tensor&);
template void batch_norm_update_running_impl<double>(const Tensor&, const Tensor&, double, double, double,
                                                     const Tensor&, const Tensor&);

void batch_norm_update_running(const Tensor& batch_mean, const Tensor& batch_var, double keep, double take,
                               double var_correction, const Tensor& running_mean, const Tensor& running_var) {
  HMER_CHECK(running_mean.dtype() == running_var.dtype(), "batch_norm2d: running_mean is ", running_mean.str(),
             " but running_var is ", running_var.str());
  HMER_DISPATCH_FLOATING(running_mean.dtype(), "batch_norm2d", [&] {
    batch_norm_update_running_impl<scalar_t>(batch_mean, batch_var, keep, take, var_correction, running_mean,
                                             running_var);
  });
}

template <class T>
void batch_norm_forward_impl(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                             const Tensor& bias, const Tensor& y) {
  const Nchw d(x);
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const double* mp = mean.data_ptr<double>();
  const double* ip = invstd.data_ptr<double>();
  const T* wp = weight.defined() ? weight.data_ptr<T>() : nullptr;
  const T* bp = bias.defined() ? bias.data_ptr<T>() : nullptr;
  parallel_for(d.C, d.channel_grain(), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      // y = x·alpha + beta with the per-channel affine folded in, evaluated in double.
      const double alpha = ip[c] * (wp ? static_cast<double>(wp[c]) : 1.0);
      const double beta = (bp ? static_cast<double>(bp[c]) : 0.0) - mp[c] * alpha;
      for (int64_t n = 0; n < d.N; ++n) {
        const int64_t base = (n * d.C + c) * d.HW;
        for (int64_t i = 0; i < d.HW; ++i)
          yp[base + i] = static_cast<T>(static_cast<double>(xp[base + i]) * alpha + beta);
      }
    }
  });
}
template void batch_norm_forward_impl<float>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                             const Tensor&);
template void batch_norm_forward_impl<double>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&);

void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                        const Tensor& bias, const Tensor& y) {
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm2d", [&] {
    batch_norm_forward_impl<scalar_t>(x, mean, invstd, weight, bias, y);
  });
}

namespace {

// Channel c's gradients for x, weight and bias (null pointers skip them), as batch_norm_backward
// computes them.
template <class T>
void channel_backward(const T* gp, const T* xp, const Nchw& d, int64_t c, const double* mp, const double* ip,
                      const T* wp, bool training, T* gxp, T* gwp, T* gbp) {
  const double count = static_cast<double>(d.per_channel());
  const double m = mp[c], is = ip[c];
  // sum_g = Σ g, dot = Σ g·(x − mean); x̂ = (x − mean)·invstd, so Σ g·x̂ = dot·invstd.
  LaneSum sum_lanes, dot_lanes;
  for (int64_t n = 0; n < d.N; ++n) {
    const T* gr = gp + (n * d.C + c) * d.HW;
    const T* xr = xp + (n * d.C + c) * d.HW;
    sum_lanes.add(d.HW, [&](int64_t i) { return static_cast<double>(gr[i]); });
    dot_lanes.add(d.HW, [&](int64_t i) { return static_cast<double>(gr[i]) * (static_cast<double>(xr[i]) - m); });
  }
  const double sum_g = sum_lanes.total(), dot = dot_lanes.total();
  if (gwp) gwp[c] = static_cast<T>(dot * is);
  if (gbp) gbp[c] = static_cast<T>(sum_g);
  if (!gxp) return;
  const double w = wp ? static_cast<double>(wp[c]) : 1.0;
  const double scale = is * w;
  if (training) {
    const double mean_g = sum_g / count;
    // mean(g·x̂)·x̂·invstd·w = (x − mean)·(dot/count)·invstd²·w
    const double proj = dot / count * is * is;
    for (int64_t n = 0; n < d.N; ++n) {
      const int64_t base = (n * d.C + c) * d.HW;
      for (int64_t i = 0; i < d.HW; ++i) {
        const double xc = static_cast<double>(xp[base + i]) - m;
        gxp[base + i] = static_cast<T>((static_cast<double>(gp[base + i]) - mean_g - xc * proj) * scale);
      }
    }
  } else {
    for (int64_t n = 0; n < d.N; ++n) {
      const int64_t base = (n * d.C + c) * d.HW;
      for (int64_t i = 0; i < d.HW; ++i) gxp[base + i] = static_cast<T>(static_cast<double>(gp[base + i]) * scale);
    }
  }
}

}  // namespace

template <class T>
void batch_norm_backward_impl(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                              const Tensor& weight, bool training, const Tensor& gx, const Tensor& gw,
                              const Tensor& gb) {
  const Nchw d(x);
  const T* gp = g.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const double* mp = mean.data_ptr<double>();
  const double* ip = invstd.data_ptr<double>();
  const T* wp = weight.defined() ? weight.data_ptr<T>() : nullptr;
  T* gxp = gx.defined() ? gx.data_ptr<T>() : nullptr;
  T* gwp = gw.defined() ? gw.data_ptr<T>() : nullptr;
  T* gbp = gb.defined() ? gb.data_ptr<T>() : nullptr;
  parallel_for(d.C, d.channel_grain(), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) channel_backward(gp, xp, d, c, mp, ip, wp, training, gxp, gwp, gbp);
  });
}
template void batch_norm_backward_impl<float>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&, bool, const Tensor&, const Tensor&, const Tensor&);
template void batch_norm_backward_impl<double>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                               const Tensor&, bool, const Tensor&, const Tensor&, const Tensor&);

void batch_norm_backward(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                         const Tensor& weight, bool training, const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm2d_backward", [&] {
    batch_norm_backward_impl<scalar_t>(g, x, mean, invstd, weight, training, gx, gw, gb);
  });
}

namespace {

// alpha, beta of y = x·alpha + beta for channel c, as batch_norm_forward_impl folds them.
template <class T>
struct ChannelAffine {
  const double* mp;
  const double* ip;
  const T* wp;
  const T* bp;
  double alpha(int64_t c) const { return ip[c] * (wp ? static_cast<double>(wp[c]) : 1.0); }
  double beta(int64_t c) const { return (bp ? static_cast<double>(bp[c]) : 0.0) - mp[c] * alpha(c); }
};

template <class T>
ChannelAffine<T> channel_affine(const Tensor& mean, const Tensor& invstd, const Tensor& weight, const Tensor& bias) {
  return {mean.data_ptr<double>(), invstd.data_ptr<double>(), weight.defined() ? weight.data_ptr<T>() : nullptr,
          bias.defined() ? bias.data_ptr<T>() : nullptr};
}

// Runs f(base, alpha, beta, mult) for every row (n, c) of x: base its flat start, alpha/beta the
// channel's folded affine, mult the row's dropout multipliers (scale where kept, 0 where dropped; null
// without dropout). The multipliers come from the recorded bits when there are some, else from the
// Philox stream (recorded when asked). Rows are whole, so the caller's loop over one row is a plain
// vectorisable loop with no generator inside.
struct NoHook {
  void operator()(int64_t) const {}
};

// before(c) runs before channel c's affine is read (the fused training forward computes the
// channel's statistics there), after(c) once all its rows are done (the fused backward's
// per-channel batch-norm gradient): a channel's N·H·W values are then still in cache.
template <class T, class F, class Before = NoHook, class After = NoHook>
void for_each_row(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                  const Tensor& bias, const ReluDropout& rd, F&& f, Before&& before = {}, After&& after = {}) {
  const Nchw d(x);
  const ChannelAffine<T> aff = channel_affine<T>(mean, invstd, weight, bias);
  const T scale = static_cast<T>(1.0 / (1.0 - rd.p));
  const bool drop = rd.p != 0.0;
  parallel_for(d.C, d.channel_grain(), [&](int64_t cb, int64_t ce) {
    std::vector<T> mult(drop ? static_cast<size_t>(d.HW) : 0);
    std::vector<uint32_t> words(drop && rd.replay == nullptr ? static_cast<size_t>(d.HW) : 0);
    for (int64_t c = cb; c < ce; ++c) {
      before(c);
      const double alpha = aff.alpha(c), beta = aff.beta(c);
      for (int64_t n = 0; n < d.N; ++n) {
        const int64_t row = n * d.C + c, base = row * d.HW;
        if (drop) {
          dropout_row_multipliers<T>(rd.seed, rd.offset + static_cast<uint64_t>(base), d.HW, rd.p, scale,
                                     words.data(), rd.record != nullptr ? rd.record + row * rd.row_words : nullptr,
                                     rd.replay != nullptr ? rd.replay + row * rd.row_words : nullptr, mult.data());
        }
        f(base, alpha, beta, drop ? mult.data() : nullptr);
      }
      after(c);
    }
  });
}

}  // namespace

// Per element exactly as batch_norm_forward (x·alpha + beta in double, rounded to T), fn::Relu, and
// dropout_apply (r · (keep ? scale : 0)) compute it. With stats, each channel's batch statistics
// are computed first, as batch_norm_batch_stats computes them.
struct TrainStats {
  double eps;
  double* var;
};
template <class T>
void batch_norm_relu_dropout_forward_impl(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                          const Tensor& weight, const Tensor& bias, const ReluDropout& rd,
                                          const Tensor& y, const TrainStats* stats) {
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const int64_t hw = x.size(2) * x.size(3);
  const fn::Relu relu;
  const Nchw d(x);
  auto row = [&](int64_t base, double alpha, double beta, const T* mult) {
    const T* xr = xp + base;
    T* yr = yp + base;
    if (mult == nullptr) {
      for (int64_t i = 0; i < hw; ++i) yr[i] = relu.fwd(static_cast<T>(static_cast<double>(xr[i]) * alpha + beta), T(0));
    } else {
      for (int64_t i = 0; i < hw; ++i)
        yr[i] = relu.fwd(static_cast<T>(static_cast<double>(xr[i]) * alpha + beta), T(0)) * mult[i];
    }
  };
  if (stats == nullptr) {
    for_each_row<T>(x, mean, invstd, weight, bias, rd, row);
    return;
  }
  double* mp = mean.data_ptr<double>();
  double* ip = invstd.data_ptr<double>();
  for_each_row<T>(x, mean, invstd, weight, bias, rd, row,
                  [&](int64_t c) { channel_stats(xp, d, c, stats->eps, mp, stats->var, ip); });
}

// dropout_apply's backward (g · (keep ? scale : 0)) then relu's (where the output is positive); with
// grads, each channel's batch-norm gradients from it, as batch_norm_backward computes them.
struct BackwardOut {
  bool training;
  const Tensor *gx, *gw, *gb;
};
template <class T>
void batch_norm_relu_dropout_grad_impl(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                       const Tensor& weight, const Tensor& bias, const ReluDropout& rd,
                                       const Tensor& g_bn, const BackwardOut* grads) {
  const T* gp = g.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  T* op = g_bn.data_ptr<T>();
  const int64_t hw = x.size(2) * x.size(3);
  const fn::Relu relu;
  auto row = [&](int64_t base, double alpha, double beta, const T* mult) {
    const T* xr = xp + base;
    const T* gr = gp + base;
    T* orow = op + base;
    for (int64_t i = 0; i < hw; ++i) {
      const T r = relu.fwd(static_cast<T>(static_cast<double>(xr[i]) * alpha + beta), T(0));
      const T gd = mult == nullptr ? gr[i] : gr[i] * mult[i];
      orow[i] = relu.bwd(T(0), r, gd, T(0));
    }
  };
  if (grads == nullptr) {
    for_each_row<T>(x, mean, invstd, weight, bias, rd, row);
    return;
  }
  const Nchw d(x);
  const double* mp = mean.data_ptr<double>();
  const double* ip = invstd.data_ptr<double>();
  const T* wp = weight.defined() ? weight.data_ptr<T>() : nullptr;
  auto ptr = [](const Tensor* t) { return t->defined() ? t->data_ptr<T>() : nullptr; };
  T* gxp = ptr(grads->gx);
  T* gwp = ptr(grads->gw);
  T* gbp = ptr(grads->gb);
  for_each_row<T>(x, mean, invstd, weight, bias, rd, row, NoHook{}, [&](int64_t c) {
    channel_backward<T>(op, xp, d, c, mp, ip, wp, grads->training, gxp, gwp, gbp);
  });
}

void batch_norm_relu_dropout_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                                     const Tensor& bias, const ReluDropout& rd, const Tensor& y) {
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm_relu_dropout", [&] {
    batch_norm_relu_dropout_forward_impl<scalar_t>(x, mean, invstd, weight, bias, rd, y, nullptr);
  });
}

void batch_norm_relu_dropout_train_forward(const Tensor& x, double eps, const Tensor& mean, const Tensor& var,
                                           const Tensor& invstd, const Tensor& weight, const Tensor& bias,
                                           const ReluDropout& rd, const Tensor& y) {
  const TrainStats stats{eps, var.data_ptr<double>()};
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm_relu_dropout", [&] {
    batch_norm_relu_dropout_forward_impl<scalar_t>(x, mean, invstd, weight, bias, rd, y, &stats);
  });
}

void batch_norm_relu_dropout_grad(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                  const Tensor& weight, const Tensor& bias, const ReluDropout& rd,
                                  const Tensor& g_bn) {
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm_relu_dropout_backward", [&] {
    batch_norm_relu_dropout_grad_impl<scalar_t>(g, x, mean, invstd, weight, bias, rd, g_bn, nullptr);
  });
}

void batch_norm_relu_dropout_backward(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                      const Tensor& weight, const Tensor& bias, const ReluDropout& rd, bool training,
                                      const Tensor& g_bn, const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  const BackwardOut grads{training, &gx, &gw, &gb};
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm_relu_dropout_backward", [&] {
    batch_norm_relu_dropout_grad_impl<scalar_t>(g, x, mean, invstd, weight, bias, rd, g_bn, &grads);
  });
}

}  // namespace hmer::cpu
