#include "kernels/cpu/batch_norm.h"

#include <algorithm>
#include <cmath>

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

// Reads element c of a (C) tensor of either floating dtype with any stride.
double read_param(const Tensor& t, int64_t c) {
  const int64_t s = t.stride(0);
  return t.dtype() == DType::Float32 ? static_cast<double>(t.data_ptr<float>()[c * s]) : t.data_ptr<double>()[c * s];
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
  const double count = static_cast<double>(d.per_channel());
  parallel_for(d.C, d.channel_grain(), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      double s = 0.0;
      for (int64_t n = 0; n < d.N; ++n) {
        const T* row = xp + (n * d.C + c) * d.HW;
        for (int64_t i = 0; i < d.HW; ++i) s += static_cast<double>(row[i]);
      }
      const double m = s / count;
      // Second pass on the centred values: E[x²] − m² cancels catastrophically for large means.
      double ss = 0.0;
      for (int64_t n = 0; n < d.N; ++n) {
        const T* row = xp + (n * d.C + c) * d.HW;
        for (int64_t i = 0; i < d.HW; ++i) {
          const double v = static_cast<double>(row[i]) - m;
          ss += v * v;
        }
      }
      mp[c] = m;
      vp[c] = ss / count;
      ip[c] = 1.0 / std::sqrt(vp[c] + eps);
    }
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
  const double count = static_cast<double>(d.per_channel());
  parallel_for(d.C, d.channel_grain(), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const double m = mp[c], is = ip[c];
      // sum_g = Σ g, dot = Σ g·(x − mean); x̂ = (x − mean)·invstd, so Σ g·x̂ = dot·invstd.
      double sum_g = 0.0, dot = 0.0;
      for (int64_t n = 0; n < d.N; ++n) {
        const int64_t base = (n * d.C + c) * d.HW;
        for (int64_t i = 0; i < d.HW; ++i) {
          const double gv = static_cast<double>(gp[base + i]);
          sum_g += gv;
          dot += gv * (static_cast<double>(xp[base + i]) - m);
        }
      }
      if (gwp) gwp[c] = static_cast<T>(dot * is);
      if (gbp) gbp[c] = static_cast<T>(sum_g);
      if (!gxp) continue;
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

// Calls f(i, r, keep) for every flat index i of x: r the ReLU of the normalised x[i] (as
// batch_norm_forward + relu compute it), keep whether dropout keeps element i (always without one).
template <class T, class F>
void for_each_relu_dropout(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                           const Tensor& bias, const ReluDropout& rd, F&& f) {
  const Nchw d(x);
  const T* xp = x.data_ptr<T>();
  const ChannelAffine<T> aff = channel_affine<T>(mean, invstd, weight, bias);
  const fn::Relu relu;
  parallel_for(d.C, d.channel_grain(), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const double alpha = aff.alpha(c), beta = aff.beta(c);
      for (int64_t n = 0; n < d.N; ++n) {
        const int64_t base = (n * d.C + c) * d.HW;
        auto visit = [&](int64_t i, bool keep) {
          f(base + i, relu.fwd(static_cast<T>(static_cast<double>(xp[base + i]) * alpha + beta), T(0)), keep);
        };
        const int64_t row = n * d.C + c;
        if (rd.p == 0.0) {
          for (int64_t i = 0; i < d.HW; ++i) visit(i, true);
        } else if (rd.replay != nullptr) {
          const uint64_t* bits = rd.replay + row * rd.row_words;
          for (int64_t i = 0; i < d.HW; ++i) visit(i, ((bits[i >> 6] >> (i & 63)) & 1u) != 0);
        } else if (rd.record != nullptr) {
          uint64_t* bits = rd.record + row * rd.row_words;
          std::fill(bits, bits + rd.row_words, uint64_t{0});
          for_each_dropout_keep(rd.seed, rd.offset, static_cast<uint64_t>(base), d.HW, rd.p, [&](int64_t i, bool keep) {
            if (keep) bits[i >> 6] |= uint64_t{1} << (i & 63);
            visit(i, keep);
          });
        } else {
          for_each_dropout_keep(rd.seed, rd.offset, static_cast<uint64_t>(base), d.HW, rd.p, visit);
        }
      }
    }
  });
}

}  // namespace

template <class T>
void batch_norm_relu_dropout_forward_impl(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                          const Tensor& weight, const Tensor& bias, const ReluDropout& rd,
                                          const Tensor& y) {
  T* yp = y.data_ptr<T>();
  const T scale = static_cast<T>(1.0 / (1.0 - rd.p));
  const bool drop = rd.p != 0.0;
  for_each_relu_dropout<T>(x, mean, invstd, weight, bias, rd, [&](int64_t i, T r, bool keep) {
    yp[i] = drop ? r * (keep ? scale : T(0)) : r;
  });
}

template <class T>
void batch_norm_relu_dropout_grad_impl(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                       const Tensor& weight, const Tensor& bias, const ReluDropout& rd,
                                       const Tensor& g_bn) {
  const T* gp = g.data_ptr<T>();
  T* op = g_bn.data_ptr<T>();
  const T scale = static_cast<T>(1.0 / (1.0 - rd.p));
  const bool drop = rd.p != 0.0;
  const fn::Relu relu;
  for_each_relu_dropout<T>(x, mean, invstd, weight, bias, rd, [&](int64_t i, T r, bool keep) {
    op[i] = relu.bwd(T(0), r, drop ? gp[i] * (keep ? scale : T(0)) : gp[i], T(0));
  });
}

void batch_norm_relu_dropout_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                                     const Tensor& bias, const ReluDropout& rd, const Tensor& y) {
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm_relu_dropout", [&] {
    batch_norm_relu_dropout_forward_impl<scalar_t>(x, mean, invstd, weight, bias, rd, y);
  });
}

void batch_norm_relu_dropout_grad(const Tensor& g, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                  const Tensor& weight, const Tensor& bias, const ReluDropout& rd,
                                  const Tensor& g_bn) {
  HMER_DISPATCH_FLOATING(x.dtype(), "batch_norm_relu_dropout_backward", [&] {
    batch_norm_relu_dropout_grad_impl<scalar_t>(g, x, mean, invstd, weight, bias, rd, g_bn);
  });
}

}  // namespace hmer::cpu
