#pragma once
#include <cstdint>
// THE tolerance table: every comparison against PyTorch and every finite-difference check uses an
// entry from here. A comparison passes element-wise when |ours - ref| <= atol + rtol * |ref|.
// Loosening an entry needs a comment with the observed error that forced it.
namespace hmer::test {

struct Tol {
  double atol;
  double rtol;
};

namespace tol {

// ---- float64 finite differences (PyTorch gradcheck's defaults: eps 1e-6, atol 1e-5, rtol 1e-3) ----
constexpr double kFdEps = 1e-6;
constexpr Tol kGradcheck{1e-5, 1e-3};

// ---- float32 vs PyTorch 1.13 CPU -----------------------------------------------------------------
// Element-wise math: same formula, libm vs SLEEF vectorised exp/tanh differ by ~1 ulp.
constexpr Tol kElementwise{1e-6, 1e-5};
// Reductions and GEMMs: summation order differs (Eigen blocking / our double accumulator vs MKL/
// OpenBLAS/oneDNN), error grows ~ sqrt(K) ulp of the partial sums.
constexpr Tol kReduce{1e-5, 1e-5};
constexpr Tol kMatmul{1e-5, 1e-4};
// conv2d: an im2col GEMM vs oneDNN's direct/winograd kernels; K = C*kh*kw up to 96*9 and 11*11.
constexpr Tol kConv{1e-5, 1e-4};
constexpr Tol kConvGrad{1e-5, 1e-4};
// BatchNorm: batch statistics are reductions over N*H*W.
constexpr Tol kBatchNorm{1e-5, 1e-4};
constexpr Tol kPool{1e-6, 1e-5};
constexpr Tol kSoftmax{1e-6, 1e-5};
constexpr Tol kLoss{1e-6, 1e-5};
constexpr Tol kEmbedding{0.0, 0.0};  // gathers and scatter-adds of single values: exact
// GRUCell: two GEMMs then gates; errors of the GEMMs pass through sigmoid/tanh (slope <= 1).
constexpr Tol kGruCell{1e-5, 1e-4};
constexpr Tol kLinear{1e-5, 1e-4};

// Integer-valued and copied data (collate batches, masks, labels): must match exactly.
constexpr Tol kExact{0.0, 0.0};

// Optimizer steps vs torch.optim (float32): the rounding recipes of framework-semantics.md §1 make
// them bit-exact; measured 0 ulp over 100 steps for every optimizer.
constexpr int64_t kOptimMaxUlps = 0;
// LR schedules vs the closed formula (the bound is 1e-6; measured 1.1e-16).
constexpr Tol kSchedule{1e-6, 0.0};

// Whole-model parity, engine vs the PyTorch twin, as relative errors max|ours - ref| / max|ref|
// (the bounds). Measured at CI size: forward <= 1.8e-6, gradients <= 4.8e-6, 5 Adadelta
// step losses <= 2e-7.
constexpr double kModelForwardRel = 1e-4;   // encoder_out, counting vector, logits, loss
constexpr double kModelGradRel = 1e-3;      // every parameter gradient after one backward
constexpr double kModelStepLossRel = 1e-4;  // the losses of 5 Adadelta steps
// Gradients that are exactly zero mathematically (a bias cancelled by the shared softmax shift)
// come out as ~1e-10 rounding noise in both frameworks: checked as noise, not compared.
constexpr double kZeroGradNoise = 1e-5;

}  // namespace tol
}  // namespace hmer::test
