// batch_norm2d, softmax/log_softmax, cross_entropy, smooth_l1/mse, dropout and embedding:
// float64 finite differences, float32 parity with PyTorch 1.13 (tools/reference/ref_norm_loss.py),
// running-statistics formulas for both BN flavours, dropout mask properties, and input validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "tests/testing.h"

using namespace hmer;
using namespace hmer::test;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
using In = const std::vector<Tensor>&;  // the lambdas' argument list
constexpr const char* kArea = "norm_loss";

Tensor leaf(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor t = rand_tensor(s, seed, lo, hi);
  t.set_requires_grad(true);
  return t;
}

Tensor targets(const std::vector<int64_t>& v) {
  return Tensor::from_vector<int64_t>(v, {static_cast<int64_t>(v.size())});
}

// Loads <name>__x{i}, runs fn, compares out and grad_x{i} (where the reference has one) with tol.
void check_parity(const std::string& name, int n_inputs, const Fn& fn, Tol tol) {
  std::vector<Tensor> xs;
  for (int i = 0; i < n_inputs; ++i) {
    Tensor x = ref(kArea, name + "__x" + std::to_string(i));
    if (ref_exists(kArea, name + "__grad_x" + std::to_string(i))) x.set_requires_grad(true);
    xs.push_back(x);
  }
  Tensor y = fn(xs);
  EXPECT_TRUE(all_close(y, ref(kArea, name + "__out"), tol, name + ".out"));
  y.backward(ref(kArea, name + "__grad_out"));
  for (int i = 0; i < n_inputs; ++i) {
    const std::string g = name + "__grad_x" + std::to_string(i);
    if (ref_exists(kArea, g)) {
      EXPECT_TRUE(all_close(xs[i].grad(), ref(kArea, g), tol, name + ".grad_x" + std::to_string(i)));
    }
  }
}

// Runs f, expects an hmer::Error whose message contains every fragment.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "expected an hmer::Error containing '" << fragments.front() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << "\nmissing: " << frag;
  }
}

BatchNormOptions bn_opts(bool training, double momentum = 0.1, BatchNormFlavor flavor = BatchNormFlavor::Torch) {
  BatchNormOptions o;
  o.training = training;
  o.momentum = momentum;
  o.flavor = flavor;
  return o;
}

}  // namespace

// ---- batch_norm2d ------------------------------------------------------------------------------

TEST(BatchNormGradcheck, TrainXWeightBias) {
  Tensor x = leaf({3, 2, 3, 4}, 1, -2.0, 3.0), w = leaf({2}, 2, 0.5, 1.5), b = leaf({2}, 3);
  Tensor rm = Tensor::zeros({2}, DType::Float64), rv = Tensor::ones({2}, DType::Float64);
  EXPECT_TRUE(gradcheck([&](In in) { return batch_norm2d(in[0], in[1], in[2], rm, rv, bn_opts(true)); },
                        {x, w, b}));
  // without running statistics, and a spatially trivial input (statistics over N only)
  EXPECT_TRUE(gradcheck(
      [](In in) { return batch_norm2d(in[0], in[1], in[2], Tensor(), Tensor(), bn_opts(true)); },
      {leaf({5, 3, 1, 1}, 4), leaf({3}, 5, 0.5, 1.5), leaf({3}, 6)}));
}

TEST(BatchNormGradcheck, EvalXWeightBias) {
  Tensor rm = rand_tensor({2}, 7, -0.5, 0.5), rv = rand_tensor({2}, 8, 0.5, 1.5);
  EXPECT_TRUE(gradcheck([&](In in) { return batch_norm2d(in[0], in[1], in[2], rm, rv, bn_opts(false)); },
                        {leaf({3, 2, 3, 4}, 9), leaf({2}, 10, 0.5, 1.5), leaf({2}, 11)}));
}

TEST(BatchNormGradcheck, NoAffine) {
  EXPECT_TRUE(gradcheck(
      [](In in) { return batch_norm2d(in[0], Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(true)); },
      {leaf({2, 3, 4, 3}, 12)}));
  Tensor rm = rand_tensor({3}, 13), rv = rand_tensor({3}, 14, 0.5, 1.5);
  EXPECT_TRUE(gradcheck([&](In in) { return batch_norm2d(in[0], Tensor(), Tensor(), rm, rv, bn_opts(false)); },
                        {leaf({2, 3, 4, 3}, 15)}));
}

TEST(BatchNormParity, TrainAndEval) {
  for (const char* name : {"bn_train", "bn_eval"}) {
    const std::string n = name;
    const bool training = n == "bn_train";
    Tensor rm = ref(kArea, n + "__rm_in"), rv = ref(kArea, n + "__rv_in");
    check_parity(n, 3, [&](In in) { return batch_norm2d(in[0], in[1], in[2], rm, rv, bn_opts(training)); },
                 tol::kBatchNorm);
    EXPECT_TRUE(all_close(rm, ref(kArea, n + "__rm_out"), tol::kBatchNorm, n + ".running_mean"));
    EXPECT_TRUE(all_close(rv, ref(kArea, n + "__rv_out"), tol::kBatchNorm, n + ".running_var"));
    EXPECT_FALSE(rm.requires_grad());
    EXPECT_FALSE(rv.requires_grad());
  }
  // The training reference must have moved the running statistics, or the check above proves nothing.
  const std::vector<double> rv_in = ref(kArea, "bn_train__rv_in").to_vector<double>();
  const std::vector<double> rv_out = ref(kArea, "bn_train__rv_out").to_vector<double>();
  EXPECT_GT(std::fabs(rv_out[0] - rv_in[0]), 1e-3);
}

TEST(BatchNormParity, NoAffine) {
  check_parity("bn_noaffine", 1,
               [](In in) { return batch_norm2d(in[0], Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(true)); },
               tol::kBatchNorm);
  Tensor rm = ref(kArea, "bn_eval_noaffine__rm_in"), rv = ref(kArea, "bn_eval_noaffine__rv_in");
  check_parity("bn_eval_noaffine", 1,
               [&](In in) { return batch_norm2d(in[0], Tensor(), Tensor(), rm, rv, bn_opts(false)); },
               tol::kBatchNorm);
}

namespace {
// Per-channel batch mean and biased variance of a float64 (N, C, H, W) tensor, the plain way.
void channel_stats(const Tensor& x, std::vector<double>& mean, std::vector<double>& var) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const std::vector<double> v = x.to(DType::Float64).to_vector<double>();
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) mean[c] += v[(n * C + c) * HW + i];
    mean[c] /= static_cast<double>(N * HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        const double dv = v[(n * C + c) * HW + i] - mean[c];
        var[c] += dv * dv;
      }
    var[c] /= static_cast<double>(N * HW);
  }
}
}  // namespace

TEST(BatchNormRunningStats, TorchAndPaddleFormulas) {
  const Tensor x = rand_tensor({4, 3, 5, 2}, 20, -1.0, 3.0);
  const int64_t M = 4 * 5 * 2;
  std::vector<double> mean, var;
  channel_stats(x, mean, var);
  const std::vector<double> rm0 = {0.3, -0.2, 0.1}, rv0 = {1.5, 0.7, 2.0};
  for (DType dt : {DType::Float64, DType::Float32}) {
    const Tol tol = dt == DType::Float64 ? Tol{1e-14, 1e-13} : tol::kBatchNorm;
    const std::string tag = dt == DType::Float64 ? "f64" : "f32";
    // Torch: (1 − m)·running + m·batch with the unbiased variance.
    {
      Tensor rm = Tensor::from_vector<double>(rm0, {3}).to(dt), rv = Tensor::from_vector<double>(rv0, {3}).to(dt);
      batch_norm2d(x.to(dt), Tensor(), Tensor(), rm, rv, bn_opts(true, 0.1, BatchNormFlavor::Torch));
      std::vector<double> em(3), ev(3);
      for (int c = 0; c < 3; ++c) {
        em[c] = 0.9 * rm0[c] + 0.1 * mean[c];
        ev[c] = 0.9 * rv0[c] + 0.1 * var[c] * M / (M - 1);
      }
      EXPECT_TRUE(all_close(rm, Tensor::from_vector<double>(em, {3}).to(dt), tol, "bn_torch_running_mean." + tag));
      EXPECT_TRUE(all_close(rv, Tensor::from_vector<double>(ev, {3}).to(dt), tol, "bn_torch_running_var." + tag));
    }
    // Paddle: m·running + (1 − m)·batch with the biased variance (momentum 0.9 = torch's 0.1).
    {
      Tensor rm = Tensor::from_vector<double>(rm0, {3}).to(dt), rv = Tensor::from_vector<double>(rv0, {3}).to(dt);
      Tensor y = batch_norm2d(x.to(dt), Tensor(), Tensor(), rm, rv, bn_opts(true, 0.9, BatchNormFlavor::Paddle));
      std::vector<double> em(3), ev(3);
      for (int c = 0; c < 3; ++c) {
        em[c] = 0.9 * rm0[c] + (1.0 - 0.9) * mean[c];
        ev[c] = 0.9 * rv0[c] + (1.0 - 0.9) * var[c];
      }
      EXPECT_TRUE(all_close(rm, Tensor::from_vector<double>(em, {3}).to(dt), tol, "bn_paddle_running_mean." + tag));
      EXPECT_TRUE(all_close(rv, Tensor::from_vector<double>(ev, {3}).to(dt), tol, "bn_paddle_running_var." + tag));
      // The flavours must differ in the variance (biased vs unbiased), or this test cannot tell them apart.
      EXPECT_GT(std::fabs(ev[0] - (0.9 * rv0[0] + 0.1 * var[0] * M / (M - 1))), 1e-4);
      // The normalisation itself is flavour-independent: (x − mean)/sqrt(var + eps).
      const std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>();
      double worst = 0.0;
      for (int64_t k = 0; k < x.numel(); ++k) {
        const int64_t c = (k / 10) % 3;
        worst = std::max(worst, std::fabs(yv[k] - (xv[k] - mean[c]) / std::sqrt(var[c] + 1e-5)));
      }
      EXPECT_LT(worst, dt == DType::Float64 ? 1e-12 : 1e-5);
    }
  }
}

// ---- softmax / log_softmax ---------------------------------------------------------------------

TEST(SoftmaxGradcheck, AllDims) {
  for (int64_t dim : {0, 1, 2, -1}) {
    EXPECT_TRUE(gradcheck([dim](In in) { return softmax(in[0], dim); }, {leaf({3, 4, 5}, 30, -3, 3)}))
        << "softmax dim " << dim;
    EXPECT_TRUE(gradcheck([dim](In in) { return log_softmax(in[0], dim); }, {leaf({3, 4, 5}, 31, -3, 3)}))
        << "log_softmax dim " << dim;
  }
}

TEST(SoftmaxParity, Dims) {
  check_parity("softmax_d1", 1, [](In in) { return softmax(in[0], 1); }, tol::kSoftmax);
  check_parity("softmax_dm1", 1, [](In in) { return softmax(in[0], -1); }, tol::kSoftmax);
  check_parity("log_softmax_d1", 1, [](In in) { return log_softmax(in[0], 1); }, tol::kSoftmax);
  check_parity("log_softmax_dm1", 1, [](In in) { return log_softmax(in[0], -1); }, tol::kSoftmax);
  check_parity("log_softmax_vocab", 1, [](In in) { return log_softmax(in[0], -1); }, tol::kSoftmax);
}

TEST(Softmax, StableForLargeLogitsAndWideInner) {
  // exp(1000) overflows without the max shift.
  Tensor x = Tensor::from_vector<float>({1000.f, 999.f, 998.f}, {1, 3});
  const std::vector<float> y = softmax(x, 1).to_vector<float>();
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(y[0], 1.0 / (1.0 + std::exp(-1.0) + std::exp(-2.0)), 1e-6);
  // inner > one column block (256): the blocked path must cover every column.
  Tensor w = rand_tensor({2, 3, 300}, 32, -2, 2);
  Tensor s = sum(softmax(w, 1), {1});
  for (double v : s.to_vector<double>()) EXPECT_NEAR(v, 1.0, 1e-12);
}

// ---- cross_entropy -----------------------------------------------------------------------------

TEST(CrossEntropyGradcheck, WeightAndIgnore) {
  const Tensor t = targets({0, 3, 1, 0, 4, 2, 3});
  const Tensor w = rand_tensor({5}, 40, 0.5, 1.5);
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    EXPECT_TRUE(gradcheck([&](In in) { return cross_entropy(in[0], t, w, 0, r); }, {leaf({7, 5}, 41, -2, 2)}));
    EXPECT_TRUE(gradcheck([&](In in) { return cross_entropy(in[0], t, Tensor(), 0, r); }, {leaf({7, 5}, 42, -2, 2)}));
    EXPECT_TRUE(gradcheck([&](In in) { return cross_entropy(in[0], t, w, -100, r); }, {leaf({7, 5}, 43, -2, 2)}));
  }
}

TEST(CrossEntropyParity, IgnoreWeightReductions) {
  const Tensor w = ref(kArea, "ce_weight__weight");
  const std::pair<const char*, Reduction> reds[] = {
      {"mean", Reduction::Mean}, {"sum", Reduction::Sum}, {"none", Reduction::None}};
  for (const auto& [tag, r] : reds) {
    const Reduction red = r;
    check_parity(std::string("ce_ignore0_") + tag, 2,
                 [red](In in) { return cross_entropy(in[0], in[1], Tensor(), 0, red); }, tol::kLoss);
    check_parity(std::string("ce_weight_") + tag, 2,
                 [red, w](In in) { return cross_entropy(in[0], in[1], w, 0, red); }, tol::kLoss);
  }
  check_parity("ce_default_mean", 2, [](In in) { return cross_entropy(in[0], in[1]); }, tol::kLoss);
  check_parity("ce_all_ignored_mean", 2, [](In in) { return cross_entropy(in[0], in[1], Tensor(), 0); },
               tol::kLoss);
}

TEST(CrossEntropy, MeanDividesByKeptWeightsAndAllIgnoredIsNaN) {
  Tensor x = rand_tensor({4, 3}, 44, -1, 1);
  const Tensor t = targets({2, 0, 1, 0});
  const Tensor w = Tensor::from_vector<double>({0.5, 2.0, 3.0}, {3});
  const double none_sum = sum(cross_entropy(x, t, w, 0, Reduction::None)).item<double>();
  const double s = cross_entropy(x, t, w, 0, Reduction::Sum).item<double>();
  const double m = cross_entropy(x, t, w, 0, Reduction::Mean).item<double>();
  EXPECT_NEAR(s, none_sum, 1e-12);
  EXPECT_NEAR(m, s / (3.0 + 2.0), 1e-12);  // Σ w_{y_i} over targets 2 and 1
  Tensor xl = leaf({3, 3}, 45);
  Tensor nan_loss = cross_entropy(xl, targets({1, 1, 1}), Tensor(), 1);
  EXPECT_TRUE(std::isnan(nan_loss.item<double>()));
  nan_loss.backward();
  for (double g : xl.grad().to_vector<double>()) EXPECT_EQ(g, 0.0);
}

// ---- smooth_l1_loss / mse_loss -------------------------------------------------------------------

TEST(RegressionLossGradcheck, BothInputs) {
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    for (double beta : {1.0, 0.5}) {
      EXPECT_TRUE(gradcheck([r, beta](In in) { return smooth_l1_loss(in[0], in[1], r, beta); },
                            {leaf({4, 6}, 50, -2, 2), leaf({4, 6}, 51, -1, 1)}))
          << "smooth_l1 beta " << beta;
    }
    EXPECT_TRUE(gradcheck([r](In in) { return mse_loss(in[0], in[1], r); },
                          {leaf({4, 6}, 52, -2, 2), leaf({4, 6}, 53)}));
  }
}

TEST(RegressionLossParity, Reductions) {
  const std::pair<const char*, Reduction> reds[] = {
      {"none", Reduction::None}, {"mean", Reduction::Mean}, {"sum", Reduction::Sum}};
  for (const auto& [tag, r] : reds) {
    const Reduction red = r;
    check_parity(std::string("smooth_l1_b1_") + tag, 2,
                 [red](In in) { return smooth_l1_loss(in[0], in[1], red, 1.0); }, tol::kLoss);
    check_parity(std::string("smooth_l1_b05_") + tag, 2,
                 [red](In in) { return smooth_l1_loss(in[0], in[1], red, 0.5); }, tol::kLoss);
    check_parity(std::string("mse_") + tag, 2, [red](In in) { return mse_loss(in[0], in[1], red); },
                 tol::kLoss);
  }
}

TEST(RegressionLoss, SmoothL1Pieces) {
  // |d| < beta: 0.5·d²/beta; otherwise |d| − 0.5·beta.
  Tensor x = Tensor::from_vector<double>({0.2, -0.4, 1.0, -3.0}, {4});
  Tensor t = Tensor::zeros({4}, DType::Float64);
  const std::vector<double> l = smooth_l1_loss(x, t, Reduction::None, 0.5).to_vector<double>();
  EXPECT_DOUBLE_EQ(l[0], 0.5 * 0.04 / 0.5);
  EXPECT_DOUBLE_EQ(l[1], 0.5 * 0.16 / 0.5);
  EXPECT_DOUBLE_EQ(l[2], 1.0 - 0.25);
  EXPECT_DOUBLE_EQ(l[3], 3.0 - 0.25);
}

// ---- batch_norm_relu_dropout ------------------------------------------------------------------------

// One comparison of a fused op against the separate ops it replaces: output, the gradient of every
// input that requires one, the running statistics and where the generator's stream is left must all
// be bit-identical. H·W = 21 makes rows start in the middle of Philox blocks.
struct FusedCase {
  DType dtype = DType::Float32;
  bool training = true;           // batch statistics
  bool dropout_training = true;
  double p = 0.35;
  BatchNormFlavor flavor = BatchNormFlavor::Torch;
  bool affine = true;
  bool grad_x = true, grad_affine = true, grad_conv = true;
  bool with_conv = false;         // batch_norm_relu_dropout_conv2d instead of batch_norm_relu_dropout
  int64_t h = 3, w = 7;
  std::string tag() const {
    std::string t = std::string(dtype_name(dtype)) + (training ? " train" : " eval") +
                    (flavor == BatchNormFlavor::Torch ? " torch" : " paddle") + " p=" + std::to_string(p) +
                    (dropout_training ? " drop-train" : " drop-eval");
    if (!affine) t += " no-affine";
    if (!grad_x) t += " x-const";
    if (!grad_affine) t += " affine-const";
    if (with_conv) t += grad_conv ? " +conv" : " +conv(const)";
    t += " " + std::to_string(h) + "x" + std::to_string(w);
    return t;
  }
};

void expect_fused_matches_separate(const FusedCase& fc) {
  const std::string tag = fc.tag();
  const DType dt = fc.dtype;
  const Tensor x0 = rand_tensor({3, 5, fc.h, fc.w}, 21, -2, 3, dt), w0 = rand_tensor({5}, 22, 0.5, 1.5, dt),
               b0 = rand_tensor({5}, 23, -0.5, 0.5, dt), cw0 = rand_tensor({4, 5, 3, 3}, 27, -0.3, 0.3, dt);
  const Tensor g = rand_tensor({3, fc.with_conv ? 4 : 5, fc.h, fc.w}, 24, -1, 1, dt);
  const Conv2dOptions co{{1, 1}, {1, 1}, {1, 1}};
  const BatchNormOptions o = bn_opts(fc.training, fc.flavor == BatchNormFlavor::Torch ? 0.1 : 0.9, fc.flavor);
  auto run = [&](bool fused, Tensor& rm, Tensor& rv, Generator& gen) {
    Tensor x = x0.detach().clone(), cw = cw0.detach().clone();
    Tensor w = fc.affine ? w0.detach().clone() : Tensor(), b = fc.affine ? b0.detach().clone() : Tensor();
    if (fc.grad_x) x.set_requires_grad(true);
    if (fc.affine && fc.grad_affine) w.set_requires_grad(true), b.set_requires_grad(true);
    if (fc.grad_conv) cw.set_requires_grad(true);
    Tensor y;
    if (fused) {
      y = fc.with_conv ? batch_norm_relu_dropout_conv2d(x, w, b, rm, rv, o, fc.p, fc.dropout_training, &gen, cw, co)
                       : batch_norm_relu_dropout(x, w, b, rm, rv, o, fc.p, fc.dropout_training, &gen);
    } else {
      y = dropout(relu(batch_norm2d(x, w, b, rm, rv, o)), fc.p, fc.dropout_training, &gen);
      if (fc.with_conv) y = conv2d(y, cw, Tensor(), co);
    }
    if (y.requires_grad()) y.backward(g);
    auto grad = [](const Tensor& t) { return t.defined() ? t.grad() : Tensor(); };
    return std::vector<Tensor>{y.detach(), grad(x), grad(w), grad(b), fc.with_conv ? grad(cw) : Tensor()};
  };
  Tensor rm_a = rand_tensor({5}, 25, -0.5, 0.5, dt), rv_a = rand_tensor({5}, 26, 0.5, 1.5, dt);
  Tensor rm_b = rm_a.detach().clone(), rv_b = rv_a.detach().clone();
  Generator gen_a(31), gen_b(31);
  gen_a.reserve(8);
  gen_b.reserve(8);
  const std::vector<Tensor> a = run(false, rm_a, rv_a, gen_a), b = run(true, rm_b, rv_b, gen_b);
  const char* names[] = {"y", "grad_x", "grad_w", "grad_b", "grad_conv_w"};
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(b[i].defined(), a[i].defined()) << tag << " " << names[i];
    if (a[i].defined()) {
      EXPECT_TRUE(bitwise_equal(b[i], a[i], tag + " " + names[i]));
    }
  }
  EXPECT_EQ(a[1].defined(), fc.grad_x) << tag;
  EXPECT_TRUE(bitwise_equal(rm_b, rm_a, tag + " running_mean"));
  EXPECT_TRUE(bitwise_equal(rv_b, rv_a, tag + " running_var"));
  EXPECT_EQ(gen_b.offset(), gen_a.offset()) << tag;
  {
    // Without a graph the forward draws the mask without recording it: still the same numbers.
    NoGradGuard ng;
    Generator gen_c(31), gen_d(31);
    Tensor rm_c = rm_a.detach().clone(), rv_c = rv_a.detach().clone();
    Tensor rm_d = rm_a.detach().clone(), rv_d = rv_a.detach().clone();
    Tensor w = fc.affine ? w0 : Tensor(), b = fc.affine ? b0 : Tensor();
    Tensor ref_y = dropout(relu(batch_norm2d(x0, w, b, rm_c, rv_c, o)), fc.p, fc.dropout_training, &gen_c);
    if (fc.with_conv) ref_y = conv2d(ref_y, cw0, Tensor(), co);
    const Tensor y = fc.with_conv
                         ? batch_norm_relu_dropout_conv2d(x0, w, b, rm_d, rv_d, o, fc.p, fc.dropout_training, &gen_d,
                                                          cw0, co)
                         : batch_norm_relu_dropout(x0, w, b, rm_d, rv_d, o, fc.p, fc.dropout_training, &gen_d);
    EXPECT_TRUE(bitwise_equal(y, ref_y, tag + " no-grad y"));
  }
  if (fc.p > 0 && fc.p < 1 && fc.dropout_training) {
    // The mask did drop something, or the comparison proves nothing about it.
    const std::vector<Tensor> a0 = run(false, rm_a, rv_a, gen_a);
    EXPECT_NE(a0[0].to(DType::Float64).to_vector<double>(), a[0].to(DType::Float64).to_vector<double>())
        << tag << ": a fresh draw gave the same mask";
  }
}

TEST(BatchNormReluDropout, BitIdenticalToBatchNormReluDropout) {
  for (const DType dt : {DType::Float32, DType::Float64})
    for (const bool training : {true, false})
      for (const auto flavor : {BatchNormFlavor::Torch, BatchNormFlavor::Paddle})
        for (const double p : {0.0, 0.35})
          for (const bool dropout_training : {true, false}) {
            FusedCase fc;
            fc.dtype = dt;
            fc.training = training;
            fc.flavor = flavor;
            fc.p = p;
            fc.dropout_training = dropout_training;
            expect_fused_matches_separate(fc);
          }
}

// Rows of 135 elements: three keep-mask words per row, the last one partly used, and row starts at
// every position inside a Philox block.
TEST(BatchNormReluDropout, RowsLongerThanOneMaskWord) {
  for (const bool with_conv : {false, true})
    for (const DType dt : {DType::Float32, DType::Float64}) {
      FusedCase fc;
      fc.with_conv = with_conv;
      fc.dtype = dt;
      fc.h = 9;
      fc.w = 15;
      expect_fused_matches_separate(fc);
    }
}

TEST(BatchNormReluDropout, EdgeCasesMatchTheSeparateOps) {
  for (const bool with_conv : {false, true}) {
    FusedCase fc;
    fc.with_conv = with_conv;
    fc.p = 1.0;  // torch's x·0: the unfused fallback
    expect_fused_matches_separate(fc);
    fc.p = 0.35;
    fc.affine = false;
    expect_fused_matches_separate(fc);
    fc.affine = true;
    fc.grad_x = false;  // the input is constant, the affine is not
    expect_fused_matches_separate(fc);
    fc.grad_x = true;
    fc.grad_affine = false;
    expect_fused_matches_separate(fc);
    if (with_conv) {
      fc.grad_x = fc.grad_affine = false;  // only the conv weight trains: no activation gradient
      expect_fused_matches_separate(fc);
      fc.grad_conv = false;  // the conv weight is constant: the backward skips recomputing the activation
      fc.grad_x = true;
      expect_fused_matches_separate(fc);
    }
  }
}

// The bottleneck's BN → ReLU → dropout → 3×3 conv as one node that recomputes the activation.
TEST(BatchNormReluDropoutConv2d, BitIdenticalToTheTwoOps) {
  for (const DType dt : {DType::Float32, DType::Float64})
    for (const bool training : {true, false})
      for (const bool dropout_training : {true, false}) {
        FusedCase fc;
        fc.with_conv = true;
        fc.dtype = dt;
        fc.training = training;
        fc.dropout_training = dropout_training;
        fc.flavor = dt == DType::Float64 ? BatchNormFlavor::Paddle : BatchNormFlavor::Torch;
        expect_fused_matches_separate(fc);
      }
  EXPECT_TRUE(gradcheck(
      [](In in) {
        Generator g(5);
        return batch_norm_relu_dropout_conv2d(in[0], in[1], in[2], Tensor(), Tensor(), bn_opts(true), 0.3, true, &g,
                                              in[3], Conv2dOptions{{1, 1}, {1, 1}, {1, 1}});
      },
      {leaf({2, 3, 4, 5}, 58, -2.0, 3.0), leaf({3}, 59, 0.5, 1.5), leaf({3}, 60), leaf({2, 3, 3, 3}, 61)}));
}

TEST(BatchNormReluDropoutGradcheck, TrainAndEvalWithAFixedMask) {
  EXPECT_TRUE(gradcheck(
      [](In in) {
        Generator g(5);
        return batch_norm_relu_dropout(in[0], in[1], in[2], Tensor(), Tensor(), bn_opts(true), 0.3, true, &g);
      },
      {leaf({3, 2, 3, 5}, 41, -2.0, 3.0), leaf({2}, 42, 0.5, 1.5), leaf({2}, 43)}));
  Tensor rm = rand_tensor({2}, 44, -0.5, 0.5), rv = rand_tensor({2}, 45, 0.5, 1.5);
  EXPECT_TRUE(gradcheck(
      [&](In in) { return batch_norm_relu_dropout(in[0], in[1], in[2], rm, rv, bn_opts(false), 0.3, false, nullptr); },
      {leaf({2, 2, 3, 4}, 46), leaf({2}, 47, 0.5, 1.5), leaf({2}, 48)}));
}

TEST(BatchNormReluDropout, ValidatesLikeBatchNormAndDropout) {
  const Tensor x = Tensor::zeros({2, 3, 4, 4});
  expect_error([&] { batch_norm_relu_dropout(x, Tensor::ones({4}), Tensor(), Tensor(), Tensor(), bn_opts(true), 0.2, true); },
               {"batch_norm_relu_dropout", "weight", "(3)"});
  expect_error([&] { batch_norm_relu_dropout(x, Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(true), 1.5, true); },
               {"batch_norm_relu_dropout", "between 0 and 1"});
  expect_error([&] { batch_norm_relu_dropout(Tensor::zeros({2, 3}), Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(true), 0.2, true); },
               {"batch_norm_relu_dropout", "4-D"});
}

// ---- dropout -----------------------------------------------------------------------------------

TEST(DropoutGradcheck, FixedGeneratorState) {
  // A fresh generator per evaluation replays the same (seed, offset), so the mask is fixed.
  EXPECT_TRUE(gradcheck(
      [](In in) {
        Generator g(77);
        return dropout(in[0], 0.4, true, &g);
      },
      {leaf({6, 7}, 60)}));
}

TEST(Dropout, Statistics) {
  const int64_t n = 1000000;
  const double p = 0.3;
  Tensor x = rand_tensor({n}, 61, 0.5, 1.5, DType::Float32);
  Generator g(123);
  const uint64_t offset0 = g.offset();
  Tensor y = dropout(x, p, true, &g);
  EXPECT_EQ(g.offset(), offset0 + static_cast<uint64_t>(n));  // n is a multiple of 4
  const float* xp = x.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  int64_t kept = 0, wrong_value = 0, wrong_mask = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = static_cast<double>(philox_uniform_float(123, offset0, static_cast<uint64_t>(i))) >= p;
    const bool is_kept = yp[i] != 0.0f;  // x is in [0.5, 1.5): a kept element is never 0
    kept += is_kept;
    wrong_mask += keep != is_kept;
    if (is_kept) {
      const float expected = xp[i] * scale;
      wrong_value += std::memcmp(&expected, &yp[i], sizeof(float)) != 0;
    }
  }
  const double frac = static_cast<double>(kept) / static_cast<double>(n);
  const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
  EXPECT_LT(std::fabs(frac - (1 - p)), 4 * sigma) << "keep fraction " << frac;
  EXPECT_EQ(wrong_mask, 0);
  EXPECT_EQ(wrong_value, 0);
}

TEST(Dropout, MaskIsAFunctionOfSeedAndOffset) {
  Tensor x = Tensor::ones({4099}, DType::Float32);
  Generator a(5), b(5), c(6);
  const std::vector<float> ya = dropout(x, 0.5, true, &a).to_vector<float>();
  const std::vector<float> yb = dropout(x, 0.5, true, &b).to_vector<float>();
  const std::vector<float> yc = dropout(x, 0.5, true, &c).to_vector<float>();
  EXPECT_EQ(ya, yb);
  EXPECT_NE(ya, yc);
  // The next call of the same generator draws a fresh stream.
  EXPECT_NE(dropout(x, 0.5, true, &a).to_vector<float>(), ya);
  // Independent of the thread count (a large tensor is split across threads).
#ifdef _OPENMP
  Tensor big = Tensor::ones({200003}, DType::Float32);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  Generator g1(9);
  const std::vector<float> one = dropout(big, 0.2, true, &g1).to_vector<float>();
  omp_set_num_threads(std::max(2, threads));
  Generator g2(9);
  const std::vector<float> many = dropout(big, 0.2, true, &g2).to_vector<float>();
  omp_set_num_threads(threads);
  EXPECT_EQ(one, many);
#endif
  // An offset that is not a multiple of 4 starts mid-block.
  Generator d(5);
  d.set_state(5, 2);
  Tensor ones = Tensor::ones({9}, DType::Float64);
  const std::vector<double> yd = dropout(ones, 0.5, true, &d).to_vector<double>();
  for (int64_t i = 0; i < 9; ++i)
    EXPECT_EQ(yd[i] != 0.0, static_cast<double>(philox_uniform_float(5, 2, static_cast<uint64_t>(i))) >= 0.5) << i;
  // Long enough for the kernel's 64-word batches after a misaligned head and with a ragged tail, and
  // a p whose threshold is not on the 24-bit grid.
  Generator h(7);
  h.set_state(7, 61);
  Tensor many_ones = Tensor::ones({1003}, DType::Float32);
  const double p = 0.3333333333333333;
  const std::vector<float> yh = dropout(many_ones, p, true, &h).to_vector<float>();
  for (int64_t i = 0; i < 1003; ++i)
    EXPECT_EQ(yh[static_cast<size_t>(i)] != 0.0f,
              static_cast<double>(philox_uniform_float(7, 61, static_cast<uint64_t>(i))) >= p)
        << i;
}

TEST(Dropout, BackwardUsesTheSameMask) {
  Tensor x = leaf({1000}, 62, 0.5, 1.5);
  Generator g(8);
  Tensor y = dropout(x, 0.25, true, &g);
  Tensor go = rand_tensor({1000}, 63, 0.5, 1.5);
  y.backward(go);
  const std::vector<double> yv = y.to_vector<double>(), xv = x.to_vector<double>(), gv = go.to_vector<double>(),
                            gx = x.grad().to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_EQ(gx[i], yv[i] != 0.0 ? gv[i] * (1.0 / 0.75) : 0.0) << i;
}

TEST(Dropout, IdentityAndEdgeCases) {
  Tensor x = leaf({3, 4}, 64);
  EXPECT_TRUE(dropout(x, 0.5, false).is_same(x));
  EXPECT_TRUE(dropout(x, 0.0, true).is_same(x));
  // Eval and p = 0 draw nothing from the default generator.
  const uint64_t before = default_generator().offset();
  dropout(x, 0.5, false);
  EXPECT_EQ(default_generator().offset(), before);
  // Without a generator the default one is used.
  Tensor y = dropout(x, 0.5, true);
  EXPECT_EQ(default_generator().offset(), before + 12);
  Tensor z = dropout(x, 1.0, true);
  for (double v : z.to_vector<double>()) EXPECT_EQ(v, 0.0);
  sum(z).backward();
  for (double v : x.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

// ---- embedding ---------------------------------------------------------------------------------

TEST(EmbeddingGradcheck, Weight) {
  const Tensor idx = Tensor::from_vector<int64_t>({1, 0, 3, 3, 4, 0, 2, 3}, {2, 4});
  // The padding row's gradient is zero by definition, not by calculus: mask the outputs that read it
  // so finite differences see the same function.
  const Tensor keep = Tensor::from_vector<double>({1, 0, 1, 1, 1, 0, 1, 1}, {2, 4, 1});
  EXPECT_TRUE(gradcheck([&](In in) { return mul(embedding(in[0], idx, 0), keep); }, {leaf({5, 3}, 70)}));
  EXPECT_TRUE(gradcheck([&](In in) { return embedding(in[0], idx); }, {leaf({5, 3}, 71)}));
}

TEST(EmbeddingParity, PaddingIdx) {
  check_parity("embedding_pad0", 2, [](In in) { return embedding(in[0], in[1], 0); }, tol::kEmbedding);
  check_parity("embedding_nopad", 2, [](In in) { return embedding(in[0], in[1]); }, tol::kEmbedding);
}

TEST(Embedding, PaddingRowGetsNoGradientAndNegativePaddingWraps) {
  Tensor w = leaf({4, 2}, 72);
  const Tensor idx = Tensor::from_vector<int64_t>({3, 1, 3, 0}, {4});
  Tensor y = embedding(w, idx, -1);  // row 3
  EXPECT_EQ(y.shape(), (Shape{4, 2}));
  sum(y).backward();
  const std::vector<double> g = w.grad().to_vector<double>();
  EXPECT_EQ(g, (std::vector<double>{1, 1, 1, 1, 0, 0, 0, 0}));
}

// ---- strided inputs ----------------------------------------------------------------------------

TEST(NormLoss, NonContiguousInputsMatchContiguous) {
  auto same = [](const Tensor& a, const Tensor& b) { return a.to_vector<double>() == b.to_vector<double>(); };
  // (N, H, W, C) storage viewed as (N, C, H, W); running statistics as a strided view.
  const Tensor nhwc = rand_tensor({2, 3, 4, 5}, 100);
  const Tensor x = nhwc.permute({0, 3, 1, 2});
  ASSERT_FALSE(x.is_contiguous());
  Tensor rs = Tensor::ones({5, 2}, DType::Float64);
  Tensor rm = rs.select(1, 0), rv = rs.select(1, 1);
  Tensor rm2 = Tensor::ones({5}, DType::Float64), rv2 = Tensor::ones({5}, DType::Float64);
  EXPECT_TRUE(same(batch_norm2d(x, Tensor(), Tensor(), rm, rv, bn_opts(true)),
                   batch_norm2d(contiguous_copy(x), Tensor(), Tensor(), rm2, rv2, bn_opts(true))));
  EXPECT_TRUE(same(rm, rm2));
  EXPECT_TRUE(same(rv, rv2));
  EXPECT_TRUE(same(softmax(x, 1), softmax(contiguous_copy(x), 1)));
  const Tensor lt = rand_tensor({4, 3}, 101).t();
  EXPECT_TRUE(same(cross_entropy(lt, targets({0, 1, 2})), cross_entropy(contiguous_copy(lt), targets({0, 1, 2}))));
  EXPECT_TRUE(same(mse_loss(lt, lt.t().t() * 0.5), mse_loss(contiguous_copy(lt), contiguous_copy(lt) * 0.5)));
  const Tensor idx = Tensor::from_vector<int64_t>({0, 1, 2, 3}, {2, 2}).t();
  const Tensor w = rand_tensor({4, 3}, 102);
  EXPECT_TRUE(same(embedding(w, idx), embedding(w, contiguous_copy(idx))));
}

// ---- validation --------------------------------------------------------------------------------

TEST(NormLossErrors, BadValuesShapesAndDtypes) {
  const Tensor x4 = rand_tensor({2, 3, 2, 2}, 80);
  // batch_norm2d
  expect_error([&] { batch_norm2d(rand_tensor({2, 3, 4}, 81), Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(true)); },
               {"batch_norm2d", "4-D", "[2, 3, 4]"});
  expect_error([&] { batch_norm2d(x4, rand_tensor({4}, 82), Tensor(), Tensor(), Tensor(), bn_opts(true)); },
               {"batch_norm2d", "weight", "[4]"});
  const Tensor r2 = Tensor::ones({2}, DType::Float64);
  expect_error([&] { batch_norm2d(x4, Tensor(), Tensor(), r2, r2, bn_opts(true)); },
               {"running_mean", "[2]"});
  const Tensor x1 = rand_tensor({1, 3, 1, 1}, 83);
  expect_error([&] { batch_norm2d(x1, Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(true)); },
               {"more than 1 value per channel"});
  expect_error([&] { batch_norm2d(x4, Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(false)); }, {"eval"});
  expect_error([&] { batch_norm2d(x4.to(DType::Int64), Tensor(), Tensor(), Tensor(), Tensor(), bn_opts(true)); },
               {"batch_norm2d", "int64"});
  // softmax
  expect_error([&] { softmax(Tensor::zeros({3}, DType::Int64), 0); }, {"softmax", "int64"});
  expect_error([&] { log_softmax(rand_tensor({3, 4}, 84), 2); }, {"log_softmax", "dimension 2"});
  // cross_entropy
  const Tensor logits = rand_tensor({3, 4}, 85);
  expect_error([&] { cross_entropy(logits, targets({1, 4, 2})); },
               {"cross_entropy", "target 4", "position 1", "4 classes"});
  expect_error([&] { cross_entropy(logits, targets({1, -1, 2})); }, {"target -1", "position 1"});
  expect_error([&] { cross_entropy(logits, targets({1, 2})); }, {"cross_entropy", "[2]", "[3, 4]"});
  expect_error([&] { cross_entropy(logits, Tensor::zeros({3}, DType::Float64)); }, {"cross_entropy", "int64"});
  expect_error([&] { cross_entropy(logits.to(DType::Int64), targets({1, 2, 3})); }, {"cross_entropy", "floating"});
  expect_error([&] { cross_entropy(logits, targets({1, 2, 3}), rand_tensor({3}, 86)); }, {"weight", "[3]"});
  expect_error([&] { cross_entropy(rand_tensor({3, 4, 2}, 87), targets({1, 2, 3})); }, {"(N, C)", "[3, 4, 2]"});
  // point-wise losses
  expect_error([&] { mse_loss(rand_tensor({3, 4}, 88), rand_tensor({4, 3}, 89)); }, {"mse_loss", "[3, 4]", "[4, 3]"});
  expect_error([&] { smooth_l1_loss(rand_tensor({3}, 88), rand_tensor({3}, 89, -1, 1, DType::Float32)); },
               {"smooth_l1_loss", "float32"});
  expect_error([&] { smooth_l1_loss(rand_tensor({3}, 88), rand_tensor({3}, 89), Reduction::Mean, -1.0); }, {"beta"});
  const Tensor i3 = Tensor::zeros({3}, DType::Int64);
  expect_error([&] { mse_loss(i3, i3); }, {"mse_loss", "int64"});
  // dropout
  expect_error([&] { dropout(x4, 1.5, true); }, {"dropout", "1.5"});
  expect_error([&] { dropout(x4, -0.1, true); }, {"dropout", "-0.1"});
  expect_error([&] { dropout(Tensor::zeros({3}, DType::Int64), 0.5, true); }, {"dropout", "int64"});
  // embedding
  const Tensor w = rand_tensor({5, 2}, 90);
  expect_error([&] { embedding(w, Tensor::from_vector<int64_t>({0, 7, 1}, {3})); },
               {"embedding", "index 7", "position 1"});
  expect_error([&] { embedding(w, Tensor::from_vector<int64_t>({-1}, {1})); }, {"embedding", "index -1"});
  expect_error([&] { embedding(w, rand_tensor({3}, 91)); }, {"embedding", "int64"});
  expect_error([&] { embedding(rand_tensor({5}, 92), Tensor::from_vector<int64_t>({0}, {1})); }, {"embedding", "[5]"});
  expect_error([&] { embedding(w, Tensor::from_vector<int64_t>({0}, {1}), 5); }, {"padding_idx 5"});
}
