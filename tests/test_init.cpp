// Initialisers and init presets: every initialiser's bounds, mean and standard deviation against its
// formula on large tensors (within 5 standard errors; the seeds are fixed, so this is deterministic),
// orthogonality of orthogonal_, fan rules and gains, the per-layer effect of the torch / paddle /
// keras presets, and determinism for a fixed seed (independent of the thread count).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/layers.h"
#include "tests/testing.h"

using namespace hmer;
using namespace hmer::test;

namespace {

struct Moments {
  double mean, std, min, max, max_abs;
  int64_t n;
};

Moments moments(const Tensor& t) {
  const std::vector<double> v = t.to_vector<double>();
  Moments m{0, 0, v.at(0), v.at(0), 0, static_cast<int64_t>(v.size())};
  for (double x : v) {
    m.mean += x;
    m.min = std::min(m.min, x);
    m.max = std::max(m.max, x);
    m.max_abs = std::max(m.max_abs, std::fabs(x));
  }
  m.mean /= static_cast<double>(v.size());
  for (double x : v) m.std += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(m.std / static_cast<double>(v.size() - 1));
  return m;
}

// Mean within 5 SE (sigma/sqrt(n)); std within 5 SE of the sample std, sigma*sqrt((kurtosis-1)/(4n)).
void expect_moments(const Tensor& t, double mean, double std, double kurtosis, const std::string& what) {
  const Moments m = moments(t);
  const double n = static_cast<double>(m.n);
  EXPECT_NEAR(m.mean, mean, 5 * std / std::sqrt(n)) << what;
  EXPECT_NEAR(m.std, std, 5 * std * std::sqrt((kurtosis - 1) / (4 * n))) << what;
}

// U(-bound, bound): every value inside, the extremes close to the bound, moments of the uniform.
void expect_uniform(const Tensor& t, double lo, double hi, const std::string& what) {
  const Moments m = moments(t);
  EXPECT_GE(m.min, lo) << what;
  EXPECT_LE(m.max, hi) << what;
  // With n samples the gap to either end is ~ (hi-lo)/n; 50/n is a loose but failing-capable check.
  EXPECT_LT(m.min - lo, 50 * (hi - lo) / static_cast<double>(m.n)) << what;
  EXPECT_LT(hi - m.max, 50 * (hi - lo) / static_cast<double>(m.n)) << what;
  expect_moments(t, (lo + hi) / 2, (hi - lo) / std::sqrt(12.0), 1.8, what);
}

void expect_normal(const Tensor& t, double mean, double std, const std::string& what) {
  expect_moments(t, mean, std, 3.0, what);
  // Share within one sigma: 0.6827 +- 5 binomial SE.
  const std::vector<double> v = t.to_vector<double>();
  int64_t inside = 0;
  for (double x : v) inside += std::fabs(x - mean) <= std;
  const double n = static_cast<double>(v.size()), p = 0.682689492137;
  EXPECT_NEAR(static_cast<double>(inside) / n, p, 5 * std::sqrt(p * (1 - p) / n)) << what;
}

void expect_all(const Tensor& t, double value, const std::string& what) {
  for (double x : t.to_vector<double>()) {
    ASSERT_EQ(x, value) << what;
  }
}

bool equal_exact(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<double>() == b.to_vector<double>();
}

// max |MᵀM - I| for M (rows, cols) viewed as a matrix with orthonormal columns (or rows when wide).
double orthonormality_error(const Tensor& t, double gain = 1.0) {
  const int64_t rows = t.size(0), cols = t.numel() / rows;
  Tensor m = t.detach().reshape({rows, cols}).to(DType::Float64);
  Tensor g = rows >= cols ? matmul(m.t().contiguous(), m) : matmul(m, m.t().contiguous());
  const int64_t k = g.size(0);
  const std::vector<double> v = g.to_vector<double>();
  double err = 0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) err = std::max(err, std::fabs(v[i * k + j] - (i == j ? gain * gain : 0.0)));
  return err;
}

}  // namespace

// ---- fans and gains -----------------------------------------------------------------------------

TEST(Init, FansAndGains) {
  Fans f = calculate_fan_in_and_fan_out({8, 3});
  EXPECT_EQ(f.fan_in, 3);
  EXPECT_EQ(f.fan_out, 8);
  f = calculate_fan_in_and_fan_out({16, 4, 3, 5});
  EXPECT_EQ(f.fan_in, 4 * 15);
  EXPECT_EQ(f.fan_out, 16 * 15);
  EXPECT_THROW(calculate_fan_in_and_fan_out({5}), Error);
  f = paddle_fans({7});
  EXPECT_EQ(f.fan_in, 7);
  EXPECT_EQ(f.fan_out, 7);
  f = paddle_fans({3, 8});  // Paddle Linear [in, out]
  EXPECT_EQ(f.fan_in, 3);
  EXPECT_EQ(f.fan_out, 8);
  f = paddle_fans({16, 4, 3, 5});
  EXPECT_EQ(f.fan_in, 60);
  EXPECT_EQ(f.fan_out, 240);
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Linear), 1.0);
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Conv), 1.0);
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Sigmoid), 1.0);
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Tanh), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Relu), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::LeakyRelu), std::sqrt(2.0 / (1 + 0.01 * 0.01)));
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::LeakyRelu, 0.0), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::LeakyRelu, std::sqrt(5.0)), std::sqrt(1.0 / 3.0));
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Selu), 0.75);
}

// ---- elementary initialisers --------------------------------------------------------------------

TEST(Init, UniformNormalConstant) {
  Generator gen(1);
  Tensor t = Tensor::empty({400, 500});
  uniform_(t, -0.3, 0.7, gen);
  expect_uniform(t, -0.3, 0.7, "uniform_");
  normal_(t, 0.5, 2.0, gen);
  expect_normal(t, 0.5, 2.0, "normal_");
  Tensor d = Tensor::empty({1001}, DType::Float64);  // odd size: the last Box-Muller pair is half used
  normal_(d, -1.0, 0.1, gen);
  EXPECT_NEAR(moments(d).mean, -1.0, 5 * 0.1 / std::sqrt(1001.0));
  constant_(t, 0.25);
  expect_all(t, 0.25, "constant_");
  zeros_(t);
  expect_all(t, 0.0, "zeros_");
  ones_(t);
  expect_all(t, 1.0, "ones_");
  // Through a non-contiguous view: only the viewed elements change.
  Tensor base = Tensor::zeros({6, 8});
  uniform_(base.detach().slice(1, 0, 8, 2), 1.0, 2.0, gen);
  const std::vector<float> v = base.to_vector<float>();
  for (int i = 0; i < 48; ++i) {
    if (i % 2 == 0) {
      EXPECT_GE(v[i], 1.0f);
    }
    else EXPECT_EQ(v[i], 0.0f);
  }
  EXPECT_THROW(uniform_(Tensor::empty({3}, DType::Int64), 0, 1, gen), Error);
  EXPECT_THROW(uniform_(t, 1.0, 0.0, gen), Error);
}

TEST(Init, KaimingBounds) {
  struct Case {
    Shape shape;
    double a;
    FanMode mode;
    Nonlinearity nl;
    double bound;
  };
  const double in = 300, out = 400;
  const Case cases[] = {
      // torch defaults: leaky_relu with a = 0 -> gain sqrt(2) -> sqrt(6 / fan_in)
      {{400, 300}, 0.0, FanMode::FanIn, Nonlinearity::LeakyRelu, std::sqrt(6.0 / in)},
      {{400, 300}, 0.0, FanMode::FanOut, Nonlinearity::Relu, std::sqrt(6.0 / out)},
      // Linear's a = sqrt(5): bound 1/sqrt(fan_in)
      {{400, 300}, std::sqrt(5.0), FanMode::FanIn, Nonlinearity::LeakyRelu, 1.0 / std::sqrt(in)},
      {{400, 300}, 0.0, FanMode::FanIn, Nonlinearity::Tanh, std::sqrt(3.0) * 5.0 / 3.0 / std::sqrt(in)},
      {{64, 16, 5, 5}, 0.0, FanMode::FanIn, Nonlinearity::Linear, std::sqrt(3.0 / (16 * 25))},
  };
  Generator gen(2);
  for (const Case& c : cases) {
    Tensor t = Tensor::empty(c.shape);
    kaiming_uniform_(t, c.a, c.mode, c.nl, gen);
    expect_uniform(t, -c.bound, c.bound, "kaiming_uniform_ " + shape_str(c.shape));
    kaiming_normal_(t, c.a, c.mode, c.nl, gen);
    expect_normal(t, 0.0, c.bound / std::sqrt(3.0), "kaiming_normal_ " + shape_str(c.shape));
  }
  EXPECT_THROW(kaiming_uniform_(Tensor::empty({5}), 0.0, FanMode::FanIn, Nonlinearity::Relu, gen), Error);
}

TEST(Init, XavierBounds) {
  Generator gen(3);
  Tensor t = Tensor::empty({400, 300});
  xavier_uniform_(t, 1.0, gen);
  expect_uniform(t, -std::sqrt(6.0 / 700), std::sqrt(6.0 / 700), "xavier_uniform_");
  xavier_uniform_(t, 2.0, gen);
  expect_uniform(t, -2 * std::sqrt(6.0 / 700), 2 * std::sqrt(6.0 / 700), "xavier_uniform_ gain 2");
  xavier_normal_(t, 1.5, gen);
  expect_normal(t, 0.0, 1.5 * std::sqrt(2.0 / 700), "xavier_normal_");
  Tensor c = Tensor::empty({32, 16, 3, 3});
  xavier_uniform_(c, 1.0, gen);
  const double a = std::sqrt(6.0 / (9.0 * (16 + 32)));
  expect_uniform(c, -a, a, "xavier_uniform_ conv");
}

TEST(Init, OrthogonalIsOrthonormal) {
  Generator gen(4);
  for (const Shape& s : {Shape{64, 32}, Shape{32, 64}, Shape{48, 48}, Shape{8, 4, 3, 3}, Shape{96, 32}}) {
    Tensor t = Tensor::empty(s);
    orthogonal_(t, 1.0, gen);
    EXPECT_LT(orthonormality_error(t), 1e-5) << shape_str(s);
    Tensor d = Tensor::empty(s, DType::Float64);
    orthogonal_(d, 1.0, gen);
    EXPECT_LT(orthonormality_error(d), 1e-12) << shape_str(s);
  }
  Tensor g = Tensor::empty({40, 20});
  orthogonal_(g, 2.0, gen);
  EXPECT_LT(orthonormality_error(g, 2.0), 4e-5);
  // Haar-distributed entries of a (n x n) orthogonal matrix have mean 0 and variance 1/n.
  Tensor big = Tensor::empty({300, 300}, DType::Float64);
  orthogonal_(big, 1.0, gen);
  expect_moments(big, 0.0, 1.0 / std::sqrt(300.0), 3.0, "orthogonal_ entries");
  EXPECT_THROW(orthogonal_(Tensor::empty({5}), 1.0, gen), Error);
}

TEST(Init, DeterministicForFixedSeedAndThreadCount) {
  auto draw = [](uint64_t seed) {
    Generator g(seed);
    Tensor a = Tensor::empty({300, 200}), b = Tensor::empty({300, 200}), c = Tensor::empty({20, 10});
    uniform_(a, -1, 1, g);
    normal_(b, 0, 1, g);
    orthogonal_(c, 1, g);
    return std::vector<Tensor>{a, b, c};
  };
  const auto x = draw(7), y = draw(7), z = draw(8);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(equal_exact(x[i], y[i])) << i;
    EXPECT_FALSE(equal_exact(x[i], z[i])) << i;
  }
  // Successive draws from one generator differ.
  EXPECT_FALSE(equal_exact(x[0].narrow(0, 0, 20).narrow(1, 0, 10), x[2]));
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto w = draw(7);
  omp_set_num_threads(threads);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(equal_exact(x[i], w[i])) << i;
}

// ---- presets ------------------------------------------------------------------------------------

TEST(InitPreset, Torch) {
  Generator gen(10);
  Linear lin(300, 400, true, &gen);
  const double b = 1.0 / std::sqrt(300.0);
  expect_uniform(lin.weight(), -b, b, "torch Linear.weight");
  const Moments mb = moments(lin.bias());
  EXPECT_LE(mb.max_abs, b);
  EXPECT_GT(mb.max_abs, 0.9 * b);

  Conv2d conv(Conv2dLayerOptions(16, 64, 3), &gen);
  const double bc = 1.0 / std::sqrt(16.0 * 9);
  expect_uniform(conv.weight(), -bc, bc, "torch Conv2d.weight");
  EXPECT_LE(moments(conv.bias()).max_abs, bc);

  Embedding emb(1000, 64, 3, &gen);
  expect_normal(emb.weight().narrow(0, 4, 996), 0.0, 1.0, "torch Embedding.weight");
  expect_all(emb.weight().select(0, 3), 0.0, "padding row");

  GRUCell gru(64, 128, true, &gen);
  const double bg = 1.0 / std::sqrt(128.0);
  for (auto& [n, p] : gru.named_parameters()) {
    const Moments m = moments(p);
    EXPECT_LE(m.max_abs, bg) << n;
    EXPECT_GT(m.max_abs, 0.95 * bg) << n;
  }
  expect_uniform(gru.weight_hh(), -bg, bg, "torch GRUCell.weight_hh");

  BatchNorm2d bn(8);
  expect_all(bn.weight(), 1.0, "bn weight");
  expect_all(bn.bias(), 0.0, "bn bias");
  expect_all(bn.running_mean(), 0.0, "bn running_mean");
  expect_all(bn.running_var(), 1.0, "bn running_var");
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 0);
}

TEST(InitPreset, Paddle) {
  Generator gen(11);
  auto model = std::make_shared<Module>("Model");
  auto lin = model->register_module("lin", std::make_shared<Linear>(300, 400));
  auto conv = model->register_module("conv", std::make_shared<Conv2d>(Conv2dLayerOptions(16, 64, {3, 5})));
  auto bn = model->register_module("bn", std::make_shared<BatchNorm2d>(64));
  auto emb = model->register_module("emb", std::make_shared<Embedding>(1000, 64, 0));
  auto gru = model->register_module("gru", std::make_shared<GRUCell>(64, 128));
  // Dirty the BatchNorm state so the preset has to restore it.
  bn->weight().detach().fill_(3.0);
  bn->running_var().fill_(5.0);
  apply_init_preset(*model, InitPreset::Paddle, gen);

  const double al = std::sqrt(6.0 / 700);
  expect_uniform(lin->weight(), -al, al, "paddle Linear.weight");
  expect_all(lin->bias(), 0.0, "paddle Linear.bias");
  expect_normal(conv->weight(), 0.0, std::sqrt(2.0 / (15.0 * 16)), "paddle Conv2d.weight");
  expect_all(conv->bias(), 0.0, "paddle Conv2d.bias");
  expect_all(bn->weight(), 1.0, "paddle bn weight");
  expect_all(bn->running_var(), 1.0, "paddle bn running_var");
  const double ae = std::sqrt(6.0 / (1000 + 64));
  expect_uniform(emb->weight().narrow(0, 1, 999), -ae, ae, "paddle Embedding.weight");
  expect_all(emb->weight().select(0, 0), 0.0, "paddle padding row");
  const double bg = 1.0 / std::sqrt(128.0);
  expect_uniform(gru->weight_ih(), -bg, bg, "paddle GRUCell.weight_ih");
  EXPECT_LE(moments(gru->bias_hh()).max_abs, bg);
  EXPECT_GT(moments(gru->bias_hh()).max_abs, 0.9 * bg);  // biases are random too (not zero)
}

TEST(InitPreset, Keras) {
  Generator gen(12);
  auto model = std::make_shared<Module>("Model");
  auto lin = model->register_module("lin", std::make_shared<Linear>(300, 400));
  auto conv = model->register_module("conv", std::make_shared<Conv2d>(Conv2dLayerOptions(16, 64, 3)));
  auto bn = model->register_module("bn", std::make_shared<BatchNorm2d>(64));
  auto emb = model->register_module("emb", std::make_shared<Embedding>(1000, 64));
  const int64_t I = 96, H = 64;
  auto gru = model->register_module("gru", std::make_shared<GRUCell>(I, H));
  apply_init_preset(*model, InitPreset::Keras, gen);

  const double al = std::sqrt(6.0 / 700);
  expect_uniform(lin->weight(), -al, al, "keras Dense kernel");
  expect_all(lin->bias(), 0.0, "keras Dense bias");
  const double ac = std::sqrt(6.0 / (9.0 * (16 + 64)));
  expect_uniform(conv->weight(), -ac, ac, "keras Conv2D kernel");
  expect_all(conv->bias(), 0.0, "keras Conv2D bias");
  expect_all(bn->weight(), 1.0, "keras gamma");
  expect_all(bn->bias(), 0.0, "keras beta");
  expect_uniform(emb->weight(), -0.05, 0.05, "keras Embedding");
  // GRU kernel: glorot over the whole (I, 3U) kernel.
  const double ag = std::sqrt(6.0 / (I + 3 * H));
  expect_uniform(gru->weight_ih(), -ag, ag, "keras GRU kernel");
  // Recurrent kernel: the (3H, H) torch matrix has orthonormal columns.
  EXPECT_LT(orthonormality_error(gru->weight_hh()), 1e-5);
  expect_all(gru->bias_ih(), 0.0, "keras GRU input bias");
  expect_all(gru->bias_hh(), 0.0, "keras GRU recurrent bias");
}

TEST(InitPreset, KerasGruRecurrentKernelBlockOrder) {
  // Replays the preset's draws: kernel first, then the (3U, U) orthogonal q whose transpose is
  // Keras' recurrent_kernel with column blocks [z | r | h]. Torch rows [r; z; n] = q rows [U:2U, 0:U, 2U:3U].
  const int64_t I = 5, H = 4;
  Generator g1(77), g2(77);
  GRUCell gru(I, H);
  gru.reset_parameters(InitPreset::Keras, g1);
  Tensor kernel = Tensor::empty({3 * H, I});
  uniform_(kernel, -1, 1, g2);
  Tensor q = Tensor::empty({3 * H, H}, DType::Float64);
  orthogonal_(q, 1.0, g2);
  Tensor expect = cat({q.narrow(0, H, H), q.narrow(0, 0, H), q.narrow(0, 2 * H, H)}, 0).to(DType::Float32);
  EXPECT_TRUE(equal_exact(gru.weight_hh(), expect));
  EXPECT_EQ(g1.offset(), g2.offset());
}

TEST(InitPreset, DeterministicAndDefaultGenerator) {
  auto build = [](Generator* g) {
    auto m = std::make_shared<Sequential>();
    m->push_back(std::make_shared<Conv2d>(Conv2dLayerOptions(3, 8, 3), g));
    m->push_back(std::make_shared<BatchNorm2d>(8));
    m->push_back(std::make_shared<Linear>(8, 4, true, g));
    m->push_back(std::make_shared<Embedding>(20, 4, std::nullopt, g));
    return m;
  };
  auto same = [](const Module& a, const Module& b) {
    NamedTensors sa = a.state_dict(), sb = b.state_dict();
    if (sa.size() != sb.size()) return false;
    for (size_t i = 0; i < sa.size(); ++i)
      if (sa[i].first != sb[i].first || !equal_exact(sa[i].second, sb[i].second)) return false;
    return true;
  };
  Generator g1(5), g2(5), g3(6);
  auto a = build(&g1), b = build(&g2), c = build(&g3);
  EXPECT_TRUE(same(*a, *b));
  EXPECT_FALSE(same(*a, *c));
  manual_seed(9);
  auto d = build(nullptr);
  manual_seed(9);
  auto e = build(nullptr);
  EXPECT_TRUE(same(*d, *e));
  for (InitPreset p : {InitPreset::Torch, InitPreset::Paddle, InitPreset::Keras}) {
    Generator h1(3), h2(3);
    apply_init_preset(*a, p, h1);
    apply_init_preset(*c, p, h2);
    EXPECT_TRUE(same(*a, *c)) << init_preset_name(p);
  }
  // The torch preset re-applied from the constructors' seed reproduces the constructed weights.
  Generator h(5);
  auto f = build(&g3);
  apply_init_preset(*f, InitPreset::Torch, h);
  Generator g4(5);
  EXPECT_TRUE(same(*f, *build(&g4)));
  EXPECT_EQ(init_preset_from_string("keras"), InitPreset::Keras);
  EXPECT_THROW(init_preset_from_string("jax"), Error);
}
