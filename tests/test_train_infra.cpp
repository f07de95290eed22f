// Training infrastructure: metrics (hand-computed Levenshtein / ExpRate / WER / buckets), the
// TensorBoard writer read back by an independent Python reader with CRC checks, crash-safe
// checkpoints (fault points and random SIGKILLs of a child that writes checkpoints in a loop),
// training-health warnings and the non-finite check, and the log writers' formats.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "optim/adadelta.h"
#include "optim/what_moved.h"
#include "tests/testing.h"
#include "train/checkpoint.h"
#include "train/health.h"
#include "train/logging.h"
#include "train/metrics.h"
#include "train/tensorboard.h"

namespace hmer::train {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "hmer_train_XXXXXX").string();
    HMER_CHECK(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

// Runs a shell command, returns (exit status, stdout+stderr).
std::pair<int, std::string> run(const std::string& cmd) {
  std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  HMER_CHECK(p != nullptr, "popen failed: ", cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

Tokens toks(const std::string& s) { return split_like_inference(s); }

// =================================================================================================
// Metrics
// =================================================================================================

TEST(Metrics, LevenshteinHandComputed) {
  EXPECT_EQ(levenshtein(Tokens{}, Tokens{}), 0);
  EXPECT_EQ(levenshtein(Tokens{"a"}, Tokens{}), 1);
  EXPECT_EQ(levenshtein(Tokens{}, Tokens{"a", "b"}), 2);
  // kitten -> sitting: k->s, e->i, +g
  EXPECT_EQ(levenshtein(toks("k i t t e n"), toks("s i t t i n g")), 3);
  EXPECT_EQ(levenshtein(toks("s i t t i n g"), toks("k i t t e n")), 3);
  // one substitution inside a fraction
  EXPECT_EQ(levenshtein(toks("\\frac { a } { b }"), toks("\\frac { a } { c }")), 1);
  // two deletions (the braces)
  EXPECT_EQ(levenshtein(toks("x ^ { 2 }"), toks("x ^ 2")), 2);
  // a swap costs two substitutions
  EXPECT_EQ(levenshtein(toks("a + b"), toks("b + a")), 2);
  // tokens are compared whole: "\alpha" vs "\alph" is one substitution, not one character
  EXPECT_EQ(levenshtein(toks("\\alpha + 1"), toks("\\alph + 1")), 1);
  // insertion at the front, deletion at the end
  EXPECT_EQ(levenshtein(toks("a b c"), toks("z a b")), 2);
  EXPECT_EQ(levenshtein(std::vector<int64_t>{1, 2, 3, 4}, std::vector<int64_t>{1, 3, 4, 5}), 2);
  EXPECT_EQ(levenshtein(std::vector<int64_t>{}, std::vector<int64_t>{7, 7, 7}), 3);
}

TEST(Metrics, SplitLikeInference) {
  EXPECT_EQ(split_like_inference(""), Tokens{""});  // Python: ''.split(' ') == ['']
  EXPECT_EQ(split_like_inference("  a b \n"), (Tokens{"a", "b"}));
  EXPECT_EQ(split_like_inference("a  b"), (Tokens{"a", "", "b"}));
  EXPECT_EQ(join_tokens({"x", "^", "2"}), "x ^ 2");
}

// "t7" (appending avoids GCC 12's false -Wrestrict on "t" + std::string).
std::string name_of(char prefix, int64_t i) {
  std::string s(1, prefix);
  s += std::to_string(i);
  return s;
}

SampleExtras with_id(const std::string& id) {
  SampleExtras x;
  x.id = id;
  return x;
}

// Reference of `len` tokens and a prediction at distance `d` (d substitutions at the front).
std::pair<Tokens, Tokens> pair_at(int64_t len, int64_t d) {
  Tokens ref, pred;
  for (int64_t i = 0; i < len; ++i) {
    ref.push_back(name_of('t', i));
    pred.push_back(i < d ? name_of('x', i) : ref.back());
  }
  return {pred, ref};
}

TEST(Metrics, ExpRateLeWerAndStderr) {
  // distances 0,0,0,1,1,2,3,4,0,5 on references of 5..14 tokens
  const int64_t d[10] = {0, 0, 0, 1, 1, 2, 3, 4, 0, 5};
  MetricAccumulator acc;
  int64_t ref_tokens = 0;
  for (int i = 0; i < 10; ++i) {
    auto [p, r] = pair_at(5 + i, d[i]);
    ref_tokens += 5 + i;
    acc.add(p, r);
  }
  EXPECT_EQ(acc.n(), 10);
  EXPECT_DOUBLE_EQ(acc.exprate(), 40.0);
  EXPECT_DOUBLE_EQ(acc.le(1), 60.0);
  EXPECT_DOUBLE_EQ(acc.le(2), 70.0);
  EXPECT_DOUBLE_EQ(acc.le(3), 80.0);
  EXPECT_EQ(ref_tokens, 95);
  EXPECT_DOUBLE_EQ(acc.wer(), 100.0 * 16 / 95);
  EXPECT_NEAR(acc.exprate_stderr(), 100.0 * std::sqrt(0.4 * 0.6 / 10), 1e-12);
  EXPECT_THROW(acc.le(4), Error);
  EXPECT_NE(acc.summary_line().find("ExpRate 40.00%"), std::string::npos) << acc.summary_line();

  MetricAccumulator empty;
  EXPECT_EQ(empty.exprate(), 0.0);
  EXPECT_EQ(empty.to_json()["n"], 0);
}

TEST(Metrics, EmptyPredictionScoredAsInference) {
  MetricAccumulator acc;
  acc.add({}, toks("a b"));  // [''] vs [a, b]: substitute + insert
  acc.add({}, {});           // [''] vs ['']: exact
  EXPECT_DOUBLE_EQ(acc.exprate(), 50.0);
  EXPECT_DOUBLE_EQ(acc.le(1), 50.0);
  EXPECT_DOUBLE_EQ(acc.le(2), 100.0);
  EXPECT_EQ(acc.to_json()["edit_distance_sum"], 2);
  EXPECT_EQ(acc.to_json()["ref_tokens_sum"], 3);  // 2 + len([''])
}

TEST(Metrics, LengthBucketsAndJsonKeys) {
  MetricOptions o;
  o.bucket_bounds = {2, 4};
  MetricAccumulator acc(o);
  // lengths 1,2 -> "1-2"; 3,4 -> "3-4"; 5,9 -> "5+"
  acc.add(toks("a"), toks("a"));
  acc.add(toks("a c"), toks("a b"));
  acc.add(toks("a b c"), toks("a b c"));
  acc.add(toks("a b c d"), toks("a b c d"));
  acc.add(toks("a b c d e"), toks("a b c d e"));
  acc.add(toks("a"), toks("a b c d e f g h i"));
  const auto j = acc.to_json();
  for (const char* k : {"n", "exprate", "le1", "le2", "le3", "wer", "exprate_stderr", "buckets", "worst"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_FALSE(j.contains("counting_mae"));  // no counting vectors were given
  ASSERT_EQ(j["buckets"].size(), 3u);
  EXPECT_EQ(j["buckets"][0]["name"], "1-2");
  EXPECT_EQ(j["buckets"][0]["n"], 2);
  EXPECT_DOUBLE_EQ(j["buckets"][0]["exprate"].get<double>(), 50.0);
  EXPECT_DOUBLE_EQ(j["buckets"][0]["wer"].get<double>(), 100.0 / 3);
  EXPECT_EQ(j["buckets"][1]["name"], "3-4");
  EXPECT_EQ(j["buckets"][1]["n"], 2);
  EXPECT_DOUBLE_EQ(j["buckets"][1]["exprate"].get<double>(), 100.0);
  EXPECT_EQ(j["buckets"][2]["name"], "5+");
  EXPECT_TRUE(j["buckets"][2]["max_len"].is_null());
  EXPECT_EQ(j["buckets"][2]["n"], 2);
  EXPECT_DOUBLE_EQ(j["buckets"][2]["exprate"].get<double>(), 50.0);
  EXPECT_DOUBLE_EQ(j["buckets"][2]["le3"].get<double>(), 50.0);  // distance 8 on the 9-token line
  EXPECT_THROW(MetricAccumulator(MetricOptions{{4, 2}, 5}), Error);
}

TEST(Metrics, CountingErrorAndWorst) {
  const CountingError e = counting_error({1, 2, 3}, {1, 0, 0});
  EXPECT_DOUBLE_EQ(e.mae, 5.0 / 3);
  EXPECT_DOUBLE_EQ(e.rmse, std::sqrt(13.0 / 3));
  EXPECT_THROW(counting_error({1, 2}, {1}), Error);

  MetricOptions o;
  o.worst_k = 2;
  MetricAccumulator acc(o);
  const int64_t d[4] = {3, 5, 1, 5};
  for (int i = 0; i < 4; ++i) {
    auto [p, r] = pair_at(6, d[i]);
    SampleExtras x;
    x.id = "img";
    x.id += std::to_string(i);
    x.confidence = 0.5;
    x.count_pred = {static_cast<float>(i), 0};
    x.count_ref = {0, 0};
    acc.add(p, r, x);
  }
  acc.add(toks("a"), toks("a"));  // exact lines never enter the worst list
  ASSERT_EQ(acc.worst().size(), 2u);
  EXPECT_EQ(acc.worst()[0].id, "img1");  // distance 5, earlier first
  EXPECT_EQ(acc.worst()[1].id, "img3");
  const auto j = acc.to_json();
  EXPECT_EQ(j["worst"][0]["distance"], 5);
  EXPECT_EQ(j["worst"][0]["ref"], "t0 t1 t2 t3 t4 t5");
  EXPECT_DOUBLE_EQ(j["worst"][0]["confidence"].get<double>(), 0.5);
  EXPECT_EQ(j["counting_n"], 4);
  // per image mae = i / 2 -> mean (0 + .5 + 1 + 1.5) / 4
  EXPECT_DOUBLE_EQ(j["counting_mae"].get<double>(), 0.75);
}

TEST(Metrics, MergeEqualsOneAccumulator) {
  MetricAccumulator all, a, b;
  for (int i = 0; i < 12; ++i) {
    auto [p, r] = pair_at(3 + i * 4, i % 5);
    all.add(p, r, with_id(name_of('s', i)));
    (i < 5 ? a : b).add(p, r, with_id(name_of('s', i)));
  }
  a.merge(b);
  EXPECT_EQ(a.to_json().dump(), all.to_json().dump());
}

// =================================================================================================
// TensorBoard
// =================================================================================================

TEST(TensorBoard, Crc32cKnownAnswers) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  // RFC 3720 (iSCSI) B.4 vectors exercise the 8-byte slices.
  std::string zeros(32, '\0'), ones(32, '\xff'), inc(32, '\0');
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<char>(i);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(inc.data(), 32), 0x46DD794Eu);
  // incremental == one shot, whatever the split
  const std::string s = "The quick brown fox jumps over the lazy dog, 0123456789";
  for (size_t cut = 0; cut <= s.size(); cut += 7)
    EXPECT_EQ(crc32c(s.data() + cut, s.size() - cut, crc32c(s.data(), cut)), crc32c(s.data(), s.size()));
  const uint32_t c = 0xE3069283u;
  EXPECT_EQ(mask_crc32c(c), static_cast<uint32_t>(((c >> 15) | (c << 17)) + 0xa282ead8u));
}

TEST(TensorBoard, FramingLayout) {
  const std::string rec = tfrecord_frame("abc");
  ASSERT_EQ(rec.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(rec[0], 3);
  for (int i = 1; i < 8; ++i) EXPECT_EQ(rec[i], 0);
  uint32_t len_crc = 0, data_crc = 0;
  for (int i = 0; i < 4; ++i) {
    len_crc |= static_cast<uint32_t>(static_cast<unsigned char>(rec[8 + i])) << (8 * i);
    data_crc |= static_cast<uint32_t>(static_cast<unsigned char>(rec[15 + i])) << (8 * i);
  }
  EXPECT_EQ(len_crc, mask_crc32c(crc32c(rec.data(), 8)));
  EXPECT_EQ(data_crc, mask_crc32c(crc32c("abc", 3)));
  EXPECT_EQ(rec.substr(12, 3), "abc");
}

// Bytes derived by hand from tensorflow/core/util/event.proto and summary.proto: Event.wall_time = 1
// (fixed64, key 0x09), step = 2 (varint, 0x10), file_version = 3 (0x1A), summary = 5 (0x2A),
// session_log = 7 (0x3A); Summary.value = 1 (0x0A); Value.tag = 1 (0x0A), simple_value = 2 (fixed32,
// 0x15); SessionLog.status = 1 (varint, 0x08), START = 1.
TEST(TensorBoard, EventBytesMatchTheProtoDefinition) {
  const std::string t0 = "\x09" + std::string(8, '\0');  // wall_time 0.0
  EXPECT_EQ(encode_scalars_event(0.0, 1, {{"a", 1.0f}}),
            t0 + std::string("\x10\x01\x2A\x0A\x0A\x08\x0A\x01" "a" "\x15\x00\x00\x80\x3F", 14));
  EXPECT_EQ(encode_session_start_event(0.0, 7), t0 + std::string("\x10\x07\x3A\x02\x08\x01", 6));
  EXPECT_EQ(encode_file_version_event(0.0, "brain.Event:2"), t0 + std::string("\x10\x00\x1A\x0D", 4) + "brain.Event:2");
  // step 300 is a two-byte varint; wall_time 1.5 = 0x3FF8000000000000 little-endian
  EXPECT_EQ(encode_session_start_event(1.5, 300),
            std::string("\x09\x00\x00\x00\x00\x00\x00\xF8\x3F\x10\xAC\x02\x3A\x02\x08\x01", 16));
  // a negative step is a 10-byte varint (two's complement), as protobuf encodes int64
  EXPECT_EQ(encode_session_start_event(0.0, -1).substr(9, 11),
            std::string("\x10\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x01", 11));
}

TEST(TensorBoard, PythonReaderSelfTest) {
  const auto [rc, out] = run(std::string(HMER_TORCH_PYTHON) + " " HMER_SOURCE_DIR "/tools/read_tfevents.py --selftest");
  EXPECT_EQ(rc, 0) << out;
}

TEST(TensorBoard, WrittenFileReadBackIndependently) {
  TempDir tmp;
  std::string path;
  const int64_t big_step = 5000000000LL;  // needs a multi-byte varint beyond 32 bits
  {
    EventWriter w(tmp.path + "/tb", 0.0);
    path = w.path();
    w.add_scalar("loss/total", 1.5, 0);
    w.add_scalar("loss/total", 0.123456789, 10);
    w.add_scalars({{"lr", 0.1}, {"exprate", 42.5}, {"health/update_ratio/decoder.weight", 3.2e-5}}, 10);
    w.add_session_start(7);
    w.add_scalar("loss/total", -2.0, big_step);
  }
  const std::string name = fs::path(path).filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_NE(name.find(std::string(".") + host), std::string::npos) << name;

  const auto [rc, out] = run(std::string(HMER_TORCH_PYTHON) + " " HMER_SOURCE_DIR "/tools/read_tfevents.py --json '" +
                             path + "'");
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(out)["files"][0];
  EXPECT_EQ(j["file_version"], "brain.Event:2");
  EXPECT_EQ(j["records"], 6);
  ASSERT_EQ(j["session_starts"].size(), 1u);
  EXPECT_EQ(j["session_starts"][0], 7);
  const auto& s = j["scalars"];
  ASSERT_EQ(s.size(), 6u);
  struct Want {
    const char* tag;
    int64_t step;
    double value;
  } want[] = {{"loss/total", 0, 1.5},
              {"loss/total", 10, 0.123456789},
              {"lr", 10, 0.1},
              {"exprate", 10, 42.5},
              {"health/update_ratio/decoder.weight", 10, 3.2e-5},
              {"loss/total", big_step, -2.0}};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(s[i]["tag"], want[i].tag);
    EXPECT_EQ(s[i]["step"].get<int64_t>(), want[i].step);
    // simple_value is a float32: the reader sees exactly the rounded value
    EXPECT_EQ(s[i]["value"].get<double>(), static_cast<double>(static_cast<float>(want[i].value))) << i;
  }

  // A flipped byte in the data is a CRC error, and a cut file a truncation error.
  std::string bytes = read_text(path);
  std::string bad = bytes;
  bad[bad.size() - 10] ^= 0x01;
  write_text(tmp.path + "/bad.tfevents", bad);
  const auto [rc2, out2] = run(std::string(HMER_TORCH_PYTHON) + " " HMER_SOURCE_DIR "/tools/read_tfevents.py '" +
                               tmp.path + "/bad.tfevents'");
  EXPECT_EQ(rc2, 1) << out2;
  EXPECT_NE(out2.find("CRC mismatch"), std::string::npos) << out2;
  write_text(tmp.path + "/cut.tfevents", bytes.substr(0, bytes.size() - 3));
  const auto [rc3, out3] = run(std::string(HMER_TORCH_PYTHON) + " " HMER_SOURCE_DIR "/tools/read_tfevents.py '" +
                               tmp.path + "/cut.tfevents'");
  EXPECT_EQ(rc3, 1) << out3;
  EXPECT_NE(out3.find("truncated"), std::string::npos) << out3;
}

TEST(TensorBoard, TwoWritersInOneSecondGetTwoFiles) {
  TempDir tmp;
  EventWriter a(tmp.path), b(tmp.path);
  EXPECT_NE(a.path(), b.path());
}

// =================================================================================================
// Checkpoints
// =================================================================================================

Tensor filled(int64_t n, float v) {
  Tensor t = Tensor::empty({n});
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = v;
  return t;
}

TEST(Checkpoint, RoundTripWithRealOptimizerState) {
  TempDir tmp;
  RunDir run_dir(tmp.path + "/run");
  EXPECT_FALSE(run_dir.has_checkpoint());
  EXPECT_THROW(run_dir.load_last(), Error);

  Tensor w = test::rand_tensor({4, 3}, 1, -1, 1, DType::Float32).set_requires_grad(true);
  Tensor b = test::rand_tensor({3}, 2, -1, 1, DType::Float32).set_requires_grad(true);
  optim::Adadelta opt({{{w, b}, {"fc.weight", "fc.bias"}, std::nullopt, std::nullopt}},
                      optim::AdadeltaOptions().weight_decay(1e-4));
  w.set_grad(test::rand_tensor({4, 3}, 3, -1, 1, DType::Float32));
  b.set_grad(test::rand_tensor({3}, 4, -1, 1, DType::Float32));
  opt.step();

  TrainingState st;
  st.step = 123;
  st.epoch = 4;
  st.optimizer = opt.state_dict();
  Generator dropout_gen(20211024);
  dropout_gen.reserve(96);
  st.rngs["dropout"] = rng_state_of(dropout_gen);
  st.rngs["loader"] = {~0ull, 1ull << 40};
  st.scalars["loader.cursor"] = "17";
  st.scalars["best_exprate"] = optim::format_double(0.1 + 0.2);
  st.tensors.emplace_back("loader.permutation", Tensor::arange(10));
  st.meta["note"] = "resume me";
  const NamedTensors weights = {{"fc.weight", w.detach()}, {"fc.bias", b.detach()}};
  EXPECT_EQ(run_dir.save_last(weights, st, {{"exprate", "12.5"}}), 1);
  run_dir.save_config("model: {hidden: 8}\n");

  const Checkpoint c = run_dir.load_last();
  EXPECT_EQ(c.generation, 1);
  ASSERT_EQ(c.weights.size(), 2u);
  EXPECT_EQ(c.weights[0].first, "fc.weight");
  EXPECT_TRUE(test::bitwise_equal(c.weights[0].second, w, "fc.weight"));
  EXPECT_TRUE(test::bitwise_equal(c.weights[1].second, b, "fc.bias"));
  EXPECT_EQ(c.weights_metadata.at("format"), "pt");
  EXPECT_EQ(c.weights_metadata.at("exprate"), "12.5");
  EXPECT_EQ(c.weights_metadata.at("hmer/step"), "123");
  EXPECT_EQ(c.state.step, 123);
  EXPECT_EQ(c.state.epoch, 4);
  EXPECT_EQ(c.state.rngs.at("dropout").seed, 20211024u);
  EXPECT_EQ(c.state.rngs.at("dropout").offset, 96u);
  Generator restored;
  restore_rng(restored, c.state.rngs.at("dropout"));
  EXPECT_EQ(restored.uniform_double(), dropout_gen.uniform_double());
  EXPECT_EQ(c.state.rngs.at("loader").seed, ~0ull);
  EXPECT_EQ(c.state.rngs.at("loader").offset, 1ull << 40);
  EXPECT_EQ(c.state.scalars.at("loader.cursor"), "17");
  EXPECT_EQ(optim::parse_double(c.state.scalars.at("best_exprate"), "best"), 0.1 + 0.2);
  ASSERT_EQ(c.state.tensors.size(), 1u);
  EXPECT_TRUE(test::bitwise_equal(c.state.tensors[0].second, Tensor::arange(10), "permutation"));
  EXPECT_EQ(c.state.meta["note"], "resume me");
  EXPECT_EQ(c.state.optimizer.scalars, st.optimizer.scalars);
  ASSERT_EQ(c.state.optimizer.tensors.size(), st.optimizer.tensors.size());
  for (size_t i = 0; i < st.optimizer.tensors.size(); ++i) {
    EXPECT_EQ(c.state.optimizer.tensors[i].first, st.optimizer.tensors[i].first);
    EXPECT_TRUE(test::bitwise_equal(c.state.optimizer.tensors[i].second, st.optimizer.tensors[i].second,
                         st.optimizer.tensors[i].first));
  }
  // The restored state drives an identical next step.
  Tensor w2 = w.detach().clone().set_requires_grad(true), b2 = b.detach().clone().set_requires_grad(true);
  optim::Adadelta opt2({{{w2, b2}, {"fc.weight", "fc.bias"}, std::nullopt, std::nullopt}},
                       optim::AdadeltaOptions().weight_decay(1e-4));
  opt2.load_state_dict(c.state.optimizer);
  for (Tensor* p : {&w, &w2}) p->set_grad(test::rand_tensor({4, 3}, 5, -1, 1, DType::Float32));
  for (Tensor* p : {&b, &b2}) p->set_grad(test::rand_tensor({3}, 6, -1, 1, DType::Float32));
  opt.step();
  opt2.step();
  EXPECT_TRUE(test::bitwise_equal(w2, w, "weight after a resumed step"));

  // Convenience names and config.
  EXPECT_EQ(load_safetensors(run_dir.weights_last_path()).size(), 2u);
  EXPECT_EQ(load_training_state(run_dir.state_last_path()).step, 123);
  EXPECT_EQ(read_text(run_dir.config_path()), "model: {hidden: 8}\n");

  // A second save: generation 2, the first generation's files are gone.
  st.step = 200;
  EXPECT_EQ(run_dir.save_last(weights, st), 2);
  EXPECT_EQ(run_dir.load_last().state.step, 200);
  EXPECT_EQ(run_dir.read_latest()["step"], 200);
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path + "/run/checkpoints")) {
    ++files;
    EXPECT_NE(e.path().filename().string().find("gen-000002"), std::string::npos) << e.path();
  }
  EXPECT_EQ(files, 2);
  EXPECT_EQ(load_training_state(run_dir.state_last_path()).step, 200);

  // Best weights.
  EXPECT_THROW(run_dir.load_best(), Error);
  run_dir.save_best(weights, {{"exprate", "50"}});
  std::map<std::string, std::string> md;
  EXPECT_EQ(run_dir.load_best(&md).size(), 2u);
  EXPECT_EQ(md.at("exprate"), "50");
}

TEST(Checkpoint, DamagedFilesAreReportedClearly) {
  TempDir tmp;
  RunDir rd(tmp.path);
  TrainingState st;
  st.step = 5;
  rd.save_last({{"w", filled(1000, 1.0f)}}, st);
  const std::string wfile = tmp.path + "/" + rd.read_latest()["weights"]["file"].get<std::string>();
  const std::string sfile = tmp.path + "/" + rd.read_latest()["state"]["file"].get<std::string>();
  const std::string good = read_text(wfile);

  auto expect_error = [&](const std::string& needle) {
    try {
      rd.load_last();
      ADD_FAILURE() << "load_last did not throw (expected '" << needle << "')";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  fs::remove(wfile);  // break the hard link so weights_last keeps the good bytes
  write_text(wfile, flipped);
  expect_error("CRC32C mismatch");
  write_text(wfile, good.substr(0, good.size() - 100));
  expect_error("truncated");
  fs::remove(wfile);
  expect_error("does not exist");
  write_text(wfile, good);
  EXPECT_NO_THROW(rd.load_last());
  write_text(tmp.path + "/latest.json", "{\"format\": \"hmer-checkpoint/1\", \"generation\": ");
  expect_error("malformed checkpoint pointer");
  EXPECT_THROW(load_training_state(wfile), Error);  // a weights file is not a training state
  (void)sfile;
}

// Child-side writer for the kill tests: checkpoints whose every tensor holds the step number, with
// sizes that change with the step, so a torn or mixed checkpoint cannot pass verification.
int64_t weights_numel(int64_t step) { return 20000 + (step * 7919) % 250000; }
int64_t cursor_numel(int64_t step) { return 1000 + (step * 104729) % 50000; }

void write_checkpoint_for(const RunDir& rd, int64_t step) {
  TrainingState st;
  st.step = step;
  st.epoch = step / 10;
  st.optimizer.scalars = {{"type", "fake"}, {"groups", "1"}};
  st.optimizer.tensors.emplace_back("state.0.0.square_avg", filled(weights_numel(step), static_cast<float>(step)));
  st.rngs["dropout"] = {7, static_cast<uint64_t>(step) * 4};
  st.scalars["step_copy"] = std::to_string(step);
  st.tensors.emplace_back("cursor", filled(cursor_numel(step), static_cast<float>(step)));
  rd.save_last({{"w", filled(weights_numel(step), static_cast<float>(step))}}, st);
}

bool all_equal(const Tensor& t, float v) {
  const float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (p[i] != v) return false;
  return true;
}

// Verifies that the latest checkpoint is complete and self-consistent; returns its step.
int64_t verify_latest(const RunDir& rd) {
  const Checkpoint c = rd.load_last();
  const int64_t s = c.state.step;
  const float v = static_cast<float>(s);
  EXPECT_EQ(c.weights.size(), 1u);
  EXPECT_EQ(c.weights[0].second.numel(), weights_numel(s));
  EXPECT_TRUE(all_equal(c.weights[0].second, v)) << "weights of step " << s;
  EXPECT_EQ(c.state.scalars.at("step_copy"), std::to_string(s));
  EXPECT_EQ(c.state.rngs.at("dropout").offset, static_cast<uint64_t>(s) * 4);
  EXPECT_EQ(c.state.optimizer.tensors.at(0).second.numel(), weights_numel(s));
  EXPECT_TRUE(all_equal(c.state.optimizer.tensors.at(0).second, v));
  EXPECT_EQ(c.state.tensors.at(0).second.numel(), cursor_numel(s));
  EXPECT_TRUE(all_equal(c.state.tensors.at(0).second, v));
  EXPECT_EQ(c.weights_metadata.at("hmer/step"), std::to_string(s));
  // The convenience link, when present, is always a complete file of some generation: it may lag
  // one save behind after a crash (or be absent after a crash inside the first save) ...
  auto check_link = [&](bool must_match) {
    if (!fs::exists(rd.weights_last_path())) {
      EXPECT_FALSE(must_match) << "weights_last missing after recover()";
      return;
    }
    std::map<std::string, std::string> md;
    const NamedTensors last = load_safetensors(rd.weights_last_path(), &md);
    const int64_t ls = std::stoll(md.at("hmer/step"));
    EXPECT_LE(ls, s);
    EXPECT_EQ(last.at(0).second.numel(), weights_numel(ls));
    EXPECT_TRUE(all_equal(last.at(0).second, static_cast<float>(ls)));
    if (must_match) {
      EXPECT_EQ(ls, s);
      EXPECT_EQ(load_training_state(rd.state_last_path()).step, s);
    }
  };
  check_link(false);
  // ... until recover() re-points it at the committed checkpoint.
  rd.recover();
  check_link(true);
  return s;
}

TEST(Checkpoint, KillAtEveryCommitStage) {
  const char* stages[] = {"weights_written", "state_written", "pointer_written", "links_updated", "cleaned"};
  for (const char* stage : stages) {
    TempDir tmp;
    RunDir rd(tmp.path);
    write_checkpoint_for(rd, 1);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::string target = stage;
      set_checkpoint_fault_hook([&](std::string_view s) {
        if (s == target) ::raise(SIGKILL);
      });
      try {
        write_checkpoint_for(rd, 2);
      } catch (...) {
      }
      ::_exit(3);  // the hook should have killed us
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << stage << " status " << status;
    const bool committed = std::string(stage) != "weights_written" && std::string(stage) != "state_written";
    EXPECT_EQ(verify_latest(rd), committed ? 2 : 1) << stage;
    // The next save cleans up whatever the crash left behind.
    write_checkpoint_for(rd, 3);
    EXPECT_EQ(verify_latest(rd), 3) << stage;
    int files = 0;
    for (const auto& e : fs::directory_iterator(tmp.path + "/checkpoints")) {
      (void)e;
      ++files;
    }
    EXPECT_EQ(files, 2) << stage;
  }
}

TEST(Checkpoint, RandomSigkillNeverLeavesATornLatestCheckpoint) {
  TempDir tmp;
  RunDir rd(tmp.path);
  std::mt19937 rng(20211024);
  std::uniform_int_distribution<int> delay_us(0, 40000);
  const int kills = 30;
  int mid_write = 0, committed_kills = 0;
  int64_t last_step = 0, extra_us = 0;
  for (int k = 0; k < kills; ++k) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // The writer: resume from the latest checkpoint and keep checkpointing until killed.
      try {
        int64_t step = rd.has_checkpoint() ? rd.load_last().state.step : 0;
        while (true) write_checkpoint_for(rd, ++step);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "writer failed: %s\n", e.what());
      }
      ::_exit(3);
    }
    // On a loaded machine a save can outlast the random delay; lengthen the wait while kills stop
    // making progress, so the loop keeps committing checkpoints (and killing them mid-save).
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + extra_us + delay_us(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself (status " << status << ")";
    // Evidence of where the kill landed: temp files or an extra generation mean mid-save.
    int extra = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(tmp.path + "/checkpoints", ec)) (void)e, ++extra;
    for (const char* f : {"latest.json.tmp", "weights_last.safetensors.tmp", "state_last.safetensors.tmp"})
      extra += fs::exists(tmp.path + "/" + f) ? 1 : 0;
    mid_write += extra != 2;
    if (!rd.has_checkpoint()) {
      extra_us = std::min<int64_t>(1000000, extra_us * 2 + 10000);
      continue;
    }
    ++committed_kills;
    const int64_t s = verify_latest(rd);
    EXPECT_GE(s, last_step) << "the latest checkpoint went backwards";
    extra_us = s > last_step ? 0 : std::min<int64_t>(1000000, extra_us * 2 + 10000);
    last_step = s;
    if (::testing::Test::HasFailure()) break;
  }
  std::printf("KILLTEST kills=%d with_checkpoint=%d mid_save=%d last_step=%lld\n", kills, committed_kills, mid_write,
              static_cast<long long>(last_step));
  EXPECT_GT(committed_kills, kills / 2);
  EXPECT_GT(mid_write, 0) << "no kill landed inside a save: the test did not exercise anything";
}

// =================================================================================================
// Health
// =================================================================================================

optim::ParamMotion motion(const std::string& name, double g, double w, double u) {
  optim::ParamMotion m;
  m.name = name;
  m.numel = 10;
  m.grad_norm = g;
  m.weight_norm = w;
  m.update_norm = u;
  m.ratio = w > 0 ? u / w : u;
  return m;
}

TEST(Health, StallWarningOncePerEpisode) {
  HealthOptions o;
  o.stall_ratio = 1e-6;
  o.stall_window = 5;
  HealthMonitor mon(o);
  auto rows = [](double u) { return std::vector{motion("a", 1, 1, u), motion("b", 2, 1, u)}; };
  std::vector<int64_t> warned_at;
  std::string text;
  for (int64_t s = 0; s < 30; ++s) {
    // healthy for steps 0..2, stalled 3..14, healthy 15..19, stalled 20..29
    const bool stalled = (s >= 3 && s < 15) || s >= 20;
    const auto w = mon.record(s, rows(stalled ? 1e-9 : 1e-3), 0.25);
    if (!w.empty()) {
      warned_at.push_back(s);
      text = w[0];
      EXPECT_EQ(w.size(), 1u) << "per-parameter warnings are folded into the total one";
    }
  }
  EXPECT_EQ(warned_at, (std::vector<int64_t>{7, 24}));
  EXPECT_NE(text.find("updates stalled"), std::string::npos) << text;
  EXPECT_NE(text.find("steps 20..24"), std::string::npos) << text;
  EXPECT_NE(text.find("lr 0.25"), std::string::npos) << text;
  EXPECT_TRUE(mon.stalled());
}

TEST(Health, PerParameterStallAndNoGradient) {
  HealthOptions o;
  o.stall_window = 3;
  HealthMonitor mon(o);
  std::vector<std::string> all;
  for (int64_t s = 0; s < 6; ++s) {
    const auto w = mon.record(s, {motion("encoder.conv.weight", 1, 10, 1e-2), motion("decoder.unused", 0, 1, 0),
                                  motion("decoder.frozen", 1e-3, 1, 1e-9)});
    all.insert(all.end(), w.begin(), w.end());
  }
  ASSERT_EQ(all.size(), 2u);
  EXPECT_NE(all[0].find("decoder.frozen"), std::string::npos) << all[0];
  EXPECT_EQ(all[0].find("decoder.unused"), std::string::npos) << all[0];
  EXPECT_NE(all[1].find("no gradient"), std::string::npos) << all[1];
  EXPECT_NE(all[1].find("decoder.unused"), std::string::npos) << all[1];
  EXPECT_FALSE(mon.stalled());  // the total moves
}

TEST(Health, IntervalReportAggregatesAndResets) {
  HealthMonitor mon;
  mon.record(10, {motion("a", 1, 2, 2e-3), motion("b", 3, 1, 1e-3)});
  mon.record(11, {motion("a", 3, 2, 6e-3), motion("b", 1, 1, 3e-3)});
  HealthReport r = mon.take_report();
  EXPECT_EQ(r.first_step, 10);
  EXPECT_EQ(r.last_step, 11);
  EXPECT_EQ(r.steps, 2);
  ASSERT_EQ(r.params.size(), 2u);
  EXPECT_DOUBLE_EQ(r.params[0].grad_norm_mean, 2.0);
  EXPECT_DOUBLE_EQ(r.params[0].grad_norm_max, 3.0);
  EXPECT_DOUBLE_EQ(r.params[0].ratio_mean, 2e-3);
  EXPECT_DOUBLE_EQ(r.params[0].ratio_min, 1e-3);
  EXPECT_DOUBLE_EQ(r.params[0].ratio_max, 3e-3);
  EXPECT_DOUBLE_EQ(r.params[1].grad_norm_last, 1.0);
  EXPECT_DOUBLE_EQ(r.total.grad_norm_mean, (std::sqrt(10.0) + std::sqrt(10.0)) / 2);
  EXPECT_EQ(r.to_json()["params"][1]["name"], "b");
  EXPECT_NE(r.format().find("total"), std::string::npos);
  const auto sc = r.scalars(true);
  ASSERT_EQ(sc.size(), 6u);
  EXPECT_EQ(sc[2].first, "health/grad_norm/a");
  const HealthReport r2 = mon.take_report();
  EXPECT_EQ(r2.steps, 0);
  EXPECT_EQ(r2.params[0].steps, 0);
  EXPECT_THROW(mon.record(12, {motion("a", 1, 1, 1)}), Error);  // a parameter disappeared
}

TEST(Health, WithRealWhatMoved) {
  Tensor a = filled(4, 1.0f).set_requires_grad(true);
  Tensor b = filled(3, 2.0f).set_requires_grad(true);
  optim::Adadelta opt({{{a, b}, {"a", "b"}, std::nullopt, std::nullopt}}, optim::AdadeltaOptions().lr(1e-9));
  HealthOptions o;
  o.stall_window = 4;
  HealthMonitor mon(o);
  int warnings = 0;
  for (int64_t s = 0; s < 4; ++s) {
    a.set_grad(filled(4, 0.5f));
    b.set_grad(filled(3, -0.5f));
    warnings += static_cast<int>(mon.record(s, optim::step_and_measure(opt), 1e-9).size());
  }
  EXPECT_EQ(warnings, 1);  // lr 1e-9 on Adadelta's ~sqrt(eps) first steps: ratio ~1e-12
  const HealthReport r = mon.take_report();
  EXPECT_NEAR(r.params[0].grad_norm_mean, 1.0, 1e-7);
  EXPECT_LT(r.total.ratio_max, 1e-6);
}

TEST(Health, NonFiniteNamesTheFirstParameter) {
  Tensor p0 = filled(5, 1.0f), p1 = filled(5, 1.0f), p2 = filled(5, 1.0f);
  const NamedTensors params = {{"encoder.weight", p0}, {"decoder.embedding.weight", p1}, {"decoder.out.bias", p2}};
  EXPECT_FALSE(first_nonfinite_grad(params).has_value());
  EXPECT_TRUE(check_finite(1, 0.5, params).ok);

  p0.set_grad(filled(5, 0.1f));
  Tensor g1 = filled(5, 0.1f);
  g1.data_ptr<float>()[2] = std::nanf("");
  g1.data_ptr<float>()[4] = std::nanf("");
  p1.set_grad(g1);
  Tensor g2 = filled(5, 0.1f);
  g2.data_ptr<float>()[0] = INFINITY;
  p2.set_grad(g2);
  const auto bad = first_nonfinite_grad(params);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->name, "decoder.embedding.weight");
  EXPECT_EQ(bad->index, 1u);
  EXPECT_EQ(bad->nan_count, 2);
  EXPECT_EQ(bad->inf_count, 0);
  EXPECT_EQ(bad->first_flat_index, 2);
  const FiniteCheck c = check_finite(42, 0.5, params);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.message.find("step 42"), std::string::npos) << c.message;
  EXPECT_NE(c.message.find("'decoder.embedding.weight' (2 NaN, 0 inf of 5 elements; first at flat index 2)"),
            std::string::npos)
      << c.message;

  // A NaN loss with a weight that already went bad names that weight.
  p2.data_ptr<float>()[3] = -INFINITY;
  const FiniteCheck c2 = check_finite(43, std::nan(""), params);
  EXPECT_FALSE(c2.ok);
  EXPECT_NE(c2.message.find("loss is nan"), std::string::npos) << c2.message;
  EXPECT_NE(c2.message.find("'decoder.out.bias' (0 NaN, 1 inf"), std::string::npos) << c2.message;
  // A NaN loss with finite weights names the first bad gradient; with none, the forward pass.
  p2.data_ptr<float>()[3] = 1.0f;
  EXPECT_NE(check_finite(44, INFINITY, params).message.find("decoder.embedding.weight"), std::string::npos);
  for (Tensor* p : {&p0, &p1, &p2}) p->zero_grad();
  EXPECT_NE(check_finite(45, std::nan(""), params).message.find("forward pass"), std::string::npos);
}

// =================================================================================================
// Logging
// =================================================================================================

TEST(Logging, CsvAppendHeaderQuotingRewind) {
  TempDir tmp;
  const std::string path = tmp.path + "/metrics.csv";
  {
    CsvLogger csv(path, {"step", "loss", "lr", "note"});
    csv.write({{"step", 1}, {"loss", 0.1}, {"lr", 1.0}, {"note", "a,b \"q\""}});
    csv.write({{"step", 2}, {"loss", 2.5e-7}});
    EXPECT_THROW(csv.write({{"step", 3}, {"oops", 1}}), Error);
  }
  EXPECT_EQ(read_text(path), "step,loss,lr,note\n1,0.1,1,\"a,b \"\"q\"\"\"\n2,2.5e-07,,\n");
  {
    CsvLogger again(path);  // header taken from the file, no second header
    EXPECT_EQ(again.columns(), (std::vector<std::string>{"step", "loss", "lr", "note"}));
    again.write({{"step", 3}, {"loss", std::nan("")}});
  }
  EXPECT_THROW(CsvLogger(path, {"step", "loss"}), Error);
  // A partial last line (a writer killed mid-line) is dropped on reopening.
  {
    std::ofstream f(path, std::ios::app);
    f << "4,0.5,1";
  }
  {
    CsvLogger c(path);
    c.write({{"step", 5}});
  }
  EXPECT_EQ(read_text(path), "step,loss,lr,note\n1,0.1,1,\"a,b \"\"q\"\"\"\n2,2.5e-07,,\n3,nan,,\n5,,,\n");
  {
    CsvLogger c(path);
    c.rewind("step", 2);
    c.write({{"step", 3}, {"loss", 1}});
  }
  EXPECT_EQ(read_text(path), "step,loss,lr,note\n1,0.1,1,\"a,b \"\"q\"\"\"\n2,2.5e-07,,\n3,1,,\n");
  // Columns from the first row when none are given.
  CsvLogger d(tmp.path + "/d.csv");
  d.write({{"epoch", 0}, {"exprate", 12.5}});
  EXPECT_EQ(read_text(tmp.path + "/d.csv"), "epoch,exprate\n0,12.5\n");
}

TEST(Logging, JsonlLinesAndRewind) {
  TempDir tmp;
  const std::string path = tmp.path + "/m.jsonl";
  {
    JsonlLogger j(path);
    for (int s = 1; s <= 4; ++s) j.write({{"step", s}, {"loss", 1.0 / s}, {"tag", "train"}});
  }
  {
    std::ofstream f(path, std::ios::app);
    f << "{\"step\": 5, \"lo";  // torn line
  }
  JsonlLogger j(path);
  j.rewind("step", 2);
  j.write({{"step", 3}, {"loss", INFINITY}});
  const std::string text = read_text(path);
  std::istringstream in(text);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1]["step"], 2);
  EXPECT_DOUBLE_EQ(rows[1]["loss"].get<double>(), 0.5);
  EXPECT_TRUE(rows[2]["loss"].is_null());
  EXPECT_EQ(text.substr(0, 38), "{\"step\":1,\"loss\":1.0,\"tag\":\"train\"}\n{\"");
}

TEST(Logging, ProgressBarPlainLines) {
  std::FILE* f = std::tmpfile();
  double t = 100.0;
  ProgressOptions o;
  o.label = "epoch 1/2";
  o.total = 10;
  o.out = f;
  o.tty = 0;
  o.plain_secs = 3;
  o.clock = [&] { return t; };
  ProgressBar bar(o);
  for (int i = 0; i < 10; ++i) {
    t += 1.0;
    bar.step(8, "loss 1.5");
  }
  EXPECT_DOUBLE_EQ(bar.items_per_sec(), 8.0);
  EXPECT_DOUBLE_EQ(bar.eta_secs(), 0.0);
  bar.finish("loss 1.25");
  bar.finish();  // idempotent
  std::rewind(f);
  std::string out;
  char buf[1024];
  while (std::fgets(buf, sizeof(buf), f)) out += buf;
  std::fclose(f);
  // Lines at the first step, then every >= 3 s (steps 4, 7, 10), then finish().
  EXPECT_EQ(out,
            "epoch 1/2 1/10 (10%) 8.0 img/s elapsed 00:01 eta 00:09 loss 1.5\n"
            "epoch 1/2 4/10 (40%) 8.0 img/s elapsed 00:04 eta 00:06 loss 1.5\n"
            "epoch 1/2 7/10 (70%) 8.0 img/s elapsed 00:07 eta 00:03 loss 1.5\n"
            "epoch 1/2 10/10 (100%) 8.0 img/s elapsed 00:10 eta 00:00 loss 1.5\n"
            "epoch 1/2 10/10 (100%) 8.0 img/s elapsed 00:10 eta 00:00 loss 1.25\n");
}

TEST(Logging, ProgressBarTerminal) {
  std::FILE* f = std::tmpfile();
  double t = 0.0;
  ProgressOptions o;
  o.label = "epoch 3/240";
  o.total = 4;
  o.initial = 1;  // a resumed epoch
  o.out = f;
  o.tty = 1;
  o.bar_width = 8;
  o.clock = [&] { return t; };
  ProgressBar bar(o);
  t = 2.0;
  bar.step(16, "loss 0.5");
  EXPECT_EQ(bar.render(), "epoch 3/240 |####----| 2/4  50% | 8.0 img/s | 00:02<00:04 | loss 0.5");
  bar.message("evaluating");
  bar.finish();
  std::rewind(f);
  std::string out;
  char buf[1024];
  while (std::fgets(buf, sizeof(buf), f)) out += buf;
  std::fclose(f);
  EXPECT_EQ(out.substr(0, 1), "\r");
  EXPECT_NE(out.find("\r\033[Kevaluating\n"), std::string::npos);
  EXPECT_EQ(out.back(), '\n');
}

TEST(Logging, DurationsConfigAndTextLog) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(61.4), "01:01");
  EXPECT_EQ(format_duration(3600 * 26 + 62), "26:01:02");
  EXPECT_EQ(format_duration(-1), "--:--");
  EXPECT_EQ(format_duration(INFINITY), "--:--");

  const YAML::Node cfg = YAML::Load(
      "seed: 7\noptim:\n  optimizer: adadelta\n  lr: 1.0\n  betas: [0.9, 0.999]\n"
      "data:\n  sets:\n    - {path: a, weight: 1}\n  empty: {}\n");
  const auto flat = flatten_config(cfg);
  ASSERT_EQ(flat.size(), 7u);
  EXPECT_EQ(flat[0], (std::pair<std::string, std::string>{"seed", "7"}));
  EXPECT_EQ(flat[3], (std::pair<std::string, std::string>{"optim.betas", "[0.9, 0.999]"}));
  EXPECT_EQ(flat[4], (std::pair<std::string, std::string>{"data.sets.0.path", "a"}));
  EXPECT_EQ(flat[6], (std::pair<std::string, std::string>{"data.empty", "{}"}));
  const std::string text = format_config(cfg);
  EXPECT_EQ(text.substr(0, 17), "resolved config:\n");
  EXPECT_NE(text.find("  optim.optimizer     adadelta\n"), std::string::npos) << text;
  EXPECT_EQ(YAML::Load(config_to_yaml(cfg))["optim"]["lr"].as<double>(), 1.0);

  TempDir tmp;
  {
    TextLog log(tmp.path + "/train.log", false);
    log.info("hello");
    log.warn("updates stalled");
  }
  const std::string lines = read_text(tmp.path + "/train.log");
  EXPECT_NE(lines.find(" hello\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find(" warning: updates stalled\n"), std::string::npos) << lines;
  EXPECT_EQ(lines[4], '-');  // "YYYY-MM-DD HH:MM:SS ..."
}

}  // namespace
}  // namespace hmer::train
