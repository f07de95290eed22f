// The training loop end to end on a CI-sized CAN (configs/can_tiny.yaml) and 16 tiny images:
// exact resume, crash-safe checkpoints under SIGKILL, the eval JSON, --set overrides, bad keys.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "tests/testing.h"
#include "core/error.h"
#include "core/serialization.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace hmer;

namespace {

fs::path temp_dir(const std::string& name) { return hmer::test::fresh_temp_dir("trainer_" + name); }

fs::path cli() { return fs::path(HMER_REF_DIR).parent_path() / "bin" / "hmer"; }

// configs/can_tiny.yaml on the tiny dataset (16 small images, short captions) with train sections, as a
// config file in `run_parent`.
fs::path write_config(const fs::path& run_parent, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> o = {"batch_size=4", "epochs=2", "decoding.max_steps=12", "data.valid_limit=4",
                                "data.loader.prefetch=1", "train.run_dir=" + (run_parent / "run").string(),
                                "train.log_every_steps=2", "train.progress=off"};
  o.insert(o.end(), extra.begin(), extra.end());
  fs::create_directories(run_parent);
  const fs::path p = run_parent / "config.yaml";
  hmer::test::write_tiny_can_config(p.string(), o);
  return p;
}

struct Trace {
  std::vector<double> loss, grad, update;
  std::vector<int64_t> steps;
};

train::TrainResult train_run(const fs::path& config, const std::vector<std::string>& sets, bool resume, Trace& t) {
  train::TrainerHooks hooks;
  hooks.quiet = true;
  hooks.on_step = [&](const train::StepInfo& s) {
    t.loss.push_back(s.loss);
    t.grad.push_back(s.grad_norm);
    t.update.push_back(s.update_norm);
    t.steps.push_back(s.step);
    return true;
  };
  train::Trainer tr(train::load_train_config(config.string(), sets), resume, hooks);
  return tr.run();
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void expect_same_tensors(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].first, b[i].first);
    const Tensor x = a[i].second.contiguous(), y = b[i].second.contiguous();
    ASSERT_EQ(x.shape(), y.shape()) << a[i].first;
    ASSERT_EQ(x.dtype(), y.dtype()) << a[i].first;
    EXPECT_EQ(std::memcmp(x.raw_data_ptr(), y.raw_data_ptr(), static_cast<size_t>(x.numel()) * dtype_size(x.dtype())), 0) << a[i].first << " differs";
  }
}

int run_cli(const std::vector<std::string>& args, const std::string& env = "", const std::string& log = "") {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!env.empty()) ::setenv("HMER_TEST_KILL_AT_CHECKPOINT", env.c_str(), 1);
    // CI-sized ops: one thread avoids OpenMP synchronisation costs on a busy machine; every run
    // compared with another uses the same setting.
    ::setenv("OMP_NUM_THREADS", "1", 1);
    if (!log.empty()) {
      FILE* f = std::freopen(log.c_str(), "w", stdout);
      (void)f;
      ::dup2(::fileno(stdout), 2);
    }
    std::vector<char*> argv;
    const std::string bin = cli().string();
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

}  // namespace

// Stop after k steps (a checkpoint), resume, and every step's loss, gradient norm and update norm
// equal an uninterrupted run bit for bit, and so do the final weights. k = 3 stops mid-epoch;
// k = 4 stops at the last batch of epoch 0, before its end-of-epoch evaluation.
TEST(Trainer, ResumeIsBitExact) {
  const fs::path d = temp_dir("resume");
  Trace full;
  const fs::path cfg_full = write_config(d / "full");
  const train::TrainResult rf = train_run(cfg_full, {}, false, full);
  ASSERT_EQ(rf.steps, 8);
  ASSERT_EQ(full.loss.size(), 8u);
  EXPECT_GE(rf.best_exprate, 0.0);  // evaluated at the end of each epoch
  for (double l : full.loss) EXPECT_TRUE(std::isfinite(l));
  EXPECT_NE(full.loss[0], full.loss[1]);
  const NamedTensors w_full = train::RunDir((d / "full" / "run").string()).load_last().weights;

  for (int k : {3, 4}) {
    SCOPED_TRACE("k = " + std::to_string(k));
    const fs::path sub = d / ("k" + std::to_string(k));
    const fs::path cfg = write_config(sub);
    Trace t;
    const train::TrainResult r1 = train_run(cfg, {"train.max_steps=" + std::to_string(k)}, false, t);
    EXPECT_EQ(r1.steps, k);
    EXPECT_TRUE(r1.stopped_early);
    // A second fresh start into the same folder is refused.
    Trace unused;
    EXPECT_THROW(train_run(cfg, {}, false, unused), Error);
    const train::TrainResult r2 = train_run(cfg, {}, true, t);
    EXPECT_EQ(r2.steps, 8);
    ASSERT_EQ(t.loss.size(), full.loss.size());
    for (size_t i = 0; i < t.loss.size(); ++i) {
      EXPECT_EQ(t.steps[i], static_cast<int64_t>(i + 1));
      EXPECT_TRUE(same_bits(t.loss[i], full.loss[i])) << "step " << i + 1 << ": " << t.loss[i] << " vs " << full.loss[i];
      EXPECT_TRUE(same_bits(t.grad[i], full.grad[i])) << "grad norm at step " << i + 1;
      EXPECT_TRUE(same_bits(t.update[i], full.update[i])) << "update norm at step " << i + 1;
    }
    expect_same_tensors(train::RunDir((sub / "run").string()).load_last().weights, w_full);
    // The metrics files hold each step's row once (rows logged after the checkpoint are rewound).
    std::ifstream csv(sub / "run" / "metrics.csv");
    std::string line;
    int train_rows = 0;
    while (std::getline(csv, line)) train_rows += line.rfind("train,", 0) == 0;
    EXPECT_EQ(train_rows, 4);  // every 2 steps; epoch ends have nothing left to log (4 steps per epoch)
  }
}

// SIGKILL at every commit point of a checkpoint save: the latest checkpoint stays loadable, and
// resuming from it ends with the same weights as an uninterrupted run.
TEST(Trainer, KillDuringCheckpointLeavesUsableLatest) {
  if (!fs::exists(cli())) GTEST_SKIP() << cli() << " is not built";
  const fs::path d = temp_dir("kill");
  const fs::path cfg = write_config(d, {"train.checkpoint_every_steps=1", "train.max_steps=4",
                                        "train.eval_every_epochs=0"});
  ASSERT_EQ(run_cli({"train", "--config", cfg.string(), "--set", "train.run_dir=" + (d / "ref").string()}, "",
                    (d / "ref.log").string()),
            0);
  const NamedTensors w_ref = train::RunDir((d / "ref").string()).load_last().weights;
  for (const std::string& stage :
       std::vector<std::string>{"weights_written", "state_written", "pointer_written", "links_updated"}) {
    SCOPED_TRACE(stage);
    const std::string run = (d / stage).string();
    const int rc = run_cli({"train", "--config", cfg.string(), "--set", "train.run_dir=" + run}, stage + ":3",
                           (d / (stage + ".log")).string());
    ASSERT_EQ(rc, -SIGKILL) << "the process was not killed at " << stage;
    const train::RunDir rd(run);
    train::Checkpoint ck;
    ASSERT_NO_THROW(ck = rd.load_last());
    // Killed while saving generation 3: the pointer names 2 before it is replaced, 3 after.
    const bool committed = stage == "pointer_written" || stage == "links_updated";
    EXPECT_EQ(ck.state.step, committed ? 3 : 2);
    ASSERT_EQ(run_cli({"train", "--resume", run}, "", (d / (stage + ".resume.log")).string()), 0);
    expect_same_tensors(rd.load_last().weights, w_ref);
  }
}

// hmer eval writes the headline keys (rates in percent) and hmer predict prints a line per image;
// the TensorBoard file reads back with the independent reader.
TEST(Trainer, EvalJsonPredictAndTensorboard) {
  if (!fs::exists(cli())) GTEST_SKIP() << cli() << " is not built";
  const fs::path d = temp_dir("eval");
  const fs::path cfg = write_config(d, {"epochs=1"});
  ASSERT_EQ(run_cli({"train", "--config", cfg.string()}, "", (d / "train.log").string()), 0);
  const fs::path run = d / "run";
  ASSERT_TRUE(fs::exists(run / "weights_best.safetensors"));
  ASSERT_TRUE(fs::exists(run / "config.yaml"));
  const fs::path out = d / "eval.json";
  ASSERT_EQ(run_cli({"eval", "--config", cfg.string(), "--weights", (run / "weights_last.safetensors").string(),
                     "--data", hmer::test::tiny_comer_dataset(), "--limit", "6", "--out", out.string()},
                    "", (d / "eval.log").string()),
            0);
  nlohmann::json j;
  std::ifstream(out) >> j;
  for (const char* k : {"exprate", "le1", "le2", "le3", "wer", "n"}) ASSERT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["n"].get<int64_t>(), 6);
  for (const char* k : {"exprate", "le1", "le2", "le3"}) {
    EXPECT_GE(j[k].get<double>(), 0.0) << k;
    EXPECT_LE(j[k].get<double>(), 100.0) << k;
  }
  EXPECT_LE(j["exprate"].get<double>(), j["le1"].get<double>());
  EXPECT_LE(j["le1"].get<double>(), j["le2"].get<double>());
  EXPECT_TRUE(j.contains("counting_mae"));
  EXPECT_TRUE(j.contains("buckets"));
  EXPECT_TRUE(j.contains("worst"));

  const fs::path pred = d / "predict.txt";
  ASSERT_EQ(run_cli({"predict", "--weights", (run / "weights_last.safetensors").string(),
                     (fs::path(hmer::test::tiny_comer_dataset()) / "img" / "s100.png").string(), (fs::path(hmer::test::tiny_comer_dataset()) / "img" / "s101.png").string()},
                    "", pred.string()),
            0);
  std::ifstream pf(pred);
  int lines = 0;
  for (std::string line; std::getline(pf, line);) {
    ++lines;
    EXPECT_EQ(std::count(line.begin(), line.end(), '\t'), 2) << line;
  }
  EXPECT_EQ(lines, 2);

  // TensorBoard: parsed back (framing, CRCs, protobuf) by tools/read_tfevents.py.
  const std::string tb_out = (d / "tb.json").string();
  const std::string cmd = std::string(HMER_TORCH_PYTHON) + " " + HMER_SOURCE_DIR + "/tools/read_tfevents.py --json " +
                          (run / "tb").string() + " > " + tb_out;
  if (!fs::exists(std::string(HMER_SOURCE_DIR) + "/tools/read_tfevents.py")) GTEST_SKIP() << "no reader";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  nlohmann::json tb;
  std::ifstream(tb_out) >> tb;
  std::set<std::string> tags;
  for (const auto& f : tb["files"])
    for (const auto& s : f["scalars"]) tags.insert(s.is_array() ? s[0].get<std::string>() : s["tag"].get<std::string>());
  for (const char* tag : {"train/loss", "train/lr", "train/grad_norm", "eval/exprate"})
    EXPECT_TRUE(tags.count(tag)) << tag << " missing from TensorBoard";
}

// --set: dotted keys reach the model, optimizer, data and train sections; a new nested key is created.
TEST(Trainer, SetOverrides) {
  const fs::path d = temp_dir("set");
  const fs::path cfg = write_config(d);
  const train::TrainConfig c = train::load_train_config(
      cfg.string(), {"optim.lr=0.5", "train.max_steps=7", "data.loader.batch_size=3", "decoder.hidden_size=40",
                     "optim.rho=0.8", "counting_decoder.kernel_sizes=[3, 7]", "train.nonfinite=skip", "preprocess.fixed_height=48"});
  EXPECT_EQ(c.model.optim["lr"].as<double>(), 0.5);
  EXPECT_EQ(c.train.max_steps, 7);
  EXPECT_EQ(c.data.loader.batch_size, 3);
  EXPECT_EQ(c.model.model.decoder.hidden_size, 40);
  EXPECT_TRUE(c.train.skip_nonfinite);
  EXPECT_EQ(c.model.preprocess.fixed_height, 48);
  EXPECT_EQ(c.model.optim["rho"].as<double>(), 0.8);
  EXPECT_EQ(c.model.model.counting.kernel_sizes, (std::vector<int64_t>{3, 7}));
  // The loader's batch size follows the top-level batch_size unless data.loader sets it.
  EXPECT_EQ(train::load_train_config(cfg.string(), {"batch_size=5"}).data.loader.batch_size, 5);
  EXPECT_THROW(train::load_train_config(cfg.string(), {"optim.lr"}), Error);
  EXPECT_THROW(train::load_train_config(cfg.string(), {"=3"}), Error);
}

// Unknown keys anywhere are errors that name the key.
TEST(Trainer, BadConfigKeysAreErrors) {
  const fs::path d = temp_dir("bad");
  const fs::path cfg = write_config(d);
  auto message = [&](const std::string& set) -> std::string {
    try {
      train::load_train_config(cfg.string(), {set});
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message("trian.max_steps=3").find("trian"), std::string::npos);
  EXPECT_NE(message("train.max_step=3").find("train.max_step"), std::string::npos);
  EXPECT_NE(message("data.loader.bsz=3").find("bsz"), std::string::npos);
  EXPECT_NE(message("data.bogus=1").find("data.bogus"), std::string::npos);
  EXPECT_NE(message("optim.lrr=1").find("lrr"), std::string::npos);
  EXPECT_NE(message("train.nonfinite=ignore").find("nonfinite"), std::string::npos);
  EXPECT_NE(message("train.eval_beam=0").find("eval_beam"), std::string::npos);
  EXPECT_EQ(message("train.max_steps=3"), "");
}

// A NaN in the weights stops training with a message naming the first bad parameter; with
// train.nonfinite: skip the step is skipped and training goes on.
TEST(Trainer, NonFiniteStopsOrSkips) {
  const fs::path d = temp_dir("nan");
  for (bool skip : {false, true}) {
    const fs::path cfg = write_config(d / (skip ? "skip" : "stop"), {"train.max_steps=3", "train.eval_every_epochs=0",
                                                                    std::string("train.nonfinite=") + (skip ? "skip" : "stop")});
    train::TrainerHooks hooks;
    hooks.quiet = true;
    train::Trainer tr(train::load_train_config(cfg.string()), false, hooks);
    Tensor w = tr.model().decoder().named_parameters().front().second;
    const std::string wname = "decoder." + tr.model().decoder().named_parameters().front().first;
    w.fill_(std::nan(""));
    if (!skip) {
      try {
        tr.run();
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(wname), std::string::npos) << e.what();
      }
    } else {
      const train::TrainResult r = tr.run();
      EXPECT_EQ(r.steps, 3);
      EXPECT_EQ(r.skipped_steps, 3);
    }
  }
}

// `hmer bench` on a tiny model: it runs, writes the agreed JSON keys with sane values, and its FLOP
// count is the model's (independent of the timing, so it can be checked exactly across two runs).
TEST(Cli, BenchWritesItsJson) {
  const fs::path d = fs::temp_directory_path() / ("hmer_test_bench_" + std::to_string(::getpid()));
  fs::create_directories(d);
  auto bench = [&](const std::string& name, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"bench", "--config", std::string(HMER_SOURCE_DIR) + "/configs/can_tiny.yaml",
                                     "--batch", "2", "--height", "32", "--width", "64", "--tokens", "3", "--steps", "2",
                                     "--warmup", "1", "--decode-repeats", "2", "--json", (d / name).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    EXPECT_EQ(run_cli(args, "", (d / (name + ".log")).string()), 0) << name;
    std::ifstream f(d / name);
    return nlohmann::json::parse(f);
  };
  const nlohmann::json a = bench("a.json", {"--profile"});
  for (const char* k : {"train_step_s", "decode_s", "peak_rss_mib", "gflops_per_s", "train_gflop_per_step",
                        "decode_gflop", "pct_of_peak", "train_gflop_executed_per_step", "decode_gflops_per_s"}) {
    ASSERT_TRUE(a.contains(k) && a[k].is_number()) << k;
    EXPECT_GT(a[k].get<double>(), 0.0) << k;
  }
  EXPECT_EQ(a["train_step_s_all"].size(), 2u);
  EXPECT_EQ(a["decode_s_all"].size(), 2u);
  EXPECT_TRUE(std::isfinite(a["loss"].get<double>()));
  ASSERT_TRUE(a["profile_train"].is_array());
  bool conv_backward = false;
  for (const auto& r : a["profile_train"])
    if (r["phase"] == "backward" && r["op"] == "Conv2dBackward") conv_backward = true;
  EXPECT_TRUE(conv_backward);
  // The engine fuses the coverage conv with its projection, so it executes a different count than the model
  // specifies (fewer for the full CAN, A = Cc = 512; a little more for can_tiny, whose Cc is small).
  EXPECT_NE(a["train_gflop_executed_per_step"].get<double>(), a["train_gflop_per_step"].get<double>());
  const nlohmann::json b = bench("b.json", {"--skip-decode"});
  EXPECT_TRUE(b["decode_s"].is_null());
  EXPECT_EQ(a["train_gflop_per_step"].get<double>(), b["train_gflop_per_step"].get<double>());
  EXPECT_EQ(a["loss"].get<double>(), b["loss"].get<double>());  // same seed, same batch, same weights
  fs::remove_all(d);
}
