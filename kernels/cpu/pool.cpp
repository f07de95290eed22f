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

// 2x2 windows at stride 2 without padding (CAN's DenseNet pools, ceil mode or not): the outputs
// whose window lies wholly inside the input, [0, full_h) x [0, full_w). The general loops recompute
// every window's bounds per output, about 6 ns per output here; the few outputs of a ceil-mode
// border take the general path (as every output does for other pools: an empty region).
struct Full2x2 {
  int64_t full_h, full_w;
};
Full2x2 full_2x2(const Pool2dShape& s) {
  const bool applies = s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0;
  return {applies ? std::min(s.OH, s.H / 2) : 0, applies ? std::min(s.OW, s.W / 2) : 0};
}

}  // namespace

template <class T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* indices) {
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  const Full2x2 f = full_2x2(s);
  parallel_for(s.N * s.C, plane_grain(s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * in_plane;
      T* yp = y + p * out_plane;
      int64_t* ip = indices + p * out_plane;
      // First maximum wins; a NaN always does, as in PyTorch.
      auto window = [&](int64_t oh, int64_t ow) {
        const int64_t h0 = std::max<int64_t>(oh * s.sh - s.ph, 0);
        const int64_t h1 = std::min(oh * s.sh - s.ph + s.kh, s.H);
        const int64_t w0 = std::max<int64_t>(ow * s.sw - s.pw, 0);
        const int64_t w1 = std::min(ow * s.sw - s.pw + s.kw, s.W);
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_i = h0 * s.W + w0;
        for (int64_t ih = h0; ih < h1; ++ih) {
          for (int64_t iw = w0; iw < w1; ++iw) {
            const int64_t i = ih * s.W + iw;
            const T v = xp[i];
            if (v > best || v != v) {
              best = v;
              best_i = i;
            }
          }
        }
        yp[oh * s.OW + ow] = best;
        ip[oh * s.OW + ow] = best_i;
      };
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        int64_t ow = 0;
        if (oh < f.full_h) {
          const int64_t r0 = 2 * oh * s.W, r1 = r0 + s.W;
          for (; ow < f.full_w; ++ow) {
            // The general loop's visiting order (a, b, then c, d) and test, without its bounds.
            const int64_t ia = r0 + 2 * ow, ic = r1 + 2 * ow;
            T best = xp[ia];
            int64_t best_i = ia;
            const T b = xp[ia + 1], c = xp[ic], d = xp[ic + 1];
            if (b > best || b != b) best = b, best_i = ia + 1;
            if (c > best || c != c) best = c, best_i = ic;
            if (d > best || d != d) best = d, best_i = ic + 1;
            yp[oh * s.OW + ow] = best;
            ip[oh * s.OW + ow] = best_i;
          }
        }
        for (; ow < s.OW; ++ow) window(oh, ow);
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
  const Full2x2 f = full_2x2(s);
  parallel_for(s.N * s.C, plane_grain(s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * in_plane;
      T* yp = y + p * out_plane;
      auto window = [&](int64_t oh, int64_t ow) {
        const Window win = avg_window(s, oh, ow);
        if (win.h0 >= win.h1 || win.w0 >= win.w1) {
          yp[oh * s.OW + ow] = T(0);
          return;
        }
        // Summed in the input's dtype in row-major order, then divided, as PyTorch's CPU kernel.
        T acc = T(0);
        for (int64_t ih = win.h0; ih < win.h1; ++ih)
          for (int64_t iw = win.w0; iw < win.w1; ++iw) acc += xp[ih * s.W + iw];
        yp[oh * s.OW + ow] = acc / static_cast<T>(win.divisor);
      };
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        int64_t ow = 0;
        if (oh < f.full_h) {
          const T* r0 = xp + 2 * oh * s.W;
          const T* r1 = r0 + s.W;
          T* yr = yp + oh * s.OW;
          // The general sum term by term, from the same T(0) (0 + -0 is +0), over a whole window.
          for (; ow < f.full_w; ++ow)
            yr[ow] = ((((T(0) + r0[2 * ow]) + r0[2 * ow + 1]) + r1[2 * ow]) + r1[2 * ow + 1]) / T(4);
        }
        for (; ow < s.OW; ++ow) window(oh, ow);
      }
    }
  });
}

template <class T>
void avg_pool2d_backward(const Pool2dShape& s, const T* gy, T* gx) {
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  const Full2x2 f = full_2x2(s);
  parallel_for(s.N * s.C, plane_grain(s), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* gxp = gx + p * in_plane;
      const T* gyp = gy + p * out_plane;
      std::fill(gxp, gxp + in_plane, T(0));
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        int64_t ow = 0;
        if (oh < f.full_h) {
          // Full windows never overlap at stride 2: each input gets 0 + g/4, as the general loop adds it.
          T* r0 = gxp + 2 * oh * s.W;
          T* r1 = r0 + s.W;
          const T* gr = gyp + oh * s.OW;
          for (; ow < f.full_w; ++ow) {
            const T g = T(0) + gr[ow] / T(4);
            r0[2 * ow] = g;
            r0[2 * ow + 1] = g;
            r1[2 * ow] = g;
            r1[2 * ow + 1] = g;
          }
        }
        for (; ow < s.OW; ++ow) {
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
