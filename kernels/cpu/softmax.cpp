#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

namespace {

// Columns of the inner axis handled together when D is not the last dimension: the loops then run
// along contiguous memory, with the per-column state on the stack.
constexpr int64_t kColumnBlock = 256;

int64_t row_grain(int64_t len) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(len, 1)); }

}  // namespace

template <class T>
void softmax_forward_impl(const T* xp, T* yp, int64_t outer, int64_t D, int64_t inner, bool log) {
  if (inner == 1) {
    parallel_for(outer, row_grain(D), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const T* x = xp + o * D;
        T* y = yp + o * D;
        T mx = x[0];
        for (int64_t d = 1; d < D; ++d) mx = std::max(mx, x[d]);
        double sum = 0.0;
        if (log) {
          for (int64_t d = 0; d < D; ++d) sum += static_cast<double>(std::exp(static_cast<T>(x[d] - mx)));
          const double shift = static_cast<double>(mx) + std::log(sum);
          for (int64_t d = 0; d < D; ++d) y[d] = static_cast<T>(static_cast<double>(x[d]) - shift);
        } else {
          for (int64_t d = 0; d < D; ++d) {
            y[d] = std::exp(static_cast<T>(x[d] - mx));
            sum += static_cast<double>(y[d]);
          }
          for (int64_t d = 0; d < D; ++d) y[d] = static_cast<T>(static_cast<double>(y[d]) / sum);
        }
      }
    });
    return;
  }
  const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
  parallel_for(outer * blocks, row_grain(D * std::min(inner, kColumnBlock)), [&](int64_t b, int64_t e) {
    T mx[kColumnBlock];
    double sum[kColumnBlock];
    for (int64_t w = b; w < e; ++w) {
      const int64_t o = w / blocks;
      const int64_t i0 = (w % blocks) * kColumnBlock;
      const int64_t n = std::min(kColumnBlock, inner - i0);
      const T* x = xp + o * D * inner + i0;
      T* y = yp + o * D * inner + i0;
      for (int64_t i = 0; i < n; ++i) {
        mx[i] = x[i];
        sum[i] = 0.0;
      }
      for (int64_t d = 1; d < D; ++d)
        for (int64_t i = 0; i < n; ++i) mx[i] = std::max(mx[i], x[d * inner + i]);
      for (int64_t d = 0; d < D; ++d) {
        for (int64_t i = 0; i < n; ++i) {
          const T ev = std::exp(static_cast<T>(x[d * inner + i] - mx[i]));
          if (!log) y[d * inner + i] = ev;
          sum[i] += static_cast<double>(ev);
        }
      }
      if (log) {
        for (int64_t i = 0; i < n; ++i) sum[i] = static_cast<double>(mx[i]) + std::log(sum[i]);  // now the shift
        for (int64_t d = 0; d < D; ++d)
          for (int64_t i = 0; i < n; ++i)
            y[d * inner + i] = static_cast<T>(static_cast<double>(x[d * inner + i]) - sum[i]);
      } else {
        for (int64_t d = 0; d < D; ++d)
          for (int64_t i = 0; i < n; ++i)
            y[d * inner + i] = static_cast<T>(static_cast<double>(y[d * inner + i]) / sum[i]);
      }
    }
  });
}
template void softmax_forward_impl<float>(const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax_forward_impl<double>(const double*, double*, int64_t, int64_t, int64_t, bool);

template <class T>
void softmax_backward_impl(const T* yp, const T* gp, T* gxp, int64_t outer, int64_t D, int64_t inner, bool log) {
  // Per column: r = Σ g⊙y (softmax) or Σ g (log_softmax); then the element-wise formula.
  auto grad = [log](T y, T g, double r) {
    return log ? static_cast<T>(static_cast<double>(g) - std::exp(static_cast<double>(y)) * r)
               : static_cast<T>(static_cast<double>(y) * (static_cast<double>(g) - r));
  };
  if (inner == 1) {
    parallel_for(outer, row_grain(D), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const T* y = yp + o * D;
        const T* g = gp + o * D;
        T* gx = gxp + o * D;
        double r = 0.0;
        for (int64_t d = 0; d < D; ++d) r += log ? static_cast<double>(g[d]) : static_cast<double>(g[d]) * y[d];
        for (int64_t d = 0; d < D; ++d) gx[d] = grad(y[d], g[d], r);
      }
    });
    return;
  }
  const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
  parallel_for(outer * blocks, row_grain(D * std::min(inner, kColumnBlock)), [&](int64_t b, int64_t e) {
    double r[kColumnBlock];
    for (int64_t w = b; w < e; ++w) {
      const int64_t o = w / blocks;
      const int64_t i0 = (w % blocks) * kColumnBlock;
      const int64_t n = std::min(kColumnBlock, inner - i0);
      const int64_t base = o * D * inner + i0;
      const T* y = yp + base;
      const T* g = gp + base;
      T* gx = gxp + base;
      for (int64_t i = 0; i < n; ++i) r[i] = 0.0;
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = d * inner + i;
          r[i] += log ? static_cast<double>(g[k]) : static_cast<double>(g[k]) * y[k];
        }
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = d * inner + i;
          gx[k] = grad(y[k], g[k], r[i]);
        }
    }
  });
}
template void softmax_backward_impl<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax_backward_impl<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, bool);

void softmax_forward(const Tensor& x, const Tensor& y, int64_t outer, int64_t D, int64_t inner, bool log) {
  HMER_DISPATCH_FLOATING(x.dtype(), log ? "log_softmax" : "softmax", [&] {
    softmax_forward_impl<scalar_t>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), outer, D, inner, log);
  });
}

void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& gx, int64_t outer, int64_t D, int64_t inner,
                      bool log) {
  HMER_DISPATCH_FLOATING(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&] {
    softmax_backward_impl<scalar_t>(y.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), outer,
                                    D, inner, log);
  });
}

}  // namespace hmer::cpu
