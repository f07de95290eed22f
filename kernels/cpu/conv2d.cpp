#include "kernels/cpu/conv2d.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels/cpu/conv2d_3x3.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Output positions o in [lo, hi) read inside the input: 0 <= o * stride + off < in. Everything
// outside that range reads padding, so the hot loops below carry no per-element bounds checks.
struct Range {
  int64_t lo, hi;
};
Range valid_range(int64_t off, int64_t stride, int64_t in, int64_t out) {
  int64_t lo = off >= 0 ? 0 : ceil_div(-off, stride);
  int64_t hi = in - off > 0 ? ceil_div(in - off, stride) : 0;
  lo = std::min(lo, out);
  hi = std::max(lo, std::min(hi, out));
  return {lo, hi};
}

// One row of the column matrix: tap (i, j) of one input channel xc (H, W), written to row (OH*OW).
template <class T>
void im2col_tap(const Conv2dShape& s, const T* xc, T* row, int64_t i, int64_t j) {
  const int64_t L = s.OH * s.OW;
  const int64_t ioff = i * s.dh - s.ph;
  const Range rh = valid_range(ioff, s.sh, s.H, s.OH);
  const int64_t joff = j * s.dw - s.pw;
  const Range rw = valid_range(joff, s.sw, s.W, s.OW);
  std::fill(row, row + rh.lo * s.OW, T(0));
  for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
    T* r = row + oh * s.OW;
    const int64_t base = (oh * s.sh + ioff) * s.W + joff;  // input index of ow = 0
    std::fill(r, r + rw.lo, T(0));
    if (s.sw == 1) {
      std::copy(xc + base + rw.lo, xc + base + rw.hi, r + rw.lo);
    } else {
      for (int64_t ow = rw.lo; ow < rw.hi; ++ow) r[ow] = xc[base + ow * s.sw];
    }
    std::fill(r + rw.hi, r + s.OW, T(0));
  }
  std::fill(row + rh.hi * s.OW, row + L, T(0));
}

// col (C*kh*kw, OH*OW) rows of channels [c0, c1) from one image xi (C, H, W). With cbase and
// row_stride, channel cbase's first row is col's row 0 and rows lie row_stride apart (a block of
// columns inside a wider matrix).
template <class T>
void im2col(const Conv2dShape& s, const T* xi, T* col, int64_t c0, int64_t c1, int64_t cbase = 0,
            int64_t row_stride = 0) {
  const int64_t ld = row_stride > 0 ? row_stride : s.OH * s.OW;
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t i = 0; i < s.kh; ++i) {
      for (int64_t j = 0; j < s.kw; ++j) {
        im2col_tap(s, xi + c * s.H * s.W, col + (((c - cbase) * s.kh + i) * s.kw + j) * ld, i, j);
      }
    }
  }
}

// The same for rows [r0, r1) of the column matrix (channel-major, then taps): splits an image with
// fewer channels than threads (the stem's one-channel 7x7 conv at batch 1).
template <class T>
void im2col_rows(const Conv2dShape& s, const T* xi, T* col, int64_t r0, int64_t r1) {
  const int64_t taps = s.kh * s.kw, L = s.OH * s.OW;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r / taps, t = r % taps;
    im2col_tap(s, xi + c * s.H * s.W, col + r * L, t / s.kw, t % s.kw);
  }
}

// gxi (C, H, W) channels [c0, c1) = (or += with s.gx_accumulate) the adjoint of im2col applied to col.
template <class T>
void col2im(const Conv2dShape& s, const T* col, T* gxi, int64_t c0, int64_t c1) {
  const int64_t L = s.OH * s.OW;
  if (!s.gx_accumulate) std::fill(gxi + c0 * s.H * s.W, gxi + c1 * s.H * s.W, T(0));
  for (int64_t c = c0; c < c1; ++c) {
    T* gc = gxi + c * s.H * s.W;
    for (int64_t i = 0; i < s.kh; ++i) {
      const int64_t ioff = i * s.dh - s.ph;
      const Range rh = valid_range(ioff, s.sh, s.H, s.OH);
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t joff = j * s.dw - s.pw;
        const Range rw = valid_range(joff, s.sw, s.W, s.OW);
        const T* row = col + ((c * s.kh + i) * s.kw + j) * L;
        for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
          const T* r = row + oh * s.OW;
          const int64_t base = (oh * s.sh + ioff) * s.W + joff;
          for (int64_t ow = rw.lo; ow < rw.hi; ++ow) gc[base + ow * s.sw] += r[ow];
        }
      }
    }
  }
}

// Channels per im2col/col2im task when one image's columns are split across threads.
int64_t channel_grain(const Conv2dShape& s) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, s.kh * s.kw * s.OH * s.OW));
}

// Multiply-adds below which a thread's share of a batch is not worth an OpenMP fork (small convs,
// e.g. inside finite-difference checks, would spend their time waking threads).
constexpr int64_t kMinMacsPerPart = int64_t{1} << 20;

// A batch is split into this many contiguous parts, one per thread; each part runs im2col and
// single-threaded GEMMs on its own images (Eigen does not thread inside an OpenMP region). A fixed
// partition also fixes the order in which grad_weight's per-part sums are combined.
int64_t batch_parts(const Conv2dShape& s) {
  if (s.N < 2) return 1;
  const int64_t macs = s.N * s.O * s.col_rows() * s.col_cols();
  return std::clamp<int64_t>(macs / kMinMacsPerPart, 1, std::min<int64_t>(num_threads(), s.N));
}

// Columns per thread below which a single image's pointwise conv is not split.
constexpr int64_t kMinPointwiseColumns = 256;

template <class T>
std::unique_ptr<T[]> make_buffer(int64_t n) {
  return n > 0 ? std::unique_ptr<T[]>(new T[static_cast<size_t>(n)]) : nullptr;
}

std::atomic<bool> g_direct_3x3{true};

template <class T>
bool use_direct_3x3(const Conv2dShape& s) {
  return std::is_same_v<T, float> && g_direct_3x3.load(std::memory_order_relaxed) && !s.gx_accumulate &&
         s.gx_batch_stride == 0 && detail::conv3x3_direct_applies(s);
}

// grad_weight of a conv with many column rows (K = C*kh*kw) and few output positions per image: the
// counting head's 5x5 and 3x3 684 -> 512 convs (K 17,100 and 6,156, 210 positions at 120 x 480).
// Per image that is a GEMM with inner dimension L into the whole (O, K) gradient, once per image
// and again per thread part; here the images are side by side instead, so each chunk of channels
// is one GEMM with inner dimension N*L into its own columns of gw: no per-thread copies of gw, and
// one summation order whatever the thread count.
bool gw_by_channel_chunks(const Conv2dShape& s) {
  return !s.is_pointwise() && s.N > 1 && s.col_rows() >= 4096 && s.col_cols() <= 1024;
}

// Channels per chunk: about 512 column rows, so a chunk's columns of all images stay within L2.
int64_t gw_chunk_channels(const Conv2dShape& s) { return std::max<int64_t>(1, 512 / (s.kh * s.kw)); }

template <class T>
void weight_grad_by_channel_chunks(const Conv2dShape& s, const T* x, const T* gy, T* gw) {
  const int64_t K = s.col_rows(), L = s.col_cols(), NL = s.N * L, taps = s.kh * s.kw;
  // gy_all (O, N*L): image n's (O, L) block at columns [n*L, (n+1)*L).
  auto gy_all = make_buffer<T>(s.O * NL);
  parallel_for(s.O, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, NL)), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      for (int64_t n = 0; n < s.N; ++n) {
        const T* src = gy + (n * s.O + o) * L;
        std::copy(src, src + L, gy_all.get() + o * NL + n * L);
      }
    }
  });
  const int64_t chunk = gw_chunk_channels(s);
  const int64_t chunks = (s.C + chunk - 1) / chunk;
  parallel_for(chunks, 1, [&](int64_t b0, int64_t b1) {
    auto cols = make_buffer<T>(chunk * taps * NL);   // (chunk rows, N*L)
    auto part = make_buffer<T>(s.O * chunk * taps);  // (O, chunk rows)
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * chunk, c1 = std::min(s.C, c0 + chunk), rows = (c1 - c0) * taps;
      for (int64_t n = 0; n < s.N; ++n) im2col(s, x + n * s.x_image_stride(), cols.get() + n * L, c0, c1, c0, NL);
      gemm_raw<T>(gy_all.get(), false, cols.get(), true, part.get(), s.O, rows, NL, T(0));
      for (int64_t o = 0; o < s.O; ++o) {
        std::copy(part.get() + o * rows, part.get() + (o + 1) * rows, gw + o * K + c0 * taps);
      }
    }
  });
}

}  // namespace

void set_direct_conv3x3(bool enabled) { g_direct_3x3.store(enabled, std::memory_order_relaxed); }
bool direct_conv3x3_enabled() { return g_direct_3x3.load(std::memory_order_relaxed); }

template <class T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  if constexpr (std::is_same_v<T, float>) {
    if (use_direct_3x3<T>(s)) {
      detail::conv3x3_direct_forward(s, x, w, bias, y);
      return;
    }
  }
  const int64_t K = s.col_rows(), L = s.col_cols();
  const int64_t in_img = s.x_image_stride(), out_img = s.O * L;
  const bool pointwise = s.is_pointwise();
  // y[n] (O, L) = w (O, K) · col (K, L) [+ bias broadcast over L]
  auto gemm_image = [&](int64_t n, const T* cols) {
    T* yn = y + n * out_img;
    T beta = T(0);
    if (bias != nullptr) {
      for (int64_t o = 0; o < s.O; ++o) std::fill(yn + o * L, yn + (o + 1) * L, bias[o]);
      beta = T(1);
    }
    gemm_raw<T>(w, false, cols, false, yn, s.O, L, K, beta);
  };

  const int64_t parts = batch_parts(s);
  if (parts > 1) {
    parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
      auto col = make_buffer<T>(pointwise ? 0 : K * L);  // once per thread, reused for its images
      for (int64_t p = pb; p < pe; ++p) {
        for (int64_t n = p * s.N / parts; n < (p + 1) * s.N / parts; ++n) {
          const T* xn = x + n * in_img;
          if (!pointwise) im2col(s, xn, col.get(), 0, s.C);
          gemm_image(n, pointwise ? xn : col.get());
        }
      }
    });
    return;
  }
  // One image of a pointwise conv on several threads: each thread multiplies its own block of columns.
  // Eigen's own threading of this thin GEMM (O = 96 rows at batch 1, greedy decoding) gains little
  // from the second core.
  if (pointwise && num_threads() > 1 && L >= 2 * kMinPointwiseColumns && s.O * K * L >= 2 * kMinMacsPerPart) {
    for (int64_t n = 0; n < s.N; ++n) {
      const T* xn = x + n * in_img;
      T* yn = y + n * out_img;
      parallel_for(L, kMinPointwiseColumns, [&](int64_t l0, int64_t l1) {
        if (bias != nullptr) {
          for (int64_t o = 0; o < s.O; ++o) std::fill(yn + o * L + l0, yn + o * L + l1, bias[o]);
        }
        gemm_raw_ld<T>(w, K, false, xn + l0, L, false, yn + l0, L, s.O, l1 - l0, K, bias != nullptr);
      });
    }
    return;
  }
  // One image (or one thread): im2col splits channels, then Eigen threads the GEMM itself.
  auto col = make_buffer<T>(pointwise ? 0 : K * L);
  for (int64_t n = 0; n < s.N; ++n) {
    const T* xn = x + n * in_img;
    if (!pointwise && s.C < num_threads()) {
      parallel_for(K, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, L)),
                   [&](int64_t r0, int64_t r1) { im2col_rows(s, xn, col.get(), r0, r1); });
    } else if (!pointwise) {
      parallel_for(s.C, channel_grain(s), [&](int64_t c0, int64_t c1) { im2col(s, xn, col.get(), c0, c1); });
    }
    gemm_image(n, pointwise ? xn : col.get());
  }
}

template <class T>
void conv2d_backward(const Conv2dShape& s, const T* x, const T* w, const T* gy, T* gx, T* gw, T* gb) {
  const int64_t K = s.col_rows(), L = s.col_cols();
  const int64_t in_img = s.x_image_stride(), gx_img = s.gx_image_stride(), out_img = s.O * L;
  const bool pointwise = s.is_pointwise();

  if (gb != nullptr) {
    // Accumulate in double: N*OH*OW terms per channel.
    parallel_for(s.O, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, s.N * L)),
                 [&](int64_t o0, int64_t o1) {
                   for (int64_t o = o0; o < o1; ++o) {
                     double acc = 0.0;
                     for (int64_t n = 0; n < s.N; ++n) {
                       const T* r = gy + n * out_img + o * L;
                       for (int64_t l = 0; l < L; ++l) acc += static_cast<double>(r[l]);
                     }
                     gb[o] = static_cast<T>(acc);
                   }
                 });
  }
  if (gx == nullptr && gw == nullptr) return;
  if constexpr (std::is_same_v<T, float>) {
    if (use_direct_3x3<T>(s)) {
      detail::conv3x3_direct_backward(s, x, w, gy, gx, gw);
      return;
    }
  }

  // One image's share: gw_acc (O, K) (+)= gy[n] (O, L) · col(x[n])ᵀ; gx[n] = col2im(wᵀ (K, O) · gy[n]).
  // `col` is reused: first the input's columns for gw, then the columns' gradient for gx.
  auto image_backward = [&](int64_t n, T* col, T* gw_acc, bool first, bool split_channels) {
    const T* xn = x + n * in_img;
    const T* gyn = gy + n * out_img;
    T* gxn = gx != nullptr ? gx + n * gx_img : nullptr;
    auto over_channels = [&](const auto& f) {
      if (split_channels) parallel_for(s.C, channel_grain(s), f);
      else f(int64_t{0}, s.C);
    };
    if (gw_acc != nullptr) {
      const T beta = first ? T(0) : T(1);
      if (pointwise) {
        gemm_raw<T>(gyn, false, xn, true, gw_acc, s.O, K, L, beta);
      } else {
        over_channels([&](int64_t c0, int64_t c1) { im2col(s, xn, col, c0, c1); });
        gemm_raw<T>(gyn, false, col, true, gw_acc, s.O, K, L, beta);
      }
    }
    if (gxn != nullptr) {
      if (pointwise) {
        gemm_raw<T>(w, true, gyn, false, gxn, s.C, L, s.O, s.gx_accumulate ? T(1) : T(0));
      } else {
        gemm_raw<T>(w, true, gyn, false, col, K, L, s.O, T(0));
        over_channels([&](int64_t c0, int64_t c1) { col2im(s, col, gxn, c0, c1); });
      }
    }
  };

  if (s.N == 0) {
    if (gw != nullptr) std::fill(gw, gw + s.O * K, T(0));
    return;
  }
  if (gw != nullptr && gw_by_channel_chunks(s)) {
    // grad_x image by image below (gw not wanted there), then grad_weight in one pass.
    if (gx != nullptr) conv2d_backward<T>(s, x, w, gy, gx, nullptr, nullptr);
    weight_grad_by_channel_chunks(s, x, gy, gw);
    return;
  }
  const int64_t parts = batch_parts(s);
  if (parts == 1) {
    auto col = make_buffer<T>(pointwise ? 0 : K * L);
    for (int64_t n = 0; n < s.N; ++n) image_backward(n, col.get(), gw, n == 0, true);
    return;
  }
  // Part 0 accumulates straight into gw, the others into their own (O, K) buffers, summed after in
  // part order so the result does not depend on which thread ran which part.
  const int64_t wsize = s.O * K;
  auto partial = make_buffer<T>(gw != nullptr ? (parts - 1) * wsize : 0);
  parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
    auto col = make_buffer<T>(pointwise ? 0 : K * L);
    for (int64_t p = pb; p < pe; ++p) {
      T* acc = gw == nullptr ? nullptr : (p == 0 ? gw : partial.get() + (p - 1) * wsize);
      const int64_t n0 = p * s.N / parts, n1 = (p + 1) * s.N / parts;
      for (int64_t n = n0; n < n1; ++n) image_backward(n, col.get(), acc, n == n0, false);
    }
  });
  if (gw != nullptr) {
    parallel_for(wsize, kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t p = 1; p < parts; ++p) {
        const T* src = partial.get() + (p - 1) * wsize;
        for (int64_t i = b; i < e; ++i) gw[i] += src[i];
      }
    });
  }
}

template void conv2d_forward<float>(const Conv2dShape&, const float*, const float*, const float*, float*);
template void conv2d_forward<double>(const Conv2dShape&, const double*, const double*, const double*, double*);
template void conv2d_backward<float>(const Conv2dShape&, const float*, const float*, const float*, float*, float*,
                                     float*);
template void conv2d_backward<double>(const Conv2dShape&, const double*, const double*, const double*, double*,
                                      double*, double*);

void conv2d_forward(const Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  HMER_DISPATCH_FLOATING(x.dtype(), "conv2d", [&] {
    conv2d_forward<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                             bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>());
  });
}

void conv2d_backward(const Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& gy, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb) {
  HMER_DISPATCH_FLOATING(gy.dtype(), "conv2d_backward", [&] {
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    conv2d_backward<scalar_t>(s, ptr(x), ptr(w), gy.data_ptr<scalar_t>(), ptr(gx), ptr(gw), ptr(gb));
  });
}

}  // namespace hmer::cpu
