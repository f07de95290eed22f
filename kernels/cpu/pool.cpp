#include "kernels/cpu/pool.h"

#include <algorithm>
#include <limits>

#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

namespace {

// Planes (one (n, c) image channel each) per thread task: a plane costs about H*W reads.
int64_t plane_grain(const Pool2dShape& s) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, s.H * s.W));
}

// The in-input part [h0, h1) x [w0, w1) of output (oh, ow)'s window, and its averaging divisor.
struct Window {
  int64_t h0, h1, w0, w1;
  int64_t divisor;
};

Window avg_window(const Pool2dShape& s, int64_t oh, int64_t ow) {
  int64_t h0 = oh * s.sh - s.ph, w0 = ow * s.sw - s.pw;
  // PyTorch: the window is first clipped to the padded input [-p, size + p); its area there is the
  // count_include_pad divisor, so a ceil-mode window hanging past the right padding counts only
  // the part inside it.
  int64_t h1 = std::min(h0 + s.kh, s.H + s.ph), w1 = std::min(w0 + s.kw, s.W + s.pw);
  const int64_t padded_area = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, s.H);
  w1 = std::min(w1, s.W);
  const int64_t real_area = std::max<int64_t>(0, h1 - h0) * std::max<int64_t>(0, w1 - w0);
  return {h0, h1, w0, w1, s.count_include_pad ? padded_area : real_area};
}

}  // namespace

template <class T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* indices) {
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  parallel_for(s.N * s.C, plane_grain(s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * in_plane;
      T* yp = y + p * out_plane;
      int64_t* ip = indices + p * out_plane;
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        const int64_t h0 = std::max<int64_t>(oh * s.sh - s.ph, 0);
        const int64_t h1 = std::min(oh * s.sh - s.ph + s.kh, s.H);
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const int64_t w0 = std::max<int64_t>(ow * s.sw - s.pw, 0);
          const int64_t w1 = std::min(ow * s.sw - s.pw + s.kw, s.W);
          T best = -std::numeric_limits<T>::infinity();
          int64_t best_i = h0 * s.W + w0;
          for (int64_t ih = h0; ih < h1; ++ih) {
            for (int64_t iw = w0; iw < w1; ++iw) {
              const int64_t i = ih * s.W + iw;
              const T v = xp[i];
              // First maximum wins; a NaN always does, as in PyTorch.
              if (v > best || v != v) {
                best = v;
                best_i = i;
              }
            }
          }
          yp[oh * s.OW + ow] = best;
          ip[oh * s.OW + ow] = best_i;
        }
      }
    }
  });
}

template <class T>
void max_pool2d_backward(const Pool2dShape& s, const T* gy, const int64_t* indices, T* gx) {
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  // Windows overlap only within a plane, so planes scatter independently.
  parallel_for(s.N * s.C, plane_grain(s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* gxp = gx + p * in_plane;
      const T* gyp = gy + p * out_plane;
      const int64_t* ip = indices + p * out_plane;
      std::fill(gxp, gxp + in_plane, T(0));
      for (int64_t o = 0; o < out_plane; ++o) gxp[ip[o]] += gyp[o];
    }
  });
}

template <class T>
void avg_pool2d_forward(const Pool2dShape& s, const T* x, T* y) {
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  parallel_for(s.N * s.C, plane_grain(s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * in_plane;
      T* yp = y + p * out_plane;
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const Window win = avg_window(s, oh, ow);
          if (win.h0 >= win.h1 || win.w0 >= win.w1) {
            yp[oh * s.OW + ow] = T(0);
            continue;
          }
          // Summed in the input's dtype in row-major order, then divided, as PyTorch's CPU kernel.
          T acc = T(0);
          for (int64_t ih = win.h0; ih < win.h1; ++ih)
            for (int64_t iw = win.w0; iw < win.w1; ++iw) acc += xp[ih * s.W + iw];
          yp[oh * s.OW + ow] = acc / static_cast<T>(win.divisor);
        }
      }
    }
  });
}

template <class T>
void avg_pool2d_backward(const Pool2dShape& s, const T* gy, T* gx) {
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  parallel_for(s.N * s.C, plane_grain(s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* gxp = gx + p * in_plane;
      const T* gyp = gy + p * out_plane;
      std::fill(gxp, gxp + in_plane, T(0));
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const Window win = avg_window(s, oh, ow);
          if (win.h0 >= win.h1 || win.w0 >= win.w1) continue;
          const T g = gyp[oh * s.OW + ow] / static_cast<T>(win.divisor);
          for (int64_t ih = win.h0; ih < win.h1; ++ih)
            for (int64_t iw = win.w0; iw < win.w1; ++iw) gxp[ih * s.W + iw] += g;
        }
      }
    }
  });
}

#define HMER_POOL_INSTANTIATE(T)                                                                  \
  template void max_pool2d_forward<T>(const Pool2dShape&, const T*, T*, int64_t*);                \
  template void max_pool2d_backward<T>(const Pool2dShape&, const T*, const int64_t*, T*);         \
  template void avg_pool2d_forward<T>(const Pool2dShape&, const T*, T*);                          \
  template void avg_pool2d_backward<T>(const Pool2dShape&, const T*, T*);
HMER_POOL_INSTANTIATE(float)
HMER_POOL_INSTANTIATE(double)
#undef HMER_POOL_INSTANTIATE

void max_pool2d_forward(const Pool2dShape& s, const Tensor& x, const Tensor& y, const Tensor& indices) {
  HMER_DISPATCH_FLOATING(x.dtype(), "max_pool2d", [&] {
    max_pool2d_forward<scalar_t>(s, x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), indices.data_ptr<int64_t>());
  });
}

void max_pool2d_backward(const Pool2dShape& s, const Tensor& gy, const Tensor& indices, const Tensor& gx) {
  HMER_DISPATCH_FLOATING(gy.dtype(), "max_pool2d_backward", [&] {
    max_pool2d_backward<scalar_t>(s, gy.data_ptr<scalar_t>(), indices.data_ptr<int64_t>(), gx.data_ptr<scalar_t>());
  });
}

void avg_pool2d_forward(const Pool2dShape& s, const Tensor& x, const Tensor& y) {
  HMER_DISPATCH_FLOATING(x.dtype(), "avg_pool2d", [&] {
    avg_pool2d_forward<scalar_t>(s, x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
}

void avg_pool2d_backward(const Pool2dShape& s, const Tensor& gy, const Tensor& gx) {
  HMER_DISPATCH_FLOATING(gy.dtype(), "avg_pool2d_backward", [&] {
    avg_pool2d_backward<scalar_t>(s, gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>());
  });
}

}  // namespace hmer::cpu
