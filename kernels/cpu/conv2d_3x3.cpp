#include "kernels/cpu/conv2d_3x3.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/parallel.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace hmer::cpu::detail {

namespace {

// One SIMD register of floats. The multiply-adds are explicit FMAs where the CPU has them (as in
// Eigen's GEMM, which the im2col path uses); the portable fallback multiplies and adds.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
using vf = __m512;
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline vf vset1(float a) { return _mm512_set1_ps(a); }
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kLanes = 8;
using vf = __m256;
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline vf vset1(float a) { return _mm256_set1_ps(a); }
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
#else
constexpr int64_t kLanes = 4;
typedef float vf __attribute__((vector_size(16)));
inline vf vload(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf vset1(float a) { return vf{a, a, a, a}; }
inline vf vzero() { return vf{0, 0, 0, 0}; }
inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
inline vf vadd(vf a, vf b) { return a + b; }
#endif

// Lanes summed in a fixed order (lane 0 first), whatever the ISA's own reduction would do.
inline float vsum(vf v) {
  float t[kLanes];
  vstore(t, v);
  float s = 0.0f;
  for (int64_t l = 0; l < kLanes; ++l) s += t[l];
  return s;
}

// Register blocking of the forward kernel: kFwdOut output channels x kFwdVecs vectors of one output
// row = 24 accumulators, which with the 2 input vectors and 1 broadcast weight fit AVX-512's 32
// registers; per (channel, tap) 14 loads feed 24 FMAs.
constexpr int kFwdOut = 12;
constexpr int kFwdVecs = 2;
constexpr int64_t kGroup = kFwdVecs * kLanes;  // output columns per inner-loop pass
// The weight gradient's blocking: kGwOut output channels x the 3 horizontal taps = 24 accumulators.
constexpr int kGwOut = 8;
// Input channels per weight-gradient task, and the bytes of gy one band of rows may span.
constexpr int64_t kGwChannels = 8;
constexpr int64_t kGwBandBytes = 24 * 1024;

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// A zero-padded copy of a (C, H, W) image: row r, column q hold x[r - 1][q - 1], zeros around, and
// each row runs on past W + 1 (zeros) so the kernels read whole vectors at any output column.
struct PaddedPlanes {
  int64_t channels, rows, row_stride;
  int64_t plane() const { return rows * row_stride; }
  int64_t image() const { return channels * plane(); }
};

PaddedPlanes padded_planes(int64_t C, int64_t H, int64_t W) { return {C, H + 2, round_up(W, kGroup) + 2}; }

// One output row of kFwdOut channels: out[k][ow] = bias[k] + sum over c, i, j of
// wt[(c * 9 + i * 3 + j) * kFwdOut + k] * xp[c][oh + i][ow + j]. Rows of out[k] that are null (the
// block's channels past the real count) are not stored.
void forward_row(const float* xp, const PaddedPlanes& p, const float* wt, const float* bias, int64_t oh, int64_t OW,
                 float* const* out) {
  for (int64_t g = 0; g < OW; g += kGroup) {
    vf acc[kFwdOut][kFwdVecs];
    for (auto& a : acc) {
      for (auto& v : a) v = vzero();
    }
    for (int64_t c = 0; c < p.channels; ++c) {
      for (int64_t i = 0; i < 3; ++i) {
        const float* xr = xp + c * p.plane() + (oh + i) * p.row_stride + g;
        const float* wr = wt + (c * 9 + i * 3) * kFwdOut;
        for (int64_t j = 0; j < 3; ++j) {
          vf xv[kFwdVecs];
          for (int v = 0; v < kFwdVecs; ++v) xv[v] = vload(xr + j + v * kLanes);
#pragma GCC unroll 12
          for (int k = 0; k < kFwdOut; ++k) {
            const vf wk = vset1(wr[j * kFwdOut + k]);
            for (int v = 0; v < kFwdVecs; ++v) acc[k][v] = vfma(wk, xv[v], acc[k][v]);
          }
        }
      }
    }
    for (int k = 0; k < kFwdOut; ++k) {
      if (out[k] == nullptr) continue;
      const vf b = vset1(bias != nullptr ? bias[k] : 0.0f);
      for (int v = 0; v < kFwdVecs; ++v) {
        const int64_t col = g + v * kLanes;
        if (col >= OW) break;
        const vf r = bias != nullptr ? vadd(acc[k][v], b) : acc[k][v];
        if (col + kLanes <= OW) {
          vstore(out[k] + col, r);
        } else {
          float t[kLanes];
          vstore(t, r);
          std::copy(t, t + (OW - col), out[k] + col);
        }
      }
    }
  }
}

template <class T>
std::unique_ptr<T[]> buffer(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// Weights as (output blocks, input channels, 3, 3, kFwdOut), zero past the real outputs, so one
// broadcast after another walks memory in order; tap(o, c, t) is output o's weight for input c, tap t.
template <class Tap>
std::unique_ptr<float[]> blocked_weights(int64_t outs, int64_t ins, const Tap& tap) {
  const int64_t blocks = (outs + kFwdOut - 1) / kFwdOut;
  auto wt = buffer<float>(blocks * ins * 9 * kFwdOut);
  for (int64_t ob = 0; ob < blocks; ++ob) {
    for (int64_t c = 0; c < ins; ++c) {
      for (int64_t t = 0; t < 9; ++t) {
        for (int k = 0; k < kFwdOut; ++k) {
          const int64_t o = ob * kFwdOut + k;
          wt[((ob * ins + c) * 9 + t) * kFwdOut + k] = o < outs ? tap(o, c, t) : 0.0f;
        }
      }
    }
  }
  return wt;
}

// Padded rows [first, first + count) of one (H, W) plane into dst (rows row_stride apart): padded
// row r holds input row r - 1 between zero columns, rows outside the input are zeros.
void pad_rows(const float* plane, int64_t H, int64_t W, int64_t first, int64_t count, float* dst,
              int64_t row_stride) {
  for (int64_t r = 0; r < count; ++r) {
    float* dr = dst + r * row_stride;
    const int64_t h = first + r - 1;
    if (h < 0 || h >= H) {
      std::fill(dr, dr + row_stride, 0.0f);
      continue;
    }
    dr[0] = 0.0f;
    std::copy(plane + h * W, plane + (h + 1) * W, dr + 1);
    std::fill(dr + 1 + W, dr + row_stride, 0.0f);
  }
}

// Output rows per task of forward_unpadded: its padded input rows (R + 2 per channel, ~0.5 MB for
// 96 channels at 30 x 120) stay in L2 between the copy and the kernel.
constexpr int64_t kRowsPerTask = 8;

// y (N, O, H, W) = the 3x3 conv of the images x (N, C, H, W; images x_stride apart) with weights wt
// laid out by blocked_weights [+ bias]. One task per (image, block of kRowsPerTask output rows): it
// pads the input rows it reads into a buffer of its own, so the padded copy is written to cache
// instead of to memory and read back (one pass over the input less).
void forward_unpadded(const float* x, int64_t x_stride, int64_t N, int64_t C, int64_t H, int64_t W, const float* wt,
                      const float* bias, int64_t O, float* y) {
  const int64_t blocks = (O + kFwdOut - 1) / kFwdOut;
  const int64_t row_blocks = (H + kRowsPerTask - 1) / kRowsPerTask;
  const PaddedPlanes full = padded_planes(C, H, W);
  const int64_t tasks = N * row_blocks;
  parallel_for(tasks, 1, [&](int64_t t0, int64_t t1) {
    const PaddedPlanes local{C, kRowsPerTask + 2, full.row_stride};
    std::unique_ptr<float[]> xp(new float[static_cast<size_t>(local.image())]);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / row_blocks, oh0 = (t % row_blocks) * kRowsPerTask;
      const int64_t rows = std::min(kRowsPerTask, H - oh0);
      // local row r holds padded row oh0 + r, i.e. input row oh0 + r - 1
      for (int64_t c = 0; c < C; ++c) {
        float* d = xp.get() + c * local.plane();
        const float* src = x + n * x_stride + c * H * W;
        pad_rows(src, H, W, oh0, rows + 2, d, local.row_stride);
      }
      for (int64_t ob = 0; ob < blocks; ++ob) {
        for (int64_t r = 0; r < rows; ++r) {
          float* out[kFwdOut];
          for (int k = 0; k < kFwdOut; ++k) {
            const int64_t o = ob * kFwdOut + k;
            out[k] = o < O ? y + ((n * O + o) * H + oh0 + r) * W : nullptr;
          }
          forward_row(xp.get(), local, wt + ob * C * 9 * kFwdOut, bias != nullptr ? bias + ob * kFwdOut : nullptr, r,
                      W, out);
        }
      }
    }
  });
}

}  // namespace

bool conv3x3_direct_applies(const Conv2dShape& s) {
  return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.ph == 1 && s.pw == 1 && s.dh == 1 && s.dw == 1 &&
         s.O <= 64 && s.N > 0 && s.C > 0 && s.H > 0 && s.W > 0;
}

void conv3x3_direct_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
  const auto wt = blocked_weights(s.O, s.C, [&](int64_t o, int64_t c, int64_t t) { return w[(o * s.C + c) * 9 + t]; });
  forward_unpadded(x, s.x_image_stride(), s.N, s.C, s.H, s.W, wt.get(), bias, s.O, y);
}

void conv3x3_direct_backward(const Conv2dShape& s, const float* x, const float* w, const float* gy, float* gx,
                             float* gw) {
  if (gx != nullptr) {
    // gx[c][h][w] = sum over o, i, j of w[o][c][2 - i][2 - j] * gy padded [o][h + i][w + j]: the
    // forward kernel with the roles of the channels swapped and the taps flipped.
    const auto wt =
        blocked_weights(s.C, s.O, [&](int64_t c, int64_t o, int64_t t) { return w[(o * s.C + c) * 9 + (8 - t)]; });
    forward_unpadded(gy, s.O * s.H * s.W, s.N, s.O, s.H, s.W, wt.get(), nullptr, s.C, gx);
  }

  if (gw != nullptr) {
    // gy with its rows on 64-byte boundaries, zeros past W to the next whole vector (the kernel reads
    // whole vectors) and channels rounded up to the weight gradient's block with zero planes.
    const int64_t g_stride = round_up(s.W, kLanes), g_plane = s.H * g_stride, g_outs = round_up(s.O, kGwOut);
    auto gyp = aligned_floats(s.N * g_outs * g_plane);
    parallel_for(s.N * g_outs, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        float* dst = gyp.get() + p * g_plane;
        const int64_t n = p / g_outs, o = p % g_outs;
        if (o >= s.O) {
          std::fill(dst, dst + g_plane, 0.0f);
          continue;
        }
        for (int64_t h = 0; h < s.H; ++h) {
          const float* src = gy + (n * s.O + o) * s.H * s.W + h * s.W;
          std::copy(src, src + s.W, dst + h * g_stride);
          std::fill(dst + h * g_stride + s.W, dst + (h + 1) * g_stride, 0.0f);
        }
      }
    });
    // gw[o][c][i][j] = sum over n, h, w of gy[n][o][h][w] * xp[n][c][h + i][w + j]. One task per block
    // of input channels, so each gw entry has one owner and one summation order (per lane: image,
    // row, column; lanes summed at the end) whatever the thread count. Rows go in bands small enough
    // that one output block's gy over the band stays in L1 while every (channel, tap row) of the task
    // passes over it (from L2 the 11 loads per 24 FMAs would starve the FMAs); the accumulators wait
    // in a per-task buffer between bands.
    const int64_t blocks = g_outs / kGwOut;
    const int64_t band = std::max<int64_t>(1, kGwBandBytes / (kGwOut * g_stride * int64_t{sizeof(float)}));
    const int64_t cblocks = (s.C + kGwChannels - 1) / kGwChannels;
    parallel_for(cblocks, 1, [&](int64_t b0, int64_t b1) {
      // (channel in block, tap row, output block, k, tap column) vectors
      auto acc_buf = buffer<vf>(kGwChannels * 3 * blocks * kGwOut * 3);
      // The block's input rows of one band, padded (local row r = padded row h0 + r): written to
      // cache here rather than a padded copy of the whole input to memory.
      // Rows a whole vector wider than gy's (the taps read two columns past them), aligned like gy's.
      const PaddedPlanes px{kGwChannels, band + 2, g_stride + kLanes};
      auto xl = aligned_floats(px.image());
      for (int64_t cb = b0; cb < b1; ++cb) {
        const int64_t c0 = cb * kGwChannels, c1 = std::min(s.C, c0 + kGwChannels);
        std::fill(acc_buf.get(), acc_buf.get() + kGwChannels * 3 * blocks * kGwOut * 3, vzero());
        for (int64_t n = 0; n < s.N; ++n) {
          for (int64_t h0 = 0; h0 < s.H; h0 += band) {
            const int64_t h1 = std::min(s.H, h0 + band);
            for (int64_t c = c0; c < c1; ++c) {
              const float* src = x + n * s.x_image_stride() + c * s.H * s.W;
              pad_rows(src, s.H, s.W, h0, h1 - h0 + 2, xl.get() + (c - c0) * px.plane(), px.row_stride);
            }
            for (int64_t ob = 0; ob < blocks; ++ob) {
              for (int64_t c = c0; c < c1; ++c) {
                for (int64_t i = 0; i < 3; ++i) {
                  vf* slot = acc_buf.get() + (((c - c0) * 3 + i) * blocks + ob) * kGwOut * 3;
                  vf acc[kGwOut][3];
                  for (int k = 0; k < kGwOut; ++k) {
                    for (int j = 0; j < 3; ++j) acc[k][j] = slot[k * 3 + j];
                  }
                  for (int64_t h = h0; h < h1; ++h) {
                    const float* xr = xl.get() + (c - c0) * px.plane() + (h - h0 + i) * px.row_stride;
                    const float* gr = gyp.get() + (n * g_outs + ob * kGwOut) * g_plane + h * g_stride;
                    // Lanes past W read gy's zeros, so they add nothing.
                    for (int64_t col = 0; col < s.W; col += kLanes) {
                      const vf x0 = vload(xr + col), x1 = vload(xr + col + 1), x2 = vload(xr + col + 2);
#pragma GCC unroll 8
                      for (int k = 0; k < kGwOut; ++k) {
                        const vf g = vload(gr + k * g_plane + col);
                        acc[k][0] = vfma(g, x0, acc[k][0]);
                        acc[k][1] = vfma(g, x1, acc[k][1]);
                        acc[k][2] = vfma(g, x2, acc[k][2]);
                      }
                    }
                  }
                  for (int k = 0; k < kGwOut; ++k) {
                    for (int j = 0; j < 3; ++j) slot[k * 3 + j] = acc[k][j];
                  }
                }
              }
            }
          }
        }
        for (int64_t c = c0; c < c1; ++c) {
          for (int64_t i = 0; i < 3; ++i) {
            for (int64_t ob = 0; ob < blocks; ++ob) {
              const vf* slot = acc_buf.get() + (((c - c0) * 3 + i) * blocks + ob) * kGwOut * 3;
              for (int k = 0; k < kGwOut; ++k) {
                const int64_t o = ob * kGwOut + k;
                if (o >= s.O) break;
                for (int64_t j = 0; j < 3; ++j) gw[((o * s.C + c) * 3 + i) * 3 + j] = vsum(slot[k * 3 + j]);
              }
            }
          }
        }
      }
    });
  }
}

}  // namespace hmer::cpu::detail
