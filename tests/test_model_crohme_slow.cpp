// Full-size CAN (configs/can.yaml) against the PyTorch twin on real CROHME 2014 test images
// (/work/shared/data/crohme/2014, caption.txt + img/), with random weights from `hmer init`'s
// initialiser:
//   - one ~120x480 image, train mode with dropout off: encoder_out, counting vectors, every step's
//     logits and the loss within 1e-4 relative of torch float32; the gradients and 5 Adadelta steps
//     with CAN's settings judged against the float64 twin (float32 is ill-conditioned there, see
//     docs/model.md §5), and the engine run in float64 against the float64 twin at the issue's
//     bounds (1e-4 forward, 1e-3 per gradient, 1e-4 per step loss);
//   - greedy decoding of the first 20 images (four shards of five): identical token sequences.
// The twin (tools/can_twin.py) runs through HMER_TORCH_PYTHON. Skips with a message when the data
// or torch is absent. Prints the timing of one full-size forward + backward (rough: shared machine).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/serialization.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "models/can.h"
#include "models/decoding.h"
#include "optim/factory.h"
#include "tests/testing.h"

namespace hmer::test {
namespace {

namespace fs = std::filesystem;
using namespace hmer::models;

// Issue 5's bounds are tol::kModel* (relative to max |twin| per tensor); see tests/test_model.cpp.
const fs::path kData = fs::path(shared_data()) / "crohme" / "2014";

std::string src(const std::string& rel) { return std::string(HMER_SOURCE_DIR) + "/" + rel; }

double max_abs(const Tensor& t) {
  double x = 0;
  for (double v : t.to_vector<double>()) x = std::max(x, std::fabs(v));
  return x;
}

// max |a - e| / max |e|, printed as "PARITY model_full/<what> ...".
::testing::AssertionResult rel_close(const Tensor& a, const Tensor& e, double bound, const std::string& what,
                                     double* measured = nullptr) {
  return max_rel_close(a, e, bound, "model_full/" + what, measured);
}

struct Sample {
  std::string name, path;
  std::vector<std::string> tokens;  // after CAN's mapping (\limits dropped)
  int h = 0, w = 0;
};

// caption.txt in file order, keeping the samples whose tokens are all in CAN's dictionary.
std::vector<Sample> crohme_samples(const data::Vocabulary& vocab, const data::VocabConfig& vc) {
  std::vector<Sample> out;
  std::ifstream f(kData / "caption.txt");
  for (std::string line; std::getline(f, line);) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    Sample s;
    s.name = line.substr(0, tab);
    std::istringstream is(line.substr(tab + 1));
    std::vector<std::string> toks;
    for (std::string t; is >> t;) toks.push_back(t);
    s.tokens = data::map_tokens(toks, vc.token_map);
    if (s.tokens.empty() ||
        !std::all_of(s.tokens.begin(), s.tokens.end(), [&](const std::string& t) { return vocab.contains(t); }))
      continue;
    for (const char* ext : {".png", ".bmp", ".jpg"})
      if (fs::exists(kData / "img" / (s.name + ext))) s.path = (kData / "img" / (s.name + ext)).string();
    if (s.path.empty()) continue;
    const auto hw = data::read_image_header_size(s.path);
    s.h = hw.first;
    s.w = hw.second;
    out.push_back(s);
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + v[i];
  return s;
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

int run(const std::string& cmd) {
  std::printf("$ %s\n", cmd.c_str());
  std::fflush(stdout);
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

bool torch_available() {
  return std::system((std::string(HMER_TORCH_PYTHON) + " -c 'import torch, yaml, PIL' >/dev/null 2>&1").c_str()) == 0;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class CrohmeFull : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData / "caption.txt")) GTEST_SKIP() << "CROHME 2014 not found at " << kData;
    if (!torch_available()) GTEST_SKIP() << HMER_TORCH_PYTHON << " has no torch / yaml / PIL: the twin cannot run";
    cfg_ = load_config(src("configs/can.yaml"));
    vocab_ = cfg_.vocabulary();
    samples_ = crohme_samples(vocab_, cfg_.vocab);
    ASSERT_GE(samples_.size(), 20u);
    // One directory per test (ctest -j runs the shards concurrently).
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir_ = fs::temp_directory_path() / ("hmer_test_model_crohme_" + name);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  std::string twin() const { return std::string(HMER_TORCH_PYTHON) + " " + src("tools/can_twin.py"); }

  Config cfg_;
  data::Vocabulary vocab_;
  std::vector<Sample> samples_;
  fs::path dir_;
};

// torch 1.x Adadelta (rho 0.9, eps 1e-6, weight decay 1e-4) after torch's clip_grad_norm_(100),
// in double: the optimizers of optim/ update float32 tensors only.
struct Adadelta64 {
  std::vector<Tensor> params, square_avg, acc_delta;
  explicit Adadelta64(const std::vector<Tensor>& p) : params(p) {
    for (const Tensor& t : p) {
      square_avg.push_back(Tensor::zeros(t.shape(), DType::Float64));
      acc_delta.push_back(Tensor::zeros(t.shape(), DType::Float64));
    }
  }
  double step(double lr) {
    double total = 0;
    for (const Tensor& p : params)
      for (double g : p.grad().to_vector<double>()) total += g * g;
    total = std::sqrt(total);
    const double coef = 100.0 / (total + 1e-6);
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor g = contiguous_copy(params[i].grad());
      double* gp = g.data_ptr<double>();
      double* p = params[i].detach().data_ptr<double>();
      double* sq = square_avg[i].data_ptr<double>();
      double* acc = acc_delta[i].data_ptr<double>();
      for (int64_t k = 0; k < g.numel(); ++k) {
        double gr = coef < 1 ? gp[k] * coef : gp[k];
        gr = gr + 1e-4 * p[k];
        sq[k] = sq[k] * 0.9 + (1 - 0.9) * gr * gr;
        const double delta = std::sqrt(acc[k] + 1e-6) / std::sqrt(sq[k] + 1e-6) * gr;
        acc[k] = acc[k] * 0.9 + (1 - 0.9) * delta * delta;
        p[k] -= lr * delta;
      }
    }
    return total;
  }
};

TEST_F(CrohmeFull, ForwardGradientsAndAdadeltaMatchTwinAt120x480) {
  // The ~120x480 image with the shortest label (one image keeps the float64 twin affordable;
  // padded batches are covered at CI size by tests/test_model.cpp).
  std::vector<Sample> cand;
  for (const Sample& s : samples_)
    if (s.h >= 100 && s.h <= 140 && s.w >= 400 && s.w <= 560) cand.push_back(s);
  std::stable_sort(cand.begin(), cand.end(),
                   [](const Sample& a, const Sample& b) { return a.tokens.size() < b.tokens.size(); });
  ASSERT_GE(cand.size(), 1u);
  const std::vector<Sample> pick(cand.begin(), cand.begin() + 1);
  std::printf("image: %s %dx%d (%zu tokens)\n", pick[0].name.c_str(), pick[0].h, pick[0].w, pick[0].tokens.size());

  ModelConfig mc = cfg_.model;
  mc.decoder.dropout = false;
  mc.densenet.use_dropout = false;
  const std::string w = (dir_ / "init.safetensors").string();
  save_weights(*make_model(cfg_.model, 20211024), w);
  const std::string common = " --config " + src("configs/can.yaml") + " --weights " + w + " --images " +
                             pick[0].path + " --tokens " + quote(join(pick[0].tokens)) + " --steps 5 --steps-per-epoch 5";
  const fs::path t32 = dir_ / "twin32", t64 = dir_ / "twin64";
  auto t_twin = std::chrono::steady_clock::now();
  ASSERT_EQ(run(twin() + " parity" + common + " --out " + t32.string()), 0);
  std::printf("TIMING twin float32 (forward + backward, then 5 steps): %.1f s\n", seconds_since(t_twin));
  t_twin = std::chrono::steady_clock::now();
  ASSERT_EQ(run(twin() + " parity" + common + " --dtype float64 --out " + t64.string()), 0);
  std::printf("TIMING twin float64 (forward + backward, then 5 steps): %.1f s\n", seconds_since(t_twin));
  auto tw = [](const fs::path& d, const std::string& n) { return load_npy((d / (n + ".npy")).string()); };
  auto grads_of = [](const fs::path& d) {
    std::map<std::string, Tensor> g;
    for (auto& [k, t] : load_safetensors((d / "grads.safetensors").string())) g[k] = t;
    return g;
  };

  std::vector<std::vector<int64_t>> ids;
  for (const Sample& s : pick) ids.push_back(vocab_.encode(s.tokens));
  std::vector<data::CollateItem> items;
  for (size_t i = 0; i < pick.size(); ++i)
    items.push_back({data::read_gray_image(pick[i].path), &ids[i], static_cast<int64_t>(i), pick[i].name});
  const data::Batch b = data::collate(items, cfg_.preprocess, vocab_.eos_id(), vocab_.pad_id());
  ASSERT_EQ(b.size(), 1);
  EXPECT_TRUE(rel_close(b.images, tw(t32, "images"), 0.0, "images"));
  EXPECT_TRUE(rel_close(b.image_mask, tw(t32, "image_mask"), 0.0, "image_mask"));
  ASSERT_EQ(b.labels.to_vector<int64_t>(), tw(t32, "labels").to_vector<int64_t>());

  // ---- float32 engine vs float32 twin (and both vs the float64 twin) ----
  CanModel model(mc);
  load_weights(model, w);
  model.train();
  const auto t0 = std::chrono::steady_clock::now();
  CanModel::Output o = model.forward(b.images, b.image_mask, b.labels, b.label_mask);
  const double t_fwd = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  o.loss.backward();
  const double t_bwd = seconds_since(t1);
  std::printf("TIMING full-size CAN float32, batch 1 of %lldx%lld (T=%lld): forward %.2f s, backward %.2f s\n",
              static_cast<long long>(b.images.size(2)), static_cast<long long>(b.images.size(3)),
              static_cast<long long>(b.labels.size(1)), t_fwd, t_bwd);

  EXPECT_TRUE(rel_close(o.features, tw(t32, "encoder_out"), tol::kModelForwardRel, "encoder_out"));
  EXPECT_TRUE(rel_close(o.counts, tw(t32, "counting_vector"), tol::kModelForwardRel, "counting_vector"));
  EXPECT_TRUE(rel_close(o.branch_counts[0], tw(t32, "counting_vector1"), tol::kModelForwardRel, "counting_vector1"));
  EXPECT_TRUE(rel_close(o.branch_counts[1], tw(t32, "counting_vector2"), tol::kModelForwardRel, "counting_vector2"));
  EXPECT_TRUE(rel_close(o.logits, tw(t32, "logits"), tol::kModelForwardRel, "logits"));
  double worst_step = 0;
  for (int64_t t = 0; t < o.logits.size(1); ++t) {
    double rel = 0;
    EXPECT_TRUE(rel_close(o.logits.select(1, t), tw(t32, "logits").select(1, t), tol::kModelForwardRel,
                          "logits_step" + std::to_string(t), &rel));
    worst_step = std::max(worst_step, rel);
  }
  std::printf("worst per-step logits rel %.3g\n", worst_step);
  EXPECT_TRUE(rel_close(o.word_loss, tw(t32, "word_loss"), tol::kModelForwardRel, "word_loss"));
  EXPECT_TRUE(rel_close(o.counting_loss, tw(t32, "counting_loss"), tol::kModelForwardRel, "counting_loss"));
  EXPECT_TRUE(rel_close(o.loss, tw(t32, "loss"), tol::kModelForwardRel, "loss"));

  // Gradients. The float32 problem is ill-conditioned at this size with random weights (see
  // docs/model.md §5): the counting loss sends an almost position-independent gradient into training-
  // mode BatchNorms, whose backward subtracts its mean, so float32 cancellation costs digits layer
  // after layer. Which tensors lose most is rounding luck: the same engine lands 7e-5 or 2e-2 away
  // from float64 on one tensor with 1 or 2 threads, and torch float32 is up to a few 1e-2 away. The
  // float64 twin is the judge:
  //   - a tensor whose float64 gradient is zero (< 1e-10 of the largest) is zero by construction at
  //     this input: ours must be rounding noise (< 1e-6 of the largest);
  //   - the others: ours must be as close to float64 as torch float32 is, in distribution: the worst
  //     and the RMS per-tensor error <= max(1e-3, kTorchNoiseFactor x torch float32's).
  // The implementation itself is checked at the issue's bounds in float64 below.
  constexpr double kTorchNoiseFactor = 2.0;
  const auto g32 = grads_of(t32), g64 = grads_of(t64);
  double global = 0;
  for (const auto& [k, t] : g64) global = std::max(global, max_abs(t));
  std::vector<std::string> zero_by_construction;
  std::vector<double> ours_err, torch_err;
  double worst_vs32 = 0;
  int beyond_issue_bound = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    ASSERT_TRUE(g32.count(name) && g64.count(name)) << name;
    ASSERT_TRUE(p.grad().defined()) << name;
    if (max_abs(g64.at(name)) <= 1e-10 * global) {
      std::printf("PARITY model_full/grad/%s zero-by-construction ours=%.3g torch32=%.3g float64=%.3g (largest "
                  "gradient %.3g)\n",
                  name.c_str(), max_abs(p.grad()), max_abs(g32.at(name)), max_abs(g64.at(name)), global);
      EXPECT_LE(max_abs(p.grad()), 1e-6 * global) << name;
      zero_by_construction.push_back(name);
      continue;
    }
    double vs32 = 0, vs64 = 0, t = 0;
    (void)rel_close(p.grad(), g32.at(name), tol::kModelGradRel, "grad/" + name, &vs32);
    (void)rel_close(p.grad(), g64.at(name), tol::kModelGradRel, "grad_vs_f64/" + name, &vs64);
    (void)rel_close(g32.at(name), g64.at(name), tol::kModelGradRel, "torch32_vs_f64/" + name, &t);
    beyond_issue_bound += vs32 > tol::kModelGradRel;
    worst_vs32 = std::max(worst_vs32, vs32);
    ours_err.push_back(vs64);
    torch_err.push_back(t);
  }
  auto stats = [](const std::vector<double>& v) {
    double mx = 0, ss = 0;
    for (double x : v) mx = std::max(mx, x), ss += x * x;
    return std::pair<double, double>{mx, v.empty() ? 0.0 : std::sqrt(ss / static_cast<double>(v.size()))};
  };
  const auto [ours_max, ours_rms] = stats(ours_err);
  const auto [torch_max, torch_rms] = stats(torch_err);
  std::printf("gradients float32: %zu zero by construction; vs float64: ours worst %.3g rms %.3g, torch32 worst %.3g "
              "rms %.3g; ours vs torch32 worst %.3g (%d of %zu tensors above 1e-3)\n",
              zero_by_construction.size(), ours_max, ours_rms, torch_max, torch_rms, worst_vs32, beyond_issue_bound,
              ours_err.size());
  EXPECT_LE(ours_max, std::max(tol::kModelGradRel, kTorchNoiseFactor * torch_max));
  EXPECT_LE(ours_rms, std::max(tol::kModelGradRel, kTorchNoiseFactor * torch_rms));

  // 5 steps. The float32 trajectory is chaotic: a rounding difference grows by orders of magnitude
  // per step (measured: torch float32 drifts from float64 by ~3e-5 at step 2, ~3e-4 at step 3). So
  // the first two losses (before that growth) must match torch float32 within the issue's 1e-4, and
  // later ones may not drift from float64 more than 10x torch float32's drift (a gross-error check).
  optim::ParamGroup g;
  for (const auto& [name, p] : model.named_parameters()) g.params.push_back(p), g.names.push_back(name);
  optim::OptimSetup setup = optim::build_optim(cfg_.optim, {g}, cfg_.run.epochs);
  const std::vector<double> want32 = tw(t32, "adadelta_losses").to_vector<double>();
  const std::vector<double> want64 = tw(t64, "adadelta_losses").to_vector<double>();
  ASSERT_EQ(want32.size(), 5u);
  double ours_drift = 0, torch_drift = 0, vs_torch = 0;
  for (int64_t s = 0; s < 5; ++s) {
    optim::apply_schedule(*setup.optimizer, *setup.schedule, {0, s, 5});
    setup.optimizer->zero_grad();
    CanModel::Output so = model.forward(b.images, b.image_mask, b.labels, b.label_mask);
    so.loss.backward();
    const double norm = optim::apply_clip(setup.clip, setup.optimizer->parameters());
    setup.optimizer->step();
    const double l = so.loss.item_double();
    const double rel32 = std::fabs(l - want32[s]) / std::fabs(want32[s]);
    const double rel64 = std::fabs(l - want64[s]) / std::fabs(want64[s]);
    const double torch_rel = std::fabs(want32[s] - want64[s]) / std::fabs(want64[s]);
    std::printf("PARITY model_full adadelta step %lld loss %.7g torch32 %.7g float64 %.7g rel=%.3g vs64=%.3g "
                "torch32_vs64=%.3g (grad norm %.4g)\n",
                static_cast<long long>(s), l, want32[s], want64[s], rel32, rel64, torch_rel, norm);
    if (s < 2) {
      EXPECT_LE(rel32, tol::kModelStepLossRel) << "step " << s;
    }
    ours_drift = std::max(ours_drift, rel64);
    torch_drift = std::max(torch_drift, torch_rel);
    vs_torch = std::max(vs_torch, rel32);
  }
  std::printf("5 steps float32: worst vs torch32 %.3g; drift from float64: ours %.3g, torch32 %.3g\n", vs_torch,
              ours_drift, torch_drift);
  EXPECT_LE(ours_drift, std::max(tol::kModelStepLossRel, 10.0 * torch_drift));

  // ---- float64 engine vs float64 twin: the implementation itself, at the issue's bounds ----
  CanModel m64(mc);
  load_weights(m64, w);
  m64.to(DType::Float64);
  m64.train();
  const Tensor x64 = b.images.to(DType::Float64), mask64 = b.image_mask.to(DType::Float64),
               lm64 = b.label_mask.to(DType::Float64);
  CanModel::Output o64 = m64.forward(x64, mask64, b.labels, lm64);
  o64.loss.backward();
  EXPECT_TRUE(rel_close(o64.features, tw(t64, "encoder_out"), tol::kModelForwardRel, "f64/encoder_out"));
  EXPECT_TRUE(rel_close(o64.counts, tw(t64, "counting_vector"), tol::kModelForwardRel, "f64/counting_vector"));
  EXPECT_TRUE(rel_close(o64.logits, tw(t64, "logits"), tol::kModelForwardRel, "f64/logits"));
  EXPECT_TRUE(rel_close(o64.loss, tw(t64, "loss"), tol::kModelForwardRel, "f64/loss"));
  double worst64 = 0;
  std::vector<Tensor> params64;
  for (const auto& [name, p] : m64.named_parameters()) {
    params64.push_back(p);
    if (std::find(zero_by_construction.begin(), zero_by_construction.end(), name) != zero_by_construction.end()) {
      EXPECT_LE(max_abs(p.grad()), 1e-12 * global) << name;
      continue;
    }
    double rel = 0;
    EXPECT_TRUE(rel_close(p.grad(), g64.at(name), tol::kModelGradRel, "f64/grad/" + name, &rel));
    worst64 = std::max(worst64, rel);
  }
  std::printf("gradients float64: worst ours vs torch %.3g\n", worst64);
  Adadelta64 opt(params64);
  for (int64_t s = 0; s < 5; ++s) {
    for (Tensor& p : params64) p.zero_grad();
    CanModel::Output so = m64.forward(x64, mask64, b.labels, lm64);
    so.loss.backward();
    opt.step(static_cast<double>(s + 1) / 5.0);  // the CAN warm-up over a 5-step epoch
    const double l = so.loss.item_double(), rel = std::fabs(l - want64[s]) / std::fabs(want64[s]);
    std::printf("PARITY model_full/f64 adadelta step %lld loss %.12g twin %.12g rel=%.3g\n", static_cast<long long>(s),
                l, want64[s], rel);
    EXPECT_LE(rel, tol::kModelStepLossRel);
  }
}

// The first 20 images in four shards of five (each shard is its own test, within ctest's timeout).
class CrohmeGreedy : public CrohmeFull, public ::testing::WithParamInterface<int> {};

TEST_P(CrohmeGreedy, GreedyDecodingEqualsTwin) {
  const std::string w = (dir_ / "greedy.safetensors").string();
  auto model = make_model(cfg_.model, 7);
  save_weights(*model, w);
  model->eval();
  std::vector<Sample> pick(samples_.begin() + 5 * GetParam(), samples_.begin() + 5 * GetParam() + 5);
  std::string paths;
  for (const Sample& s : pick) paths += " " + s.path;
  const std::string out = (dir_ / "greedy.json").string();
  const auto t_twin = std::chrono::steady_clock::now();
  ASSERT_EQ(run(twin() + " greedy --config " + src("configs/can.yaml") + " --weights " + w + " --images" + paths +
                " --out " + out),
            0);
  std::printf("TIMING twin greedy on 5 images: %.1f s\n", seconds_since(t_twin));
  nlohmann::json j;
  std::ifstream(out) >> j;
  const auto t0 = std::chrono::steady_clock::now();
  int same = 0;
  size_t total_tokens = 0;
  for (const Sample& s : pick) {
    const cv::Mat img = data::read_gray_image(s.path);
    std::vector<int64_t> none;
    const data::Batch b = data::collate({{img, &none, 0, s.name}}, cfg_.preprocess, vocab_.eos_id(), vocab_.pad_id());
    const Hypothesis h = greedy_decode(*model, b.images, cfg_.model.decoding.max_steps);
    const std::string key = fs::path(s.path).filename().string();
    ASSERT_TRUE(j.contains(key)) << key;
    const std::vector<int64_t> want = j[key].get<std::vector<int64_t>>();
    EXPECT_EQ(h.tokens, want) << s.name << " (" << s.h << "x" << s.w << ")";
    same += h.tokens == want;
    total_tokens += h.tokens.size();
    std::printf("greedy %s %dx%d: %zu tokens%s, %s\n", s.name.c_str(), s.h, s.w, h.tokens.size(),
                h.finished ? "" : " (no eos)", h.tokens == want ? "identical" : "DIFFERENT");
  }
  std::printf("TIMING engine greedy on 5 images: %.1f s (%zu tokens)\n", seconds_since(t0), total_tokens);
  std::printf("PARITY model_full/greedy shard %d identical sequences %d of 5\n", GetParam(), same);
}

INSTANTIATE_TEST_SUITE_P(First20, CrohmeGreedy, ::testing::Values(0, 1, 2, 3));

}  // namespace
}  // namespace hmer::test
