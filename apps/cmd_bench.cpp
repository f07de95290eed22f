// `hmer bench`: the CPU speed benchmark of issue 7. Times one CAN/DWAP training step (forward,
// backward, clip, Adadelta step) on a random padded batch and a fixed-length greedy decode of one
// image, with peak RSS and achieved GFLOP/s. tools/bench_torch.py is the PyTorch twin (same shapes,
// same JSON keys); scripts/bench.sh runs both and prints the ratios.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "apps/commands.h"
#include "core/allocator.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include "core/autograd.h"
#include "core/error.h"
#include "core/profiler.h"
#include "core/version.h"
#include "kernels/cpu/parallel.h"
#include "models/can.h"
#include "models/decoding.h"
#include "optim/adadelta.h"
#include "optim/clip.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hmer::app {

namespace {

const char* kUsage =
    "usage: hmer bench --config FILE [--batch B] [--height H] [--width W] [--tokens T] [--steps N]\n"
    "                  [--warmup K] [--decode-repeats R] [--seed S] [--threads N] [--peak-gflops G]\n"
    "                  [--profile] [--skip-train] [--skip-decode] [--json FILE]\n"
    "\n"
    "Random weights (the config's init) and a random padded batch: images uniform [0,1) (B, 1, H, W),\n"
    "image i valid over its first w_i columns (w_0 = W, the others uniform in [W/2, W]), labels of T\n"
    "tokens ending in eos. Times the training step of CAN's recipe (forward, backward, global-norm clip\n"
    "100, Adadelta lr 1 rho 0.9 eps 1e-6 weight decay 1e-4): K warm-up steps excluded, median of N.\n"
    "Then greedy decoding of one H x W image (eval mode) for exactly T steps (no early stop at eos):\n"
    "one warm-up, median of R. Reports peak RSS and GFLOP/s (the model's conv/linear/matmul FLOPs,\n"
    "see docs/performance.md). --profile adds a per-op table (exclusive times) from extra steps.\n"
    "\n"
    "defaults: --batch 8 --height 120 --width 480 --tokens 30 --steps 10 --warmup 2\n"
    "          --decode-repeats 5 --seed 0 --peak-gflops 220 (2 cores x ~3.5 GHz x 32 FP32 FLOP/cycle)\n";

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

struct Batch {
  Tensor images, image_mask, labels, label_mask;
};

Batch random_batch(int64_t B, int64_t H, int64_t W, int64_t T, int64_t vocab, int64_t eos, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  std::vector<float> img(static_cast<size_t>(B * H * W)), mask(img.size(), 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t w = b == 0 ? W : std::uniform_int_distribution<int64_t>(W / 2, W)(rng);
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const size_t i = static_cast<size_t>((b * H + y) * W + x);
        const bool in = x < w;
        img[i] = in ? u01(rng) : 0.0f;
        mask[i] = in ? 1.0f : 0.0f;
      }
  }
  std::vector<int64_t> lab(static_cast<size_t>(B * T));
  std::uniform_int_distribution<int64_t> tok(2, vocab - 1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) lab[static_cast<size_t>(b * T + t)] = t == T - 1 ? eos : tok(rng);
  Batch out;
  out.images = Tensor::from_vector<float>(img, {B, 1, H, W});
  out.image_mask = Tensor::from_vector<float>(mask, {B, 1, H, W});
  out.labels = Tensor::from_vector<int64_t>(lab, {B, T});
  out.label_mask = Tensor::ones({B, T}, DType::Float32);
  return out;
}

nlohmann::ordered_json profile_table(double seconds_total, int64_t repeats, const std::string& title) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  auto es = profiler::entries();
  double covered = 0;
  for (const auto& e : es) covered += e.seconds;
  // Whatever no op scope saw (allocation, autograd bookkeeping, glue), so the rows add up to the wall time.
  es.push_back({"-", "(outside ops)", std::max(0.0, seconds_total - covered), repeats});
  std::stable_sort(es.begin(), es.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  std::cout << "\n" << title << ": " << std::fixed << std::setprecision(3) << seconds_total / repeats
            << " s per repeat (" << repeats << " profiled), exclusive time per op:\n";
  std::cout << "  " << std::left << std::setw(10) << "phase" << std::setw(34) << "op" << std::right << std::setw(12)
            << "s/repeat" << std::setw(8) << "%" << std::setw(10) << "calls" << "\n";
  for (const auto& e : es) {
    const double per = e.seconds / static_cast<double>(repeats);
    const double pct = seconds_total > 0 ? 100.0 * e.seconds / seconds_total : 0.0;
    nlohmann::ordered_json r;
    r["phase"] = e.phase;
    r["op"] = e.name.empty() ? "(unnamed)" : e.name;
    r["seconds_per_repeat"] = per;
    r["percent"] = pct;
    r["calls_per_repeat"] = static_cast<double>(e.calls) / static_cast<double>(repeats);
    rows.push_back(r);
    if (pct < 0.2) continue;  // the JSON keeps every row; the console only the visible ones
    std::cout << "  " << std::left << std::setw(10) << e.phase << std::setw(34)
              << (e.name.empty() ? "(unnamed)" : e.name) << std::right << std::setw(12) << std::setprecision(4)
              << per << std::setw(8) << std::setprecision(1) << pct << std::setw(10) << std::setprecision(0)
              << static_cast<double>(e.calls) / static_cast<double>(repeats) << "\n";
  }
  std::cout << std::defaultfloat;
  return rows;
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  std::string config, json_path;
  int64_t B = 8, H = 120, W = 480, T = 30, steps = 10, warmup = 2, decode_repeats = 5, threads = 0;
  uint64_t seed = 0;
  double peak_gflops = 220;
  bool profile = false, skip_train = false, skip_decode = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--profile") {
      profile = true;
      continue;
    }
    if (a == "--skip-train") {
      skip_train = true;
      continue;
    }
    if (a == "--skip-decode") {
      skip_decode = true;
      continue;
    }
    const std::string& v = option_value(args, i, kUsage);
    auto integer = [&](int64_t lo) {
      int64_t x = 0;
      try {
        size_t used = 0;
        x = std::stoll(v, &used);
        HMER_CHECK(used == v.size(), "");
      } catch (...) {
        fail(a, " ", v, ": expected an integer\n\n", kUsage);
      }
      HMER_CHECK(x >= lo, a, " ", v, ": must be >= ", lo);
      return x;
    };
    if (a == "--config") config = v;
    else if (a == "--json") json_path = v;
    else if (a == "--batch") B = integer(1);
    else if (a == "--height") H = integer(16);
    else if (a == "--width") W = integer(16);
    else if (a == "--tokens") T = integer(1);
    else if (a == "--steps") steps = integer(1);
    else if (a == "--warmup") warmup = integer(0);
    else if (a == "--decode-repeats") decode_repeats = integer(1);
    else if (a == "--threads") threads = integer(1);
    else if (a == "--seed") seed = static_cast<uint64_t>(integer(0));
    else if (a == "--peak-gflops") {
      try {
        peak_gflops = std::stod(v);
      } catch (...) {
        fail("--peak-gflops ", v, ": expected a number");
      }
      HMER_CHECK(peak_gflops > 0, "--peak-gflops must be positive");
    } else {
      fail("unknown option '", a, "'\n\n", kUsage);
    }
  }
  HMER_CHECK(!config.empty(), "--config is required\n\n", kUsage);
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
#endif

  const models::Config cfg = load_model_config(config);
  auto model = models::make_model(cfg.model, seed);
  const std::vector<Tensor> params = model->parameters();
  nlohmann::ordered_json j;
  j["engine"] = "hmer";
  j["version"] = HMER_VERSION;
  j["config"] = config;
  j["model"] = cfg.model.has_counting() ? "can" : "dwap";
  j["params"] = model->num_parameters();
  j["batch"] = B;
  j["height"] = H;
  j["width"] = W;
  j["tokens"] = T;
  j["threads"] = cpu::num_threads();
  j["seed"] = seed;
  j["steps"] = steps;
  j["warmup"] = warmup;
  j["decode_repeats"] = decode_repeats;
  j["optimizer"] = "Adadelta(lr=1, rho=0.9, eps=1e-6, weight_decay=1e-4), clip_grad_norm 100 (torch form)";
  j["native_build"] = HMER_NATIVE_BUILD != 0;
  std::cout << "hmer bench: " << j["model"].get<std::string>() << " (" << model->num_parameters()
            << " parameters), batch " << B << " x 1 x " << H << " x " << W << ", " << T << " tokens, "
            << cpu::num_threads() << " threads\n";

  const Batch batch = random_batch(B, H, W, T, cfg.model.vocab_size, cfg.model.eos_id, seed);

  optim::Adadelta opt(params, optim::AdadeltaOptions().lr(1.0).rho(0.9).eps(1e-6).weight_decay(1e-4));
  auto train_step = [&]() {
    model->zero_grad();
    const auto out = model->forward(batch.images, batch.image_mask, batch.labels, batch.label_mask);
    out.loss.backward();
    {
      profiler::PhaseGuard ph("optimizer");
      profiler::Scope sc("clip_grad_norm");
      optim::clip_grad_norm_torch(params, 100.0);
    }
    {
      profiler::PhaseGuard ph("optimizer");
      profiler::Scope sc("adadelta_step");
      opt.step();
    }
    return out.loss.item_double();
  };

  if (!skip_train) {
    model->train();
    std::vector<double> times;
    double first_loss = 0;
    for (int64_t s = 0; s < warmup + steps; ++s) {
      const double t0 = now_s();
      const double loss = train_step();
      const double dt = now_s() - t0;
      if (s == warmup) first_loss = loss;
      if (s >= warmup) times.push_back(dt);
      std::cout << (s < warmup ? "  warm-up step " : "  step ") << (s < warmup ? s + 1 : s - warmup + 1) << ": "
                << std::fixed << std::setprecision(3) << dt << " s, loss " << std::setprecision(4) << loss << "\n"
                << std::defaultfloat;
    }
    const double med = median(times);
    j["train_step_s"] = med;
    j["train_step_s_all"] = times;
    j["loss"] = first_loss;
    if (profile) {
      profiler::reset();
      profiler::set_enabled(true);
      const int64_t reps = 3;
      const double t0 = now_s();
      for (int64_t r = 0; r < reps; ++r) train_step();
      const double total = now_s() - t0;
      profiler::set_enabled(false);
      j["profile_train"] = profile_table(total, reps, "training step profile");
    }
  } else {
    j["train_step_s"] = nullptr;
    j["gflops_per_s"] = nullptr;
    j["loss"] = nullptr;
  }

  if (!skip_decode) {
    model->eval();
    std::mt19937_64 rng(seed + 1);
    std::uniform_real_distribution<float> u01(0.0f, 1.0f);
    std::vector<float> px(static_cast<size_t>(H * W));
    for (auto& p : px) p = u01(rng);
    const Tensor image = Tensor::from_vector<float>(px, {1, 1, H, W});
    std::vector<double> times;
    for (int64_t r = 0; r < 1 + decode_repeats; ++r) {
      const double t0 = now_s();
      const auto h = models::greedy_decode(*model, image, T, false);
      const double dt = now_s() - t0;
      HMER_CHECK(static_cast<int64_t>(h.tokens.size()) == T, "bench: decode ran ", h.tokens.size(),
                 " steps, not ", T);
      if (r > 0) times.push_back(dt);
    }
    j["decode_s"] = median(times);
    j["decode_s_all"] = times;
    std::cout << "  greedy decode, " << T << " steps: " << std::fixed << std::setprecision(4) << median(times)
              << " s (median of " << decode_repeats << ")\n"
              << std::defaultfloat;
    if (profile) {
      profiler::reset();
      profiler::set_enabled(true);
      const double t0 = now_s();
      (void)models::greedy_decode(*model, image, T, false);
      const double total = now_s() - t0;
      profiler::set_enabled(false);
      j["profile_decode"] = profile_table(total, 1, "greedy decode profile");
    }
  } else {
    j["decode_s"] = nullptr;
    j["decode_gflops_per_s"] = nullptr;
  }
  // FLOPs, counted after the timings so that both engines time from the same cold start. The model's
  // count runs the attention's coverage conv and its 1x1 projection separately, as the model is
  // specified (and as PyTorch runs it); the engine fuses the two into one conv, so it executes fewer
  // FLOPs (reported as *_executed): GFLOP/s is model FLOPs per second, comparable between engines.
  auto count_gflop = [&](bool fused_coverage) {
    NoGradGuard no_grad;
    auto& att = model->decoder().attention();
    const bool was = att.fused_coverage();
    att.set_fused_coverage(fused_coverage);
    profiler::reset();
    profiler::set_count_flops(true);
    model->train();
    (void)model->forward(batch.images, batch.image_mask, batch.labels, batch.label_mask);
    const double train = 3.0 * profiler::flops() / 1e9;  // backward of a matrix op costs twice its forward
    profiler::reset();
    model->eval();
    (void)models::greedy_decode(*model, batch.images.narrow(0, 0, 1).contiguous(), T, false);
    const double decode = profiler::flops() / 1e9;
    profiler::set_count_flops(false);
    profiler::reset();
    att.set_fused_coverage(was);
    return std::pair<double, double>{train, decode};
  };
  const auto [train_gflop, decode_gflop] = count_gflop(false);
  const auto [train_gflop_exec, decode_gflop_exec] = count_gflop(true);
  j["train_gflop_per_step"] = train_gflop;
  j["decode_gflop"] = decode_gflop;
  j["train_gflop_executed_per_step"] = train_gflop_exec;
  j["decode_gflop_executed"] = decode_gflop_exec;
  j["flop_count_method"] =
      "model FLOPs: forward FLOPs of conv2d, linear (incl. the GRU's) and matmul, 2*M*N*K each, counted by the "
      "ops during one forward with the coverage conv unfused; training = 3x forward. *_executed: the same "
      "with the engine's fused coverage conv";
  j["peak_gflops"] = peak_gflops;
  j["peak_note"] = "FP32 peak assumed: 2 cores x ~3.5 GHz boost x 32 FLOP/cycle/core (one 16-lane AVX-512 FMA "
                   "per cycle) = 224, the issue's ~220";
  if (!skip_train) {
    const double med = j["train_step_s"].get<double>();
    j["gflops_per_s"] = train_gflop / med;
    j["pct_of_peak"] = 100.0 * train_gflop / med / peak_gflops;
  } else {
    j["pct_of_peak"] = nullptr;
  }
  if (!skip_decode) j["decode_gflops_per_s"] = decode_gflop / j["decode_s"].get<double>();
  j["peak_rss_mib"] = peak_rss_mib();
  // The high-water mark of live tensor bytes (the allocator's count): RSS minus this is the heap's
  // fragmentation and everything that is not a tensor.
#if defined(HMER_WITH_TCMALLOC)
  j["malloc"] = "tcmalloc_minimal";
#elif defined(__GLIBC__)
  j["malloc"] = "glibc";
  {
    // Where the RSS that is not live tensors sits: malloc's heap (all arenas), in use and free.
    const struct mallinfo2 mi = mallinfo2();
    const double mib = 1024.0 * 1024.0;
    j["malloc_heap_mib"] = static_cast<double>(mi.arena) / mib;
    j["malloc_mmapped_mib"] = static_cast<double>(mi.hblkhd) / mib;
    j["malloc_in_use_mib"] = static_cast<double>(mi.uordblks) / mib;
    j["malloc_free_mib"] = static_cast<double>(mi.fordblks) / mib;
  }
#endif
  j["peak_live_tensor_mib"] = static_cast<double>(get_allocator(Device::cpu())->stats().peak_bytes) / (1024.0 * 1024.0);

  std::cout << "\ntrain_step_s " << (j["train_step_s"].is_null() ? std::string("-") : j["train_step_s"].dump())
            << "  decode_s " << (j["decode_s"].is_null() ? std::string("-") : j["decode_s"].dump()) << "  peak_rss_mib "
            << j["peak_rss_mib"].dump() << "  gflops_per_s "
            << (j["gflops_per_s"].is_null() ? std::string("-") : j["gflops_per_s"].dump()) << "\n";
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    HMER_CHECK(f.good(), "bench: cannot write ", json_path);
    f << j.dump(2) << "\n";
    HMER_CHECK(f.good(), "bench: write to ", json_path, " failed");
    std::cout << "wrote " << json_path << "\n";
  }
  return 0;
}

}  // namespace hmer::app
