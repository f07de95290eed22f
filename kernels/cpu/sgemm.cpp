#include "kernels/cpu/sgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/parallel.h"

// Only the functions marked HMER_AVX512 are compiled for AVX-512; they run only after
// sgemm_available() said yes. (A whole translation unit built with -mavx512f could leak AVX-512
// code into inline functions the linker then shares with the rest of the program.)
#define HMER_AVX512 __attribute__((target("avx512f,avx2,fma")))

// GCC 12 reports the unpack intrinsics' own "undefined" pass-through operand (__Y in
// avx512fintrin.h) as maybe uninitialised once they are inlined here: a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace hmer::cpu {

namespace {

// Register tile: 12 rows x 32 columns of c = 24 zmm accumulators; per k, 2 loads of B and 12
// broadcasts of A feed 24 FMAs (the two FMA ports stay the bottleneck, not the loads).
constexpr int64_t kMR = 12, kNR = 32;
// Depth of one packed block: an A micro-panel (12 x kKC floats, 12 KiB) stays in L1 while the
// packed B block (kKC x kNC, 512 KiB) streams past it from L2; rows of A are packed kMC at a time.
// Chosen by timing CAN's GEMM shapes on 1 and 2 threads (docs/performance.md). kKC also fixes
// the order of every sum over k, so it must not depend on the thread count.
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 240;
constexpr int64_t kNC = 512;
// Multiply-adds below which a product stays on the calling thread.
constexpr int64_t kMinParallelMacs = int64_t{1} << 22;

std::atomic<bool> g_enabled{true};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// A per-thread buffer of at least n floats, 64-byte aligned, kept between calls.
float* scratch(AlignedFloats& buf, int64_t& capacity, int64_t n) {
  if (n > capacity) {
    buf = aligned_floats(round_up(n, 16));
    capacity = round_up(n, 16);
  }
  return buf.get();
}

struct Problem {
  int64_t M, N, K;
  const float* a;
  int64_t a_rs, a_cs;
  const float* b;
  int64_t b_rs, b_cs;
  float* c;
  int64_t ldc;
  bool accumulate;
};

// The 16 x 16 floats r[0..15] transposed in registers: afterwards r[c] holds column c.
HMER_AVX512 inline void transpose16(__m512 (&r)[16]) {
  __m512 a[16], b[16];
  for (int j = 0; j < 8; ++j) {
    a[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
    a[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512d lo = _mm512_castps_pd(a[4 * j]), lo2 = _mm512_castps_pd(a[4 * j + 2]);
    const __m512d hi = _mm512_castps_pd(a[4 * j + 1]), hi2 = _mm512_castps_pd(a[4 * j + 3]);
    b[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
    b[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
    b[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
    b[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
  }
  // b[4j + e], 128-bit lane L: column 4L + e of rows 4j..4j+3.
  for (int e = 0; e < 4; ++e) {
    const __m512 x0 = _mm512_shuffle_f32x4(b[e], b[4 + e], 0x88), x1 = _mm512_shuffle_f32x4(b[e], b[4 + e], 0xDD);
    const __m512 y0 = _mm512_shuffle_f32x4(b[8 + e], b[12 + e], 0x88);
    const __m512 y1 = _mm512_shuffle_f32x4(b[8 + e], b[12 + e], 0xDD);
    r[e] = _mm512_shuffle_f32x4(x0, y0, 0x88);
    r[4 + e] = _mm512_shuffle_f32x4(x1, y1, 0x88);
    r[8 + e] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
    r[12 + e] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
  }
}

// Rows [i0, i0 + rows) and depth [k0, k0 + kc) of A as panels of kMR rows: panel p holds
// element (i0 + p·kMR + i, k0 + k) at p·kMR·kc + k·kMR + i, rows past M as zeros. Row-major A
// goes through 16 x 16 register transposes, column-major A is a copy of kMR floats per k.
HMER_AVX512 void pack_a(const Problem& pr, int64_t i0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
  constexpr __mmask16 kPanelMask = (1u << kMR) - 1u;
  for (int64_t p = 0; p * kMR < rows; ++p) {
    float* d = dst + p * kMR * kc;
    const int64_t row0 = i0 + p * kMR;
    const int64_t valid = std::min(kMR, pr.M - row0);
    if (pr.a_rs == 1) {
      const __mmask16 m = static_cast<__mmask16>((1u << valid) - 1u);
      for (int64_t k = 0; k < kc; ++k) {
        _mm512_mask_storeu_ps(d + k * kMR, kPanelMask,
                              _mm512_maskz_loadu_ps(m, pr.a + row0 + (k0 + k) * pr.a_cs));
      }
      continue;
    }
    if (pr.a_cs == 1) {
      int64_t k = 0;
      for (; k + 16 <= kc; k += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) {
          r[i] = i < valid ? _mm512_loadu_ps(pr.a + (row0 + i) * pr.a_rs + k0 + k) : _mm512_setzero_ps();
        }
        transpose16(r);
        for (int c = 0; c < 16; ++c) _mm512_mask_storeu_ps(d + (k + c) * kMR, kPanelMask, r[c]);
      }
      for (; k < kc; ++k) {
        for (int64_t i = 0; i < kMR; ++i) d[k * kMR + i] = i < valid ? pr.a[(row0 + i) * pr.a_rs + k0 + k] : 0.0f;
      }
      continue;
    }
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t i = 0; i < kMR; ++i) {
        d[k * kMR + i] = i < valid ? pr.a[(row0 + i) * pr.a_rs + (k0 + k) * pr.a_cs] : 0.0f;
      }
    }
  }
}

// B's block at depth [k0, k0 + kc) and columns [j0, j0 + nc), as micro-panels
// of kNR columns: element (k0 + k, j0 + q·kNR + j) at q·kNR·kc + k·kNR + j of dst, columns past N as
// zeros. Row-major B is read row by row (one sweep along memory; panel by panel it would touch a
// new page per row), transposed B column by column.
HMER_AVX512 void pack_b(const Problem& pr, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  const int64_t npanels = (nc + kNR - 1) / kNR;
  if (pr.b_cs == 1) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = pr.b + (k0 + k) * pr.b_rs + j0;
      for (int64_t q = 0; q < npanels; ++q) {
        const int64_t width = std::min(kNR, nc - q * kNR);
        float* d = dst + q * kNR * kc + k * kNR;
        if (width == kNR) {
          _mm512_store_ps(d, _mm512_loadu_ps(src + q * kNR));
          _mm512_store_ps(d + 16, _mm512_loadu_ps(src + q * kNR + 16));
        } else {
          const __mmask16 m0 = static_cast<__mmask16>(width >= 16 ? 0xFFFF : (1u << width) - 1u);
          const __mmask16 m1 = static_cast<__mmask16>(width > 16 ? (1u << (width - 16)) - 1u : 0u);
          _mm512_store_ps(d, _mm512_maskz_loadu_ps(m0, src + q * kNR));
          _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(m1, src + q * kNR + 16));
        }
      }
    }
    return;
  }
  if (pr.b_rs == 1) {
    // Transposed B (column j contiguous along k): 16 x 16 register transposes.
    for (int64_t q = 0; q < npanels; ++q) {
      float* d = dst + q * kNR * kc;
      for (int64_t half = 0; half < kNR; half += 16) {
        const int64_t col0 = j0 + q * kNR + half;
        const int64_t valid = std::clamp<int64_t>(j0 + nc - col0, 0, 16);
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16) {
          __m512 r[16];
          for (int j = 0; j < 16; ++j) {
            r[j] = j < valid ? _mm512_loadu_ps(pr.b + (k0 + k) + (col0 + j) * pr.b_cs) : _mm512_setzero_ps();
          }
          transpose16(r);
          for (int c = 0; c < 16; ++c) _mm512_store_ps(d + (k + c) * kNR + half, r[c]);
        }
        for (; k < kc; ++k) {
          for (int64_t j = 0; j < 16; ++j) d[k * kNR + half + j] = j < valid ? pr.b[(k0 + k) + (col0 + j) * pr.b_cs] : 0.0f;
        }
      }
    }
    return;
  }
  for (int64_t q = 0; q < npanels; ++q) {
    float* d = dst + q * kNR * kc;
    for (int64_t j = 0; j < kNR; ++j) {
      const int64_t col = j0 + q * kNR + j;
      if (col >= j0 + nc) {
        for (int64_t k = 0; k < kc; ++k) d[k * kNR + j] = 0.0f;
        continue;
      }
      const float* src = pr.b + k0 * pr.b_rs + col * pr.b_cs;
      for (int64_t k = 0; k < kc; ++k) d[k * kNR + j] = src[k * pr.b_rs];
    }
  }
}

// c (mr x nr tile, row length ldc) = [c +] the product over kc of the packed A panel and B's tile,
// whose row k is bp + k·ldb (a packed micro-panel, ldb = kNR, or B itself when its rows are
// contiguous). The sum over k runs in k order from zero in the accumulators and is then added to
// c: the same for every tile. Partial tiles (nr < kNR) load B under a mask.
// Not inlined: inside a large caller (a -march=native build inlines the whole product into one
// function) the loop lost its bound to the stack, a reload per iteration.
template <bool kFull>
__attribute__((noinline)) HMER_AVX512 void micro_kernel(int64_t kc, const float* ap, const float* bp, int64_t ldb, float* c, int64_t ldc,
                              int64_t mr, int64_t nr, bool accumulate) {
  const __mmask16 m0 = static_cast<__mmask16>(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
  const __mmask16 m1 = static_cast<__mmask16>(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1u : 0u);
  __m512 c0[kMR], c1[kMR];
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    c0[i] = c1[i] = _mm512_setzero_ps();
    // The tile is read (or written) after the loop: start fetching it now.
    if (i < mr) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b0, b1;
    if constexpr (kFull) {
      b0 = _mm512_loadu_ps(bp);
      b1 = _mm512_loadu_ps(bp + 16);
    } else {
      b0 = _mm512_maskz_loadu_ps(m0, bp);
      b1 = _mm512_maskz_loadu_ps(m1, bp + 16);
    }
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
      const __m512 a = _mm512_set1_ps(ap[i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
    ap += kMR;
    bp += ldb;
  }
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    if (i < mr) {
      float* row = c + i * ldc;
      if (accumulate) {
        c0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), c0[i]);
        c1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16), c1[i]);
      }
      _mm512_mask_storeu_ps(row, m0, c0[i]);
      _mm512_mask_storeu_ps(row + 16, m1, c1[i]);
    }
  }
}

// The product on the calling thread, block by block: pack B's block, then for each block of A's
// rows pack it and run the register tiles.
HMER_AVX512 void run(const Problem& pr, float* b_pack, float* a_pack) {
  for (int64_t jc = 0; jc < pr.N; jc += kNC) {
    const int64_t nc = std::min(kNC, pr.N - jc);
    const int64_t npanels = (nc + kNR - 1) / kNR;
    for (int64_t pc = 0; pc < pr.K; pc += kKC) {
      const int64_t kc = std::min(kKC, pr.K - pc);
      pack_b(pr, pc, kc, jc, nc, b_pack);
      const bool acc = pr.accumulate || pc > 0;
      for (int64_t ic = 0; ic < pr.M; ic += kMC) {
        const int64_t mc = std::min(kMC, pr.M - ic);
        pack_a(pr, ic, mc, pc, kc, a_pack);
        // An A micro-panel stays in L1 while the packed B block streams from L2 past it.
        for (int64_t ir = 0; ir * kMR < mc; ++ir) {
          const int64_t mr = std::min(kMR, mc - ir * kMR);
          const float* ap = a_pack + ir * kMR * kc;
          float* crow = pr.c + (ic + ir * kMR) * pr.ldc + jc;
          for (int64_t jr = 0; jr < npanels; ++jr) {
            const float* bp = b_pack + jr * kNR * kc;
            const int64_t nr = std::min(kNR, nc - jr * kNR);
            if (nr == kNR) micro_kernel<true>(kc, ap, bp, kNR, crow + jr * kNR, pr.ldc, mr, nr, acc);
            else micro_kernel<false>(kc, ap, bp, kNR, crow + jr * kNR, pr.ldc, mr, nr, acc);
          }
        }
      }
    }
  }
}

thread_local AlignedFloats t_a_pack, t_b_pack;
thread_local int64_t t_a_capacity = 0, t_b_capacity = 0;

}  // namespace

bool sgemm_available() {
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return available;
}

void set_sgemm_enabled(bool enabled) { g_enabled.store(enabled, std::memory_order_relaxed); }
bool sgemm_enabled() { return g_enabled.load(std::memory_order_relaxed); }

void sgemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
           int64_t b_cs, float* c, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) {
      for (int64_t i = 0; i < M; ++i) std::memset(c + i * ldc, 0, static_cast<size_t>(N) * sizeof(float));
    }
    return;
  }
  const Problem pr{M, N, K, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, accumulate};
  const int64_t row_panels = (M + kMR - 1) / kMR, col_panels = (N + kNR - 1) / kNR;
  // Few rows and many columns (at least 256 per part on two threads): the threads take column
  // ranges, else row ranges, each as its own product (packing its own B; sharing one packed B across
  // the cores timed slower here).
  const bool split_columns = M < 128 && N >= 512;
  int nt = 1;
#ifdef _OPENMP
  if (!omp_in_parallel() && M * N * K >= kMinParallelMacs) {
    nt = static_cast<int>(std::min<int64_t>(num_threads(), split_columns ? col_panels : row_panels));
  }
#endif
  const int64_t kc_max = std::min(kKC, K);
  const int64_t b_pack_size = round_up(std::min(N, kNC), kNR) * kc_max, a_pack_size = kMC * kc_max;
  auto part = [&](int tid, int parts) {
    float* b_pack = scratch(t_b_pack, t_b_capacity, b_pack_size);
    float* a_pack = scratch(t_a_pack, t_a_capacity, a_pack_size);
    Problem p = pr;
    if (split_columns) {
      const int64_t c0 = std::min(N, col_panels * tid / parts * kNR);
      const int64_t c1 = std::min(N, col_panels * (tid + 1) / parts * kNR);
      p.N = c1 - c0;
      p.b = pr.b + c0 * pr.b_cs;
      p.c = pr.c + c0;
    } else {
      const int64_t r0 = std::min(M, row_panels * tid / parts * kMR);
      const int64_t r1 = std::min(M, row_panels * (tid + 1) / parts * kMR);
      p.M = r1 - r0;
      p.a = pr.a + r0 * pr.a_rs;
      p.c = pr.c + r0 * pr.ldc;
    }
    if (p.M > 0 && p.N > 0) run(p, b_pack, a_pack);
  };
  if (nt == 1) {
    part(0, 1);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
  part(omp_get_thread_num(), omp_get_num_threads());
#endif
}

}  // namespace hmer::cpu
