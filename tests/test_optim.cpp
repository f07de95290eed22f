// Optimizers, lr schedules, gradient clipping, state dicts, what-moved probe and the optim factory.
//   * 100-step trajectories of torch.optim (1.13, float32 CPU) compared BIT FOR BIT, parameters after
//     every step and the final optimizer state (tools/reference/ref_optim.py).
//   * Paddle variants against numpy float32 emulations of the kernels (same script), bit for bit.
//   * framework-semantics.md §11 test vectors and the §1.3 illustration.
//   * CAN's schedule (can-model.md §10) at every one of 240 x 1105 steps against the formula.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numbers>
#include <sstream>

#include "core/serialization.h"
#include "optim/adadelta.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/factory.h"
#include "optim/lr_schedule.h"
#include "optim/sgd.h"
#include "optim/what_moved.h"
#include "tests/testing.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace hmer;
using namespace hmer::optim;
using namespace hmer::test;

namespace {

constexpr int kSteps = 100;
constexpr int kParams = 3;
constexpr float kGradK = 0.3f;  // ref_optim.py K
constexpr double kGroup1LrFactor = 0.5;
// Bit-exact parity: the largest allowed distance in units in the last place between our float32
// results and the reference (0 = identical bits).
constexpr int64_t kMaxUlps = tol::kOptimMaxUlps;

// Distance in ulps between two floats (0 for identical bits; NaNs compare by bits).
int64_t ulp_distance(float a, float b) {
  const auto key = [](float f) {
    const int32_t i = std::bit_cast<int32_t>(f);
    return i < 0 ? static_cast<int64_t>(std::numeric_limits<int32_t>::min()) - i : static_cast<int64_t>(i);
  };
  if (std::isnan(a) || std::isnan(b))
    return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b) ? 0 : std::numeric_limits<int32_t>::max();
  return std::llabs(key(a) - key(b));
}

struct BitStats {
  int64_t n = 0, mismatched = 0, max_ulp = 0;
  double max_abs = 0;
  std::string first;  // description of the first mismatch
  void add(const float* a, const float* e, int64_t count, const std::string& where) {
    for (int64_t i = 0; i < count; ++i) {
      ++n;
      const int64_t u = ulp_distance(a[i], e[i]);
      if (u == 0) continue;
      ++mismatched;
      max_ulp = std::max(max_ulp, u);
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(a[i]) - e[i]));
      if (first.empty()) {
        char buf[256];
        std::snprintf(buf, sizeof(buf), "%s[%lld]: %.9g vs expected %.9g (%lld ulp)", where.c_str(),
                      static_cast<long long>(i), a[i], e[i], static_cast<long long>(u));
        first = buf;
      }
    }
  }
  ::testing::AssertionResult report(const std::string& what) const {
    std::printf("PARITY %s max_abs=%.3g max_ulp=%lld mismatched=%lld n=%lld\n", what.c_str(), max_abs,
                static_cast<long long>(max_ulp), static_cast<long long>(mismatched), static_cast<long long>(n));
    if (max_ulp <= kMaxUlps) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << what << ": " << mismatched << " of " << n
                                         << " floats differ from the reference, max " << max_ulp
                                         << " ulp; first: " << first;
  }
};

::testing::AssertionResult bits_equal(const Tensor& actual, const Tensor& expected, const std::string& what) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(actual.shape()) << " vs "
                                         << shape_str(expected.shape());
  const Tensor a = actual.contiguous(), e = expected.contiguous();
  BitStats s;
  s.add(a.data_ptr<float>(), e.data_ptr<float>(), a.numel(), what);
  return s.report(what);
}

Tensor own_copy(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  c.copy_(t);
  return c;
}

// The deterministic gradient of ref_optim.py: 0 where the noise is 0, else fl(fl(K*θ) + noise).
void set_grad_from_noise(Tensor p, const float* noise) {
  Tensor g = Tensor::empty(p.shape());
  float* gd = g.data_ptr<float>();
  const float* pd = p.data_ptr<float>();
  for (int64_t i = 0; i < p.numel(); ++i) gd[i] = noise[i] == 0.0f ? 0.0f : kGradK * pd[i] + noise[i];
  p.set_grad(g);
}

struct Fixture {
  std::vector<Tensor> params;
  std::vector<Tensor> noise;  // (kSteps, *shape)
};

Fixture load_fixture() {
  Fixture f;
  for (int i = 0; i < kParams; ++i) {
    f.params.push_back(own_copy(ref("optim", "init__p" + std::to_string(i))));
    f.noise.push_back(ref("optim", "noise__p" + std::to_string(i)));
  }
  return f;
}

// Groups as in ref_optim.py: {p0, p1} with the case's weight decay, {p2} with no weight decay.
std::vector<ParamGroup> two_groups(const std::vector<Tensor>& p, double wd) {
  ParamGroup a, b;
  a.params = {p[0], p[1]};
  a.weight_decay = wd;
  b.params = {p[2]};
  b.weight_decay = 0.0;
  return {a, b};
}

using MakeOpt = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>;

// Runs kSteps steps with the lr of <case>__lrs, comparing the parameters after every step and the
// final state buffers (when the reference has them) bit for bit.
void check_trajectory(const std::string& name, double wd, const MakeOpt& make) {
  Fixture f = load_fixture();
  const std::vector<double> lrs = ref("optim", name + "__lrs").to_vector<double>();
  ASSERT_EQ(lrs.size(), static_cast<size_t>(kSteps));
  std::vector<Tensor> traj;
  for (int i = 0; i < kParams; ++i) traj.push_back(ref("optim", name + "__traj__p" + std::to_string(i)));
  std::unique_ptr<Optimizer> opt = make(two_groups(f.params, wd));
  BitStats stats;
  int first_bad_step = -1;
  for (int t = 0; t < kSteps; ++t) {
    opt->param_groups()[0].lr = lrs[t];
    opt->param_groups()[1].lr = lrs[t] * kGroup1LrFactor;
    for (int i = 0; i < kParams; ++i)
      set_grad_from_noise(f.params[i], f.noise[i].data_ptr<float>() + t * f.params[i].numel());
    opt->step();
    const int64_t before = stats.mismatched;
    for (int i = 0; i < kParams; ++i) {
      const int64_t n = f.params[i].numel();
      stats.add(f.params[i].data_ptr<float>(), traj[i].data_ptr<float>() + t * n, n,
                name + " step " + std::to_string(t + 1) + " p" + std::to_string(i));
    }
    if (stats.mismatched > before && first_bad_step < 0) first_bad_step = t + 1;
  }
  EXPECT_TRUE(stats.report("optim." + name + ".trajectory")) << "first differing step: " << first_bad_step;
  BitStats state;
  int compared = 0;
  const std::vector<std::string> names = opt->buffer_names();
  for (int i = 0; i < kParams; ++i) {
    const size_t g = i < 2 ? 0 : 1, k = i < 2 ? i : 0;
    const Optimizer::ParamState* st = opt->state(g, k);
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->step, kSteps);
    for (size_t b = 0; b < names.size(); ++b) {
      const std::string rn = name + "__state__p" + std::to_string(i) + "__" + names[b];
      if (!ref_exists("optim", rn)) continue;
      const Tensor e = ref("optim", rn);
      state.add(st->buffers[b].data_ptr<float>(), e.data_ptr<float>(), e.numel(), rn);
      ++compared;
    }
  }
  EXPECT_EQ(compared, kParams * static_cast<int>(names.size())) << name << ": state buffers missing in the reference";
  EXPECT_TRUE(state.report("optim." + name + ".state"));
}

}  // namespace

// ---- PyTorch parity: 100 steps, lr changing every step, weight decay, two groups ------------------

TEST(OptimTorchParity, Sgd) {
  check_trajectory("sgd", 1e-2, [](std::vector<ParamGroup> g) { return std::make_unique<SGD>(g, SGDOptions(0.05)); });
}
TEST(OptimTorchParity, SgdMomentum) {
  check_trajectory("sgd_momentum", 1e-2,
                   [](std::vector<ParamGroup> g) { return std::make_unique<SGD>(g, SGDOptions(0.05).momentum(0.9)); });
}
TEST(OptimTorchParity, SgdMomentumDampening) {
  check_trajectory("sgd_momentum_dampening", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<SGD>(g, SGDOptions(0.05).momentum(0.9).dampening(0.3));
  });
}
TEST(OptimTorchParity, SgdNesterov) {
  check_trajectory("sgd_nesterov", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<SGD>(g, SGDOptions(0.05).momentum(0.9).nesterov(true));
  });
}
TEST(OptimTorchParity, Adadelta) {
  check_trajectory("adadelta", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<Adadelta>(g, AdadeltaOptions::torch().lr(1.0).rho(0.9).eps(1e-6));
  });
}
TEST(OptimTorchParity, AdadeltaRho95) {
  check_trajectory("adadelta_rho95", 1e-4, [](std::vector<ParamGroup> g) {
    return std::make_unique<Adadelta>(g, AdadeltaOptions::torch().rho(0.95).eps(1e-5));
  });
}
TEST(OptimTorchParity, Adam) {
  check_trajectory("adam", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<Adam>(g, AdamOptions().lr(1e-2).beta1(0.9).beta2(0.999).eps(1e-8));
  });
}
TEST(OptimTorchParity, AdamAmsgrad) {
  check_trajectory("adam_amsgrad", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<Adam>(g, AdamOptions().lr(1e-2).amsgrad(true));
  });
}
TEST(OptimTorchParity, AdamW) {
  check_trajectory("adamw", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<AdamW>(g, AdamWOptions().lr(1e-2).beta1(0.8).beta2(0.99).eps(1e-6));
  });
}

// ---- Paddle: numpy float32 emulations of the kernels ----------------------------------------------

TEST(OptimPaddleParity, Adadelta) {
  check_trajectory("paddle_adadelta", 1e-4, [](std::vector<ParamGroup> g) {
    return std::make_unique<Adadelta>(g, AdadeltaOptions::paddle());
  });
}
TEST(OptimPaddleParity, AdadeltaWeightDecayRho09) {
  check_trajectory("paddle_adadelta_wd", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<Adadelta>(g, AdadeltaOptions::paddle().rho(0.9));
  });
}
TEST(OptimPaddleParity, AdadeltaAliasedUpdate) {
  check_trajectory("paddle_adadelta_aliased", 1e-4, [](std::vector<ParamGroup> g) {
    return std::make_unique<Adadelta>(g, AdadeltaOptions::paddle().paddle_aliased_update(true));
  });
}
TEST(OptimPaddleParity, Momentum) {
  check_trajectory("paddle_momentum", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<PaddleMomentum>(g, PaddleMomentumOptions().momentum(0.9));
  });
}
TEST(OptimPaddleParity, MomentumNesterov) {
  check_trajectory("paddle_momentum_nesterov", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<PaddleMomentum>(g, PaddleMomentumOptions().momentum(0.9).nesterov(true));
  });
}
TEST(OptimPaddleParity, SgdIsMomentumZero) {
  check_trajectory("paddle_sgd", 1e-2, [](std::vector<ParamGroup> g) {
    return std::make_unique<PaddleMomentum>(g, PaddleMomentumOptions().momentum(0.0));
  });
}

// Paddle <= 2.4 Adadelta applies no learning rate: lr 1, lr 0.5 and a warm-up + cosine schedule
// give the same trajectory bit for bit, while torch's Adadelta does follow the lr.
TEST(OptimPaddleAdadelta, LearningRateHasNoEffect) {
  const auto run = [](Variant variant, bool aliased, const std::function<double(int)>& lr_at) {
    Fixture f = load_fixture();
    AdadeltaOptions o = variant == Variant::Paddle ? AdadeltaOptions::paddle().paddle_aliased_update(aliased)
                                                   : AdadeltaOptions::torch();
    Adadelta opt(two_groups(f.params, 1e-4), o);
    for (int t = 0; t < 40; ++t) {
      opt.set_lr(lr_at(t));
      for (int i = 0; i < kParams; ++i)
        set_grad_from_noise(f.params[i], f.noise[i].data_ptr<float>() + t * f.params[i].numel());
      opt.step();
    }
    return f.params;
  };
  const CosineSchedule cosine(30, 0.0, ScheduleUnit::Step);
  const LinearWarmupSchedule warm(std::make_unique<CosineSchedule>(30, 0.0, ScheduleUnit::Step), 5, 0.0, -1.0,
                                  ScheduleUnit::Step);
  const auto sched = [&](int t) { return warm.lr({0, t, 1000}, 1.0); };
  for (bool aliased : {false, true}) {
    const auto a = run(Variant::Paddle, aliased, [](int) { return 1.0; });
    const auto b = run(Variant::Paddle, aliased, [](int) { return 0.5; });
    const auto c = run(Variant::Paddle, aliased, sched);
    for (int i = 0; i < kParams; ++i) {
      const std::string tag = std::string(aliased ? "aliased" : "plain") + ".p" + std::to_string(i);
      EXPECT_TRUE(bits_equal(b[i], a[i], "optim.paddle_adadelta_lr0.5_vs_lr1." + tag));
      EXPECT_TRUE(bits_equal(c[i], a[i], "optim.paddle_adadelta_cosine_vs_lr1." + tag));
    }
  }
  // The control: the same comparison for torch fails, so the test above can tell.
  const auto ta = run(Variant::Torch, false, [](int) { return 1.0; });
  const auto tb = run(Variant::Torch, false, [](int) { return 0.5; });
  EXPECT_NE(ta[0].to_vector<float>(), tb[0].to_vector<float>());
  EXPECT_NEAR(sched(0), 0.0, 0.0);  // the schedule does start at 0: torch would not move at step 1
}

// ---- framework-semantics.md §11 and §1.3 ----------------------------------------------------------

namespace {

// θ after each of 3 steps from θ0 = [1, −2, 0.5] with the §11 gradients (lr per step optional).
std::vector<std::vector<float>> three_steps(Optimizer& opt, Tensor p, const std::vector<double>& lrs = {}) {
  const float grads[3][3] = {{0.5f, -0.3f, 0.2f}, {0.1f, 0.4f, -0.6f}, {-0.2f, 0.2f, 0.05f}};
  std::vector<std::vector<float>> out;
  for (int t = 0; t < 3; ++t) {
    if (!lrs.empty()) opt.set_lr(lrs[t]);
    p.set_grad(Tensor::from_vector(std::vector<float>(grads[t], grads[t] + 3), {3}));
    opt.step();
    out.push_back(p.to_vector<float>());
  }
  return out;
}

Tensor theta0() { return Tensor::from_vector(std::vector<float>{1.0f, -2.0f, 0.5f}, {3}); }

// Compares to the table's 9-significant-digit values, which identify a float32 exactly.
void expect_table(const std::vector<std::vector<float>>& got, const std::vector<std::vector<double>>& table,
                  const std::string& what) {
  BitStats s;
  for (int t = 0; t < 3; ++t) {
    std::vector<float> e;
    for (double v : table[t]) e.push_back(static_cast<float>(v));
    s.add(got[t].data(), e.data(), 3, what + " step " + std::to_string(t + 1));
  }
  EXPECT_TRUE(s.report(what));
}

}  // namespace

TEST(OptimSpecVectors, Table11) {
  {
    Tensor p = theta0();
    Adadelta opt(std::vector<Tensor>{p}, AdadeltaOptions::torch().lr(1).rho(0.9).eps(1e-6));
    expect_table(three_steps(opt, p),
                 {{.996837795, -1.99683785, .496838123},
                  {.995915294, -2.00048161, .501101792},
                  {.997692108, -2.00272322, .500592887}},
                 "optim.table11.adadelta");
  }
  {
    Tensor p = theta0();
    Adadelta opt(std::vector<Tensor>{p}, AdadeltaOptions::torch().lr(1).rho(0.95).weight_decay(0.01));
    expect_table(three_steps(opt, p),
                 {{.995528042, -1.99552834, .495528936},
                  {.994162142, -2.00041676, .501523614},
                  {.996448517, -2.0032053, .500748396}},
                 "optim.table11.adadelta_rho95_wd");
  }
  {
    Tensor p = theta0();
    SGD opt(std::vector<Tensor>{p}, SGDOptions(0.1).momentum(0.9));
    expect_table(three_steps(opt, p),
                 {{.949999988, -1.97000003, .479999989},
                  {.894999981, -1.98300004, .522000015},
                  {.865499973, -2.01469994, .554800034}},
                 "optim.table11.sgd_momentum");
  }
  {
    Tensor p = theta0();
    SGD opt(std::vector<Tensor>{p}, SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
    expect_table(three_steps(opt, p),
                 {{.903100014, -1.93920004, .461050004},
                  {.841074109, -1.98559558, .557569027},
                  {.831465542, -2.0273242, .580291688}},
                 "optim.table11.sgd_nesterov_wd");
  }
  {
    Tensor p = theta0();
    Adam opt(std::vector<Tensor>{p}, AdamOptions().lr(1e-2));
    expect_table(three_steps(opt, p),
                 {{.99000001, -1.99000001, .49000001},
                  {.981969595, -1.99193513, .49494192},
                  {.978526056, -1.99569774, .498246402}},
                 "optim.table11.adam");
  }
  {
    Tensor p = theta0();
    AdamW opt(std::vector<Tensor>{p}, AdamWOptions().lr(1e-2).weight_decay(1e-2));
    expect_table(three_steps(opt, p),
                 {{.989899993, -1.98979998, .489950001},
                  {.981770575, -1.99153614, .494842917},
                  {.978228867, -1.99509954, .498097897}},
                 "optim.table11.adamw");
  }
}

// "Paddle Momentum with dampening 0 should give the same values up to rounding" (§11).
TEST(OptimSpecVectors, PaddleMomentumMatchesTorchUpToRounding) {
  Tensor a = theta0(), b = theta0();
  SGD torch_opt(std::vector<Tensor>{a}, SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
  PaddleMomentum paddle_opt(std::vector<Tensor>{b},
                            PaddleMomentumOptions().lr(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
  const auto x = three_steps(torch_opt, a), y = three_steps(paddle_opt, b);
  for (int t = 0; t < 3; ++t)
    EXPECT_TRUE(all_close(Tensor::from_vector(y[t], {3}), Tensor::from_vector(x[t], {3}), tol::kElementwise,
                          "optim.paddle_vs_torch_nesterov.step" + std::to_string(t + 1)));
}

// §1.3: rho 0.95, eps 1e-6, lr_t = [0.1, 0.55, 1.0]; torch honours it, Paddle <= 2.4 does not.
TEST(OptimSpecVectors, Illustration13) {
  const std::vector<double> lrs = {0.1, 0.55, 1.0};
  Tensor a = theta0(), b = theta0();
  Adadelta torch_opt(std::vector<Tensor>{a}, AdadeltaOptions::torch().rho(0.95));
  Adadelta paddle_opt(std::vector<Tensor>{b}, AdadeltaOptions::paddle().rho(0.95));
  const auto x = three_steps(torch_opt, a, lrs), y = three_steps(paddle_opt, b, lrs);
  EXPECT_TRUE(all_close(Tensor::from_vector(x[2], {3}),
                        Tensor::from_vector(std::vector<float>{1.0012835f, -2.0054469f, 0.5021580f}, {3}),
                        tol::kElementwise, "optim.illustration13.torch"));
  EXPECT_TRUE(all_close(Tensor::from_vector(y[2], {3}),
                        Tensor::from_vector(std::vector<float>{0.9966868f, -2.0037198f, 0.5008405f}, {3}),
                        tol::kElementwise, "optim.illustration13.paddle"));
}

// ---- CAN schedule --------------------------------------------------------------------------------

namespace {

// can-model.md §10, written independently of optim/lr_schedule.cpp.
double can_formula(int64_t e, int64_t s, int64_t S, int64_t E, double lr0) {
  const double pi = std::numbers::pi;
  if (e == 0) return lr0 * static_cast<double>(s + 1) / static_cast<double>(S);
  const double k = static_cast<double>(s + 1 + (e - 1) * S);
  const double period = (e <= 200 ? 200.0 : static_cast<double>(E)) * static_cast<double>(S);
  return 0.5 * (1 + std::cos(pi * k / period)) * lr0;
}

YAML::Node can_config() { return YAML::LoadFile(std::string(HMER_SOURCE_DIR) + "/configs/can.yaml"); }

}  // namespace

TEST(OptimSchedule, CanMatchesFormulaAtEveryStep) {
  const YAML::Node root = can_config();
  const int64_t E = config_epochs(root, "configs/can.yaml");
  ASSERT_EQ(E, 240);
  const ScheduleSpec spec = build_schedule_spec(optim_section(root, "configs/can.yaml"), E);
  ASSERT_EQ(spec.base_lr, 1.0);
  const int64_t S = 1105;
  // What `hmer schedule` writes, parsed back.
  std::stringstream csv;
  write_schedule_csv(csv, *spec.schedule, spec.base_lr, E, S);
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "epoch,step,lr");
  double max_abs = 0;
  int64_t rows = 0, bad = 0;
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t s = 0; s < S; ++s) {
      ASSERT_TRUE(static_cast<bool>(std::getline(csv, line))) << "CSV ends early at epoch " << e << " step " << s;
      long long fe = -1, fs = -1;
      double lr = -1;
      ASSERT_EQ(std::sscanf(line.c_str(), "%lld,%lld,%lf", &fe, &fs, &lr), 3) << line;
      ASSERT_EQ(fe, e);
      ASSERT_EQ(fs, s);
      const double d = std::fabs(lr - can_formula(e, s, S, E, 1.0));
      max_abs = std::max(max_abs, d);
      if (d > tol::kSchedule.atol) ++bad;  // the acceptance bound
      ++rows;
    }
  }
  EXPECT_FALSE(static_cast<bool>(std::getline(csv, line))) << "extra CSV row: " << line;
  std::printf("PARITY optim.schedule.can_vs_formula max_abs=%.3g n=%lld\n", max_abs, static_cast<long long>(rows));
  EXPECT_EQ(bad, 0);
  const auto at = [&](int64_t e, int64_t s) { return spec.schedule->lr({e, s, S}, 1.0); };
  EXPECT_NEAR(at(0, 0), 9.0498e-4, 5e-9);
  EXPECT_NEAR(at(0, 1104), 1.0, 1e-15);
  EXPECT_NEAR(at(1, 0), 1.0, 1e-10);
  EXPECT_NEAR(at(100, 0), 0.50785, 5e-6);
  EXPECT_NEAR(at(200, 1104), 0.0, 1e-15);
  EXPECT_NEAR(at(201, 0), 0.066984, 5e-7);
  EXPECT_NEAR(at(220, 0), 0.018771, 5e-7);
  EXPECT_NEAR(at(239, 1104), 4.28e-5, 5e-8);
  EXPECT_GT(at(201, 0), at(200, 1104) + 0.06);  // the jump back up
}

// The `hmer schedule` binary end to end, when it has been built next to this test.
TEST(OptimSchedule, CliWritesCanCsv) {
  const std::filesystem::path bin = std::filesystem::path(HMER_REF_DIR).parent_path() / "bin" / "hmer";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << bin << " not built (ninja hmer_cli)";
  const std::string out = (std::filesystem::temp_directory_path() / "hmer_test_optim_lr.csv").string();
  const std::string cmd = bin.string() + " schedule --config " + HMER_SOURCE_DIR + "/configs/can.yaml" +
                          " --steps-per-epoch 1105 --out " + out + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(out);
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, "epoch,step,lr");
  int64_t rows = 0;
  double max_abs = 0;
  while (std::getline(f, line)) {
    long long e, s;
    double lr;
    ASSERT_EQ(std::sscanf(line.c_str(), "%lld,%lld,%lf", &e, &s, &lr), 3);
    max_abs = std::max(max_abs, std::fabs(lr - can_formula(e, s, 1105, 240, 1.0)));
    ++rows;
  }
  EXPECT_EQ(rows, 240 * 1105);
  EXPECT_LE(max_abs, tol::kSchedule.atol);
  std::filesystem::remove(out);
  // Bad invocations fail with a message instead of writing something.
  EXPECT_NE(std::system((bin.string() + " schedule --config /nonexistent.yaml --steps-per-epoch 3 --out - "
                                        "2>/dev/null >/dev/null").c_str()),
            0);
  EXPECT_EQ(std::system((bin.string() + " schedule --help >/dev/null").c_str()), 0);
}

TEST(OptimSchedule, ClosedFormsMatchTorchSchedulers) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"step", "{type: step, step_size: 7, gamma: 0.5}"},
      {"multistep", "{type: multistep, milestones: [5, 17, 40], gamma: 0.3}"},
      {"cosine", "{type: cosine, T_max: 25, eta_min: 0.001}"},
  };
  for (const auto& [name, yaml] : cases) {
    const auto sched = schedule_from_yaml(YAML::Load(yaml), -1);
    const Tensor expected = ref("optim", "sched_" + name);
    std::vector<double> got;
    for (int64_t e = 0; e < expected.numel(); ++e) got.push_back(sched->lr({e, 0, 10}, 0.1));
    // torch's cosine is recursive, ours the closed form: they differ only by double rounding.
    EXPECT_TRUE(all_close(Tensor::from_vector<double>(got, {expected.numel()}), expected, tol::kElementwise,
                          "optim.schedule." + name));
  }
}

TEST(OptimSchedule, WarmupAndUnits) {
  // Paddle LinearWarmup(CosineAnnealingDecay(base, T), W, 0, base): linear, then the closed form at t − W.
  const auto s = schedule_from_yaml(
      YAML::Load("{type: warmup, unit: step, length: 10, start_lr: 0, then: {type: cosine, T_max: 100}}"), -1);
  const double base = 0.01;
  EXPECT_DOUBLE_EQ(s->lr({0, 0, 50}, base), 0.0);
  EXPECT_DOUBLE_EQ(s->lr({0, 5, 50}, base), 0.005);
  EXPECT_DOUBLE_EQ(s->lr({0, 10, 50}, base), base);
  EXPECT_DOUBLE_EQ(s->lr({1, 10, 50}, base), base * (1 + std::cos(std::numbers::pi * 50 / 100)) / 2);
  // unit epoch: constant within an epoch
  const auto e = schedule_from_yaml(YAML::Load("{type: step, step_size: 2, gamma: 0.1}"), -1);
  EXPECT_DOUBLE_EQ(e->lr({1, 7, 9}, 1.0), 1.0);
  EXPECT_NEAR(e->lr({2, 0, 9}, 1.0), 0.1, 1e-16);
  // PaddleOCR's TwoStepCosine
  const auto two = schedule_from_yaml(YAML::Load("{type: two_step_cosine, unit: step, T_max1: 20, T_max2: 24}"), -1);
  EXPECT_NEAR(two->lr({0, 20, 100}, 1.0), 0.0, 1e-15);
  EXPECT_NEAR(two->lr({0, 21, 100}, 1.0), (1 + std::cos(std::numbers::pi * 21 / 24)) / 2, 1e-15);
  // PaddleOCR's CAN schedule (can-model.md §12): LinearWarmup from 0 to 0.01 over S steps around
  // TwoStepCosine with periods 200 S and 240 S, called with t = steps since the warm-up.
  const int64_t S = 1105;
  const auto ocr = schedule_from_yaml(YAML::Load("{type: warmup, unit: step, length: 1105, then: {type: "
                                                 "two_step_cosine, unit: step, T_max1: 221000, T_max2: 265200}}"),
                                      240);
  EXPECT_EQ(ocr->lr({0, 0, S}, 0.01), 0.0);
  EXPECT_DOUBLE_EQ(ocr->lr({1, 0, S}, 0.01), 0.01);
  EXPECT_NEAR(ocr->lr({201, 0, S}, 0.01), 0.0, 1e-18);
  EXPECT_NEAR(ocr->lr({201, 1, S}, 0.01), 0.01 * (1 + std::cos(std::numbers::pi * 221001 / 265200)) / 2, 1e-18);
  // A constant when absent.
  EXPECT_EQ(schedule_from_yaml(YAML::Node(), -1)->lr({3, 1, 4}, 0.7), 0.7);
  // apply_schedule scales each group's own base lr.
  Tensor p = theta0(), q = theta0();
  ParamGroup a, b;
  a.params = {p};
  b.params = {q};
  b.lr = 0.1;
  SGD opt(std::vector<ParamGroup>{a, b}, SGDOptions(1.0));
  apply_schedule(opt, *s, {0, 5, 50});
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].lr, 0.5);
  EXPECT_DOUBLE_EQ(opt.param_groups()[1].lr, 0.05);
}

TEST(OptimSchedule, YamlErrorsNameTheKey) {
  const auto msg = [](const std::string& yaml) -> std::string {
    try {
      schedule_from_yaml(YAML::Load(yaml), 240);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(msg("{type: cosine, T_max: 10, tmax: 3}").find("unknown key 'tmax'"), std::string::npos);
  EXPECT_NE(msg("{type: cosine}").find("missing key 'T_max'"), std::string::npos);
  EXPECT_NE(msg("{type: step}").find("missing key 'step_size'"), std::string::npos);
  EXPECT_NE(msg("{type: linear}").find("unknown schedule 'linear'"), std::string::npos);
  EXPECT_NE(msg("{T_max: 3}").find("missing key 'type'"), std::string::npos);
  EXPECT_NE(msg("{type: cosine, T_max: ten}").find("lr_schedule.T_max"), std::string::npos);
  EXPECT_NE(msg("{type: cosine, T_max: 10, unit: batch}").find("unit"), std::string::npos);
  EXPECT_NE(msg("{type: warmup, length: 3, then: {type: cosine, T_max: 3, bad: 1}}").find("lr_schedule.then"),
            std::string::npos);
  EXPECT_NE(msg("{type: warmup, unit: step, length: 3, then: {type: cosine, T_max: 3, unit: epoch}}").find("unit"),
            std::string::npos);
  EXPECT_NE(msg("{type: can, epoch: 3}").find("unknown key 'epoch'"), std::string::npos);
  EXPECT_THROW(schedule_from_yaml(YAML::Load("{type: can}"), -1), Error);  // no epochs anywhere
}

// ---- clipping ------------------------------------------------------------------------------------

namespace {
std::vector<Tensor> params_with_grads(const std::vector<Tensor>& grads) {
  std::vector<Tensor> ps;
  for (const Tensor& g : grads) {
    Tensor p = Tensor::zeros(g.shape());
    p.set_grad(own_copy(g));
    ps.push_back(p);
  }
  return ps;
}
}  // namespace

TEST(OptimClip, TorchFormMatchesClipGradNorm) {
  for (const std::string tag : {"above", "below"}) {
    std::vector<Tensor> in;
    for (int i = 0; i < 3; ++i) in.push_back(ref("optim", "clip_" + tag + "__grad_in" + std::to_string(i)));
    const auto ps = params_with_grads(in);
    const double max_norm = ref("optim", "clip_" + tag + "__max_norm").item<double>();
    const double total = clip_grad_norm_torch(ps, max_norm);
    const Tensor expected_total = ref("optim", "clip_" + tag + "__total");
    EXPECT_TRUE(all_close(Tensor::scalar(total, DType::Float64), expected_total.reshape({}), tol::kReduce,
                          "optim.clip_" + tag + ".total"));
    for (int i = 0; i < 3; ++i) {
      const Tensor e = ref("optim", "clip_" + tag + "__grad_out" + std::to_string(i));
      EXPECT_TRUE(all_close(ps[i].grad(), e, tol::kElementwise, "optim.clip_" + tag + ".grad" + std::to_string(i)));
      if (tag == "below") {
        EXPECT_TRUE(bits_equal(ps[i].grad(), in[i], "optim.clip_below_is_noop" + std::to_string(i)));
      }
    }
  }
  std::vector<Tensor> in;
  for (int i = 0; i < 3; ++i) in.push_back(ref("optim", "clip_above__grad_in" + std::to_string(i)));
  const auto ps = params_with_grads(in);
  const double total = clip_grad_norm_torch(ps, 1.5, std::numeric_limits<double>::infinity());
  EXPECT_NEAR(total, ref("optim", "clip_inf__total").item<double>(), 0.0);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(all_close(ps[i].grad(), ref("optim", "clip_inf__grad_out" + std::to_string(i)), tol::kElementwise,
                          "optim.clip_inf.grad" + std::to_string(i)));
}

// framework-semantics §4: a=[3,4,0], b=[12,0], max_norm 1 -> total 13, a.grad = [0.23076922, 0.30769229, 0].
TEST(OptimClip, SpecExample) {
  auto ps = params_with_grads({Tensor::from_vector(std::vector<float>{3, 4, 0}, {3}),
                               Tensor::from_vector(std::vector<float>{12, 0}, {2})});
  EXPECT_EQ(clip_grad_norm_torch(ps, 1.0), 13.0);
  EXPECT_TRUE(bits_equal(ps[0].grad(), Tensor::from_vector(std::vector<float>{0.23076922f, 0.30769229f, 0.0f}, {3}),
                         "optim.clip_spec_example"));
}

TEST(OptimClip, PaddleForm) {
  // Above: scale = c / n exactly, no epsilon.
  auto ps = params_with_grads({Tensor::from_vector(std::vector<float>{3, 4}, {2})});
  EXPECT_EQ(clip_grad_norm_paddle(ps, 2.5), 5.0);
  EXPECT_TRUE(bits_equal(ps[0].grad(), Tensor::from_vector(std::vector<float>{1.5f, 2.0f}, {2}), "optim.clip_paddle_above"));
  // torch's epsilon makes the same clip slightly smaller.
  auto pt = params_with_grads({Tensor::from_vector(std::vector<float>{3, 4}, {2})});
  clip_grad_norm_torch(pt, 2.5);
  EXPECT_LT(pt[0].grad().to_vector<float>()[0], 1.5f);
  // Below and exactly at the threshold: untouched.
  auto pb = params_with_grads({Tensor::from_vector(std::vector<float>{3, 4}, {2})});
  EXPECT_EQ(clip_grad_norm_paddle(pb, 5.0), 5.0);
  EXPECT_TRUE(bits_equal(pb[0].grad(), Tensor::from_vector(std::vector<float>{3, 4}, {2}), "optim.clip_paddle_at"));
  EXPECT_EQ(clip_grad_norm_paddle(pb, 100.0), 5.0);
  EXPECT_TRUE(bits_equal(pb[0].grad(), Tensor::from_vector(std::vector<float>{3, 4}, {2}), "optim.clip_paddle_below"));
}

TEST(OptimClip, NonFiniteGradients) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  // torch: optional error, otherwise NaN propagates to every gradient (coef is NaN) ...
  {
    auto ps = params_with_grads({Tensor::from_vector(std::vector<float>{1, nan}, {2}),
                                 Tensor::from_vector(std::vector<float>{2}, {1})});
    EXPECT_THROW(clip_grad_norm_torch(ps, 1.0, 2.0, true), Error);
    EXPECT_TRUE(bits_equal(ps[1].grad(), Tensor::from_vector(std::vector<float>{2}, {1}), "optim.clip_error_leaves_grads"));
    EXPECT_TRUE(std::isnan(clip_grad_norm_torch(ps, 1.0)));
    EXPECT_TRUE(std::isnan(ps[1].grad().to_vector<float>()[0]));
  }
  // ... and an infinite norm zeroes the finite gradients (coef = max_norm / inf = 0).
  {
    auto ps = params_with_grads({Tensor::from_vector(std::vector<float>{1, inf}, {2})});
    EXPECT_THROW(clip_grad_norm_torch(ps, 1.0, 2.0, true), Error);
    EXPECT_TRUE(std::isinf(clip_grad_norm_torch(ps, 1.0)));
    const auto g = ps[0].grad().to_vector<float>();
    EXPECT_EQ(g[0], 0.0f);
    EXPECT_TRUE(std::isnan(g[1]));  // inf * 0
  }
  // Paddle: an infinite norm scales by clip/inf = 0; a NaN norm loses the maximum() and scales by 1.
  {
    auto ps = params_with_grads({Tensor::from_vector(std::vector<float>{1, inf}, {2})});
    EXPECT_TRUE(std::isinf(clip_grad_norm_paddle(ps, 1.0)));
    EXPECT_EQ(ps[0].grad().to_vector<float>()[0], 0.0f);
    auto pn = params_with_grads({Tensor::from_vector(std::vector<float>{5, nan}, {2})});
    EXPECT_TRUE(std::isnan(clip_grad_norm_paddle(pn, 1.0)));
    EXPECT_EQ(pn[0].grad().to_vector<float>()[0], 5.0f);
  }
  // By value: clamps, keeps NaN, returns the unclipped norm.
  {
    auto ps = params_with_grads({Tensor::from_vector(std::vector<float>{-3, 0.5f, 4, nan}, {4})});
    EXPECT_TRUE(std::isnan(clip_grad_value(ps, 1.0)));
    const auto g = ps[0].grad().to_vector<float>();
    EXPECT_EQ(g[0], -1.0f);
    EXPECT_EQ(g[1], 0.5f);
    EXPECT_EQ(g[2], 1.0f);
    EXPECT_TRUE(std::isnan(g[3]));
    auto pv = params_with_grads({Tensor::from_vector(std::vector<float>{-3, 4}, {2})});
    EXPECT_EQ(clip_grad_value(pv, 10.0), 5.0);
    EXPECT_TRUE(bits_equal(pv[0].grad(), Tensor::from_vector(std::vector<float>{-3, 4}, {2}), "optim.clip_value_below"));
  }
  // Parameters without a gradient are ignored; none at all gives 0.
  Tensor lone = Tensor::zeros({3});
  EXPECT_EQ(clip_grad_norm_torch({lone}, 1.0), 0.0);
  EXPECT_EQ(clip_grad_norm_paddle({lone}, 1.0), 0.0);
}

// ---- state dict round trip -------------------------------------------------------------------------

namespace {

struct RoundTripCase {
  const char* name;
  MakeOpt make;
};

std::vector<RoundTripCase> round_trip_cases() {
  return {
      {"adadelta_torch", [](std::vector<ParamGroup> g) { return std::make_unique<Adadelta>(g, AdadeltaOptions::torch()); }},
      {"adadelta_paddle_aliased",
       [](std::vector<ParamGroup> g) {
         return std::make_unique<Adadelta>(g, AdadeltaOptions::paddle().paddle_aliased_update(true));
       }},
      {"sgd", [](std::vector<ParamGroup> g) { return std::make_unique<SGD>(g, SGDOptions(0.05)); }},
      {"sgd_momentum_dampening",
       [](std::vector<ParamGroup> g) { return std::make_unique<SGD>(g, SGDOptions(0.05).momentum(0.9).dampening(0.2)); }},
      {"sgd_nesterov",
       [](std::vector<ParamGroup> g) { return std::make_unique<SGD>(g, SGDOptions(0.05).momentum(0.9).nesterov(true)); }},
      {"paddle_momentum",
       [](std::vector<ParamGroup> g) { return std::make_unique<PaddleMomentum>(g, PaddleMomentumOptions().nesterov(true)); }},
      {"adam_amsgrad", [](std::vector<ParamGroup> g) { return std::make_unique<Adam>(g, AdamOptions().amsgrad(true)); }},
      {"adamw", [](std::vector<ParamGroup> g) { return std::make_unique<AdamW>(g, AdamWOptions().lr(3e-3)); }},
  };
}

void step_with_noise(Optimizer& opt, const std::vector<Tensor>& params, const Fixture& f, int t) {
  for (int i = 0; i < kParams; ++i)
    set_grad_from_noise(params[i], f.noise[i].data_ptr<float>() + t * params[i].numel());
  opt.step();
}

}  // namespace

TEST(OptimStateDict, RoundTripIsBitExact) {
  const std::string path = (std::filesystem::temp_directory_path() / "hmer_test_optim_state.safetensors").string();
  for (const auto& c : round_trip_cases()) {
    Fixture f = load_fixture();
    std::unique_ptr<Optimizer> a = c.make(two_groups(f.params, 1e-3));
    for (int t = 0; t < 7; ++t) {
      a->param_groups()[0].lr *= 0.9;  // a non-default lr that the dict must carry
      step_with_noise(*a, f.params, f, t);
    }
    const OptimizerState sd = a->state_dict();
    save_optimizer_state(path, *a);

    // Fresh optimizers on copies of the current parameters: one loaded in memory, one from the file.
    std::vector<Tensor> pb, pc;
    for (const Tensor& p : f.params) {
      pb.push_back(own_copy(p));
      pc.push_back(own_copy(p));
    }
    std::unique_ptr<Optimizer> b = c.make(two_groups(pb, 1e-3));
    std::unique_ptr<Optimizer> cc = c.make(two_groups(pc, 1e-3));
    b->load_state_dict(sd);
    load_optimizer_state(path, *cc);
    EXPECT_EQ(b->param_groups()[0].lr, a->param_groups()[0].lr) << c.name;
    EXPECT_EQ(cc->param_groups()[0].lr, a->param_groups()[0].lr) << c.name;
    for (int t = 7; t < 10; ++t) {
      step_with_noise(*a, f.params, f, t);
      step_with_noise(*b, pb, f, t);
      step_with_noise(*cc, pc, f, t);
    }
    for (int i = 0; i < kParams; ++i) {
      EXPECT_TRUE(bits_equal(pb[i], f.params[i], std::string("optim.state_dict.") + c.name + ".memory.p" + std::to_string(i)));
      EXPECT_TRUE(bits_equal(pc[i], f.params[i], std::string("optim.state_dict.") + c.name + ".file.p" + std::to_string(i)));
    }
  }
  std::filesystem::remove(path);
}

TEST(OptimStateDict, RejectsMismatches) {
  Fixture f = load_fixture();
  Adadelta a(two_groups(f.params, 0.0), AdadeltaOptions::torch());
  step_with_noise(a, f.params, f, 0);
  const OptimizerState sd = a.state_dict();
  // A state that was never stepped carries no per-parameter entries.
  Adadelta fresh(two_groups(f.params, 0.0));
  EXPECT_EQ(fresh.state_dict().tensors.size(), 0u);
  EXPECT_EQ(fresh.state(0, 0), nullptr);

  const auto message = [&](Optimizer& opt, const OptimizerState& s) -> std::string {
    try {
      opt.load_state_dict(s);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  Adadelta paddle(two_groups(f.params, 0.0), AdadeltaOptions::paddle());
  EXPECT_NE(message(paddle, sd).find("adadelta_torch"), std::string::npos);
  Adadelta one_group(std::vector<Tensor>{f.params[0]});
  EXPECT_NE(message(one_group, sd).find("parameter groups"), std::string::npos);
  OptimizerState missing = sd;
  missing.tensors.pop_back();
  EXPECT_NE(message(fresh, missing).find("missing"), std::string::npos);
  OptimizerState extra = sd;
  extra.scalars["bogus"] = "1";
  EXPECT_NE(message(fresh, extra).find("unknown scalar 'bogus'"), std::string::npos);
  OptimizerState wrong_shape = sd;
  wrong_shape.tensors[0].second = Tensor::zeros({2, 2});
  EXPECT_NE(message(fresh, wrong_shape).find(wrong_shape.tensors[0].first), std::string::npos);
  // A failed load leaves the optimizer untouched.
  EXPECT_EQ(fresh.state(0, 0), nullptr);
}

// ---- what moved -----------------------------------------------------------------------------------

TEST(OptimWhatMoved, NormsAndRatios) {
  Tensor w = Tensor::from_vector(std::vector<float>{3, 4}, {2});
  Tensor b = Tensor::from_vector(std::vector<float>{1}, {1});
  Tensor frozen = Tensor::from_vector(std::vector<float>{2}, {1});
  ParamGroup g;
  g.params = {w, b, frozen};
  g.names = {"fc.weight", "fc.bias", "frozen"};
  SGD opt(std::vector<ParamGroup>{g}, SGDOptions(0.5));
  w.set_grad(Tensor::from_vector(std::vector<float>{0.6f, 0.8f}, {2}));
  b.set_grad(Tensor::from_vector(std::vector<float>{-2}, {1}));
  const auto rows = step_and_measure(opt);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].name, "fc.weight");
  EXPECT_NEAR(rows[0].grad_norm, 1.0, 1e-7);
  EXPECT_NEAR(rows[0].weight_norm, 5.0, 0);
  EXPECT_NEAR(rows[0].update_norm, 0.5, 1e-7);
  EXPECT_NEAR(rows[0].ratio, 0.1, 1e-7);
  EXPECT_NEAR(rows[1].update_norm, 1.0, 0);
  EXPECT_EQ(rows[2].grad_norm, 0.0);
  EXPECT_EQ(rows[2].update_norm, 0.0);
  const ParamMotion total = total_motion(rows);
  EXPECT_NEAR(total.update_norm, std::sqrt(1.25), 1e-7);
  const std::string table = format_what_moved(rows);
  EXPECT_NE(table.find("fc.weight"), std::string::npos);
  EXPECT_NE(table.find("total"), std::string::npos);
}

// The diagnosis the probe exists for: with the lr at 0 (the start of a warm-up, or a decayed
// cosine), torch's Adadelta does not move while Paddle <= 2.4's moves at full speed.
TEST(OptimWhatMoved, RevealsIgnoredLearningRate) {
  for (Variant v : {Variant::Torch, Variant::Paddle}) {
    Tensor p = theta0();
    Adadelta opt(std::vector<Tensor>{p}, v == Variant::Torch ? AdadeltaOptions::torch() : AdadeltaOptions::paddle());
    opt.set_lr(0.0);
    p.set_grad(Tensor::from_vector(std::vector<float>{0.5f, -0.3f, 0.2f}, {3}));
    const auto rows = step_and_measure(opt);
    if (v == Variant::Torch) {
      EXPECT_EQ(rows[0].update_norm, 0.0);
    } else {
      EXPECT_GT(rows[0].ratio, 1e-4);
    }
    EXPECT_EQ(opt.effective_lr(opt.param_groups()[0]), v == Variant::Torch ? 0.0 : 1.0);
  }
}

// ---- factory -------------------------------------------------------------------------------------

TEST(OptimFactory, CanConfig) {
  const YAML::Node root = can_config();
  Tensor p = theta0();
  ParamGroup g;
  g.params = {p};
  OptimSetup s = build_optim(optim_section(root, "can.yaml"), {g}, config_epochs(root, "can.yaml"));
  auto* ad = dynamic_cast<Adadelta*>(s.optimizer.get());
  ASSERT_NE(ad, nullptr);
  EXPECT_EQ(ad->options().variant(), Variant::Torch);
  EXPECT_EQ(ad->options().rho(), 0.9);
  EXPECT_EQ(ad->options().eps(), 1e-6);
  EXPECT_EQ(ad->param_groups()[0].lr, 1.0);
  EXPECT_EQ(ad->param_groups()[0].weight_decay, 1e-4);
  EXPECT_EQ(s.clip.kind, ClipConfig::Kind::Norm);
  EXPECT_EQ(s.clip.form, ClipForm::Torch);
  EXPECT_EQ(s.clip.threshold, 100.0);
  EXPECT_NEAR(s.schedule->lr({201, 0, 1105}, 1.0), 0.066984, 5e-7);
  std::printf("%s", s.describe().c_str());
}

TEST(OptimFactory, Variants) {
  const auto build = [](const std::string& yaml) {
    ParamGroup g;
    g.params = {theta0()};
    return build_optim(YAML::Load(yaml), {g}, 10);
  };
  {
    OptimSetup s = build("{optimizer: Adadelta, variant: paddle, gradient_clip: 5}");
    auto* ad = dynamic_cast<Adadelta*>(s.optimizer.get());
    ASSERT_NE(ad, nullptr);
    EXPECT_EQ(ad->options().rho(), 0.95);  // Paddle's default
    EXPECT_EQ(s.clip.form, ClipForm::Paddle);
  }
  {
    OptimSetup s = build("{optimizer: momentum, variant: paddle, lr: 0.01, weight_decay: 1.0e-4, nesterov: true}");
    auto* m = dynamic_cast<PaddleMomentum*>(s.optimizer.get());
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->options().momentum(), 0.9);
    EXPECT_TRUE(m->options().nesterov());
  }
  {
    OptimSetup s = build("{optimizer: sgd, lr: 0.1, momentum: 0.9, dampening: 0.1}");
    auto* m = dynamic_cast<SGD*>(s.optimizer.get());
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->options().dampening(), 0.1);
    EXPECT_EQ(s.clip.kind, ClipConfig::Kind::None);
  }
  {
    OptimSetup s = build("{optimizer: adamw, betas: [0.8, 0.95], lr: 0.001, "
                         "gradient_clip: {type: norm, clip_norm: 1, form: paddle}}");
    auto* a = dynamic_cast<Adam*>(s.optimizer.get());
    ASSERT_NE(a, nullptr);
    EXPECT_TRUE(a->decoupled());
    EXPECT_EQ(a->param_groups()[0].weight_decay, 1e-2);  // AdamW's default
    EXPECT_EQ(s.clip.form, ClipForm::Paddle);
  }
  {
    OptimSetup s = build("{optimizer: adam, gradient_clip: {type: value, clip_value: 0.5}}");
    EXPECT_EQ(s.clip.kind, ClipConfig::Kind::Value);
  }
}

TEST(OptimFactory, ErrorsNameTheKey) {
  const auto msg = [](const std::string& yaml) -> std::string {
    try {
      ParamGroup g;
      g.params = {theta0()};
      build_optim(YAML::Load(yaml), {g}, 10);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(msg("{optimizer: adadelta, rho: 0.9, learning_rate: 1}").find("unknown key 'learning_rate'"),
            std::string::npos);
  EXPECT_NE(msg("{optimizer: adam, rho: 0.9}").find("optim.rho: not a parameter of adam"), std::string::npos);
  EXPECT_NE(msg("{optimizer: sgd, momentum: 0.9}").find("missing key 'lr'"), std::string::npos);
  EXPECT_NE(msg("{lr: 1}").find("missing key 'optimizer'"), std::string::npos);
  EXPECT_NE(msg("{optimizer: rmsprop}").find("unknown optimizer 'rmsprop'"), std::string::npos);
  EXPECT_NE(msg("{optimizer: adam, variant: paddle}").find("torch semantics only"), std::string::npos);
  EXPECT_NE(msg("{optimizer: adadelta, variant: keras}").find("keras"), std::string::npos);
  EXPECT_NE(msg("{optimizer: adadelta, gradient_clip: true}").find("gradient_clip"), std::string::npos);
  EXPECT_NE(msg("{optimizer: adadelta, gradient_clip: {max_norm: 1, maxnorm: 2}}").find("unknown key 'maxnorm'"),
            std::string::npos);
  EXPECT_NE(msg("{optimizer: adadelta, lr_schedule: {type: cosine}}").find("optim.lr_schedule: missing key 'T_max'"),
            std::string::npos);
  EXPECT_NE(msg("{optimizer: sgd, lr: 0.1, momentum: 0.9, dampening: 0.5, nesterov: true}").find("nesterov"),
            std::string::npos);
  EXPECT_NE(msg("{optimizer: adadelta, paddle_aliased_update: true}").find("paddle_aliased_update"),
            std::string::npos);
}

// ---- validation ----------------------------------------------------------------------------------

TEST(OptimValidation, ParamsAndGrads) {
  EXPECT_THROW(Adadelta(std::vector<Tensor>{Tensor::zeros({2}, DType::Float64)}), Error);
  Tensor p = Tensor::zeros({2, 3});
  EXPECT_THROW(Adadelta(std::vector<Tensor>{p.t()}), Error);  // not contiguous
  EXPECT_THROW(Adadelta(std::vector<Tensor>{p, p}), Error);   // twice
  EXPECT_THROW(SGD(std::vector<Tensor>{p}, SGDOptions(0.1).nesterov(true)), Error);
  Adam opt(std::vector<Tensor>{p});
  p.set_grad(Tensor::zeros({2, 3}));
  opt.step();
  EXPECT_EQ(opt.state(0, 0)->step, 1);
  opt.zero_grad();
  EXPECT_FALSE(p.grad().defined());
  opt.step();  // no gradient: skipped, state unchanged
  EXPECT_EQ(opt.state(0, 0)->step, 1);
}

// The global norm of a gradient larger than one partial-sum chunk (several tensors, 300k elements in
// all): the same bits on 1 and 2 threads, within double rounding of a long-double sum, and the clip
// scales by the float32 coefficient torch computes from it.
TEST(ClipGradNorm, GlobalNormIsThreadIndependentAndExact) {
  std::vector<Tensor> params;
  long double exact = 0;
  for (int i = 0; i < 3; ++i) {
    Tensor p = Tensor::zeros({100003 + 7 * i}, DType::Float32);
    p.set_requires_grad(true);
    Tensor g = hmer::test::rand_tensor({100003 + 7 * i}, 70 + i, -3, 3, DType::Float32);
    for (float v : g.to_vector<float>()) exact += static_cast<long double>(v) * v;
    p.set_grad(g);
    params.push_back(p);
  }
  const double want = std::sqrt(static_cast<double>(exact));
  std::vector<double> norms;
  for (int threads : {1, 2}) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    std::vector<Tensor> copies;
    for (const Tensor& p : params) {
      Tensor c = p.detach().clone();
      c.set_requires_grad(true);
      c.set_grad(p.grad().clone());
      copies.push_back(c);
    }
    norms.push_back(optim::clip_grad_norm_torch(copies, 1.0));
    const float coef = std::min(1.0f, (1.0f / (static_cast<float>(norms.back()) + 1e-6f)) * 1.0f);
    EXPECT_EQ(copies[1].grad().to_vector<float>()[5], params[1].grad().to_vector<float>()[5] * coef);
  }
#ifdef _OPENMP
  omp_set_num_threads(omp_get_num_procs());
#endif
  EXPECT_EQ(std::bit_cast<uint64_t>(norms[0]), std::bit_cast<uint64_t>(norms[1]));
  EXPECT_NEAR(norms[0], want, want * 1e-13);
}
