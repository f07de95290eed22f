#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

namespace {

// Fixed chunking (not per thread) keeps the double sums independent of the thread count.
constexpr int64_t kSumChunk = 16384;

// Σ over [0, n) of f(lo, hi)'s partial sums, chunk by chunk, combined in chunk order.
template <class F>
double chunked_sum(int64_t n, int64_t chunk, const F& f) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<double> partial(static_cast<size_t>(std::max<int64_t>(chunks, 0)), 0.0);
  parallel_for(chunks, std::max<int64_t>(1, kElementwiseGrain / chunk), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) partial[k] = f(k * chunk, std::min(n, (k + 1) * chunk));
  });
  double s = 0.0;
  for (double p : partial) s += p;
  return s;
}

void check_targets(const int64_t* t, int64_t N, int64_t C, int64_t ignore_index) {
  for (int64_t i = 0; i < N; ++i) {
    HMER_CHECK(t[i] == ignore_index || (t[i] >= 0 && t[i] < C), "cross_entropy: target ", t[i], " at position ", i,
               " is out of range for ", C, " classes (valid: [0, ", C, ") or ignore_index = ", ignore_index, ")");
  }
}

}  // namespace

template <class T>
CrossEntropySums cross_entropy_forward_impl(const Tensor& logits, const Tensor& target, const Tensor& weight,
                                            int64_t ignore_index, const Tensor& losses, const Tensor& lse) {
  const int64_t N = logits.size(0), C = logits.size(1);
  const T* xp = logits.data_ptr<T>();
  const int64_t* tp = target.data_ptr<int64_t>();
  const T* wp = weight.defined() ? weight.data_ptr<T>() : nullptr;
  T* lp = losses.defined() ? losses.data_ptr<T>() : nullptr;
  double* sp = lse.data_ptr<double>();
  check_targets(tp, N, C, ignore_index);
  // Rows per chunk: about one element-wise grain of logits.
  const int64_t rows = std::max<int64_t>(1, kSumChunk / std::max<int64_t>(C, 1));
  std::vector<double> wsum_part(static_cast<size_t>((N + rows - 1) / rows), 0.0);
  CrossEntropySums s;
  s.loss = chunked_sum(N, rows, [&](int64_t lo, int64_t hi) {
    double loss = 0.0, wsum = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
      const T* x = xp + i * C;
      T mx = x[0];
      for (int64_t c = 1; c < C; ++c) mx = std::max(mx, x[c]);
      double e = 0.0;
      for (int64_t c = 0; c < C; ++c) e += static_cast<double>(std::exp(static_cast<T>(x[c] - mx)));
      sp[i] = static_cast<double>(mx) + std::log(e);
      const int64_t y = tp[i];
      double li = 0.0;
      if (y != ignore_index) {
        const double w = wp ? static_cast<double>(wp[y]) : 1.0;
        li = -w * (static_cast<double>(x[y]) - sp[i]);
        wsum += w;
        loss += li;
      }
      if (lp) lp[i] = static_cast<T>(li);
    }
    wsum_part[lo / rows] = wsum;
    return loss;
  });
  for (double w : wsum_part) s.weight += w;
  return s;
}
template CrossEntropySums cross_entropy_forward_impl<float>(const Tensor&, const Tensor&, const Tensor&, int64_t,
                                                            const Tensor&, const Tensor&);
template CrossEntropySums cross_entropy_forward_impl<double>(const Tensor&, const Tensor&, const Tensor&, int64_t,
                                                             const Tensor&, const Tensor&);

CrossEntropySums cross_entropy_forward(const Tensor& logits, const Tensor& target, const Tensor& weight,
                                       int64_t ignore_index, const Tensor& losses, const Tensor& lse) {
  return HMER_DISPATCH_FLOATING(logits.dtype(), "cross_entropy", [&] {
    return cross_entropy_forward_impl<scalar_t>(logits, target, weight, ignore_index, losses, lse);
  });
}

template <class T>
void cross_entropy_backward_impl(const Tensor& logits, const Tensor& target, const Tensor& weight,
                                 int64_t ignore_index, const Tensor& lse, const Tensor& g, double scale,
                                 const Tensor& gx) {
  const int64_t N = logits.size(0), C = logits.size(1);
  const T* xp = logits.data_ptr<T>();
  const int64_t* tp = target.data_ptr<int64_t>();
  const T* wp = weight.defined() ? weight.data_ptr<T>() : nullptr;
  const double* sp = lse.data_ptr<double>();
  const T* gp = g.data_ptr<T>();
  const bool per_row = g.numel() == N && g.dim() == 1;
  T* gxp = gx.data_ptr<T>();
  parallel_for(N, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T* out = gxp + i * C;
      const int64_t y = tp[i];
      if (y == ignore_index) {
        std::fill(out, out + C, T(0));
        continue;
      }
      const double w = wp ? static_cast<double>(wp[y]) : 1.0;
      const double coef = static_cast<double>(per_row ? gp[i] : gp[0]) * w * scale;
      const T* x = xp + i * C;
      for (int64_t c = 0; c < C; ++c) {
        const double p = std::exp(static_cast<double>(x[c]) - sp[i]);
        out[c] = static_cast<T>(coef * (c == y ? p - 1.0 : p));
      }
    }
  });
}
template void cross_entropy_backward_impl<float>(const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&,
                                                 const Tensor&, double, const Tensor&);
template void cross_entropy_backward_impl<double>(const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&,
                                                  const Tensor&, double, const Tensor&);

void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& weight, int64_t ignore_index,
                            const Tensor& lse, const Tensor& g, double scale, const Tensor& gx) {
  HMER_DISPATCH_FLOATING(logits.dtype(), "cross_entropy_backward", [&] {
    cross_entropy_backward_impl<scalar_t>(logits, target, weight, ignore_index, lse, g, scale, gx);
  });
}

namespace {

// The element-wise formulas, in the tensor dtype as torch's CPU kernels evaluate them.
template <class T>
struct SmoothL1 {
  T beta;
  T fwd(T x, T t) const {
    const T z = std::abs(x - t);
    if (beta == T(0)) return z;
    return z < beta ? T(0.5) * z * z / beta : z - T(0.5) * beta;
  }
  // d/dx times g·norm, with torch's branch points (±beta belong to the linear pieces).
  T bwd(T x, T t, T g, T norm) const {
    const T d = x - t;
    if (beta == T(0)) return d > T(0) ? norm * g : (d < T(0) ? -norm * g : T(0));  // L1: sign(d), 0 at 0
    if (d <= -beta) return -norm * g;
    if (d >= beta) return norm * g;
    return norm * d * g / beta;
  }
};

template <class T>
struct Mse {
  T fwd(T x, T t) const {
    const T d = x - t;
    return d * d;
  }
  // torch: (x − t)·(2·norm)·g
  T bwd(T x, T t, T g, T norm) const { return (x - t) * (T(2) * norm) * g; }
};

template <class T, class F>
double pointwise_forward_loop(const F& f, const Tensor& input, const Tensor& target, const Tensor& out) {
  const T* xp = input.data_ptr<T>();
  const T* tp = target.data_ptr<T>();
  T* op = out.defined() ? out.data_ptr<T>() : nullptr;
  return chunked_sum(input.numel(), kSumChunk, [&](int64_t lo, int64_t hi) {
    double s = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
      const T v = f.fwd(xp[i], tp[i]);
      if (op) op[i] = v;
      s += static_cast<double>(v);
    }
    return s;
  });
}

template <class T, class F>
void pointwise_backward_loop(const F& f, const Tensor& input, const Tensor& target, const Tensor& g, double scale,
                             const Tensor& gi, const Tensor& gt) {
  const T* xp = input.data_ptr<T>();
  const T* tp = target.data_ptr<T>();
  const T* gp = g.data_ptr<T>();
  const bool broadcast_g = g.numel() == 1 && input.numel() != 1;
  T* gip = gi.defined() ? gi.data_ptr<T>() : nullptr;
  T* gtp = gt.defined() ? gt.data_ptr<T>() : nullptr;
  const T norm = static_cast<T>(scale);
  parallel_for(input.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T v = f.bwd(xp[i], tp[i], broadcast_g ? gp[0] : gp[i], norm);
      if (gip) gip[i] = v;
      if (gtp) gtp[i] = -v;
    }
  });
}

}  // namespace

template <class T>
double pointwise_loss_forward_impl(PointwiseLoss kind, const Tensor& input, const Tensor& target, double beta,
                                   const Tensor& out) {
  if (kind == PointwiseLoss::SmoothL1)
    return pointwise_forward_loop<T>(SmoothL1<T>{static_cast<T>(beta)}, input, target, out);
  return pointwise_forward_loop<T>(Mse<T>{}, input, target, out);
}
template double pointwise_loss_forward_impl<float>(PointwiseLoss, const Tensor&, const Tensor&, double, const Tensor&);
template double pointwise_loss_forward_impl<double>(PointwiseLoss, const Tensor&, const Tensor&, double, const Tensor&);

template <class T>
void pointwise_loss_backward_impl(PointwiseLoss kind, const Tensor& input, const Tensor& target, double beta,
                                  const Tensor& g, double scale, const Tensor& gi, const Tensor& gt) {
  if (kind == PointwiseLoss::SmoothL1) {
    pointwise_backward_loop<T>(SmoothL1<T>{static_cast<T>(beta)}, input, target, g, scale, gi, gt);
  } else {
    pointwise_backward_loop<T>(Mse<T>{}, input, target, g, scale, gi, gt);
  }
}
template void pointwise_loss_backward_impl<float>(PointwiseLoss, const Tensor&, const Tensor&, double, const Tensor&,
                                                  double, const Tensor&, const Tensor&);
template void pointwise_loss_backward_impl<double>(PointwiseLoss, const Tensor&, const Tensor&, double, const Tensor&,
                                                   double, const Tensor&, const Tensor&);

double pointwise_loss_forward(PointwiseLoss kind, const Tensor& input, const Tensor& target, double beta,
                              const Tensor& out) {
  return HMER_DISPATCH_FLOATING(input.dtype(), kind == PointwiseLoss::SmoothL1 ? "smooth_l1_loss" : "mse_loss", [&] {
    return pointwise_loss_forward_impl<scalar_t>(kind, input, target, beta, out);
  });
}

void pointwise_loss_backward(PointwiseLoss kind, const Tensor& input, const Tensor& target, double beta,
                             const Tensor& g, double scale, const Tensor& gi, const Tensor& gt) {
  const char* name = kind == PointwiseLoss::SmoothL1 ? "smooth_l1_loss_backward" : "mse_loss_backward";
  HMER_DISPATCH_FLOATING(input.dtype(), name, [&] {
    pointwise_loss_backward_impl<scalar_t>(kind, input, target, beta, g, scale, gi, gt);
  });
}

}  // namespace hmer::cpu
