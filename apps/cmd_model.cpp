// `hmer init`, `hmer forward`, `hmer align`: a freshly initialised CAN / DWAP as safetensors with
// the official names, the network's tensors on one image as .npy dumps (reprod_log practice: anyone
// can hold them against their own PyTorch model, e.g. tools/can_twin.py forward), and a comparison
// of two dump folders that names the first tensor, in computation order, that differs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/serialization.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "models/can.h"
#include "models/decoding.h"

namespace hmer::app {

namespace {

namespace fs = std::filesystem;

const char* kInitUsage =
    "usage: hmer init --config FILE --seed S --out W.safetensors\n"
    "\n"
    "Builds the model of the config (CAN, or DWAP with model.name: dwap) and initialises every\n"
    "parameter with the config's init preset (model.init, default torch) from seed S, then writes\n"
    "every parameter and buffer (BatchNorm running statistics and counters included) as safetensors\n"
    "with the official PyTorch state_dict names.\n";

const char* kForwardUsage =
    "usage: hmer forward --config FILE --weights W.safetensors --image IMG --tokens \"t1 t2 ...\" --out DIR\n"
    "\n"
    "Runs the model in eval mode (dropout off, BatchNorm running statistics) on one image with the\n"
    "config's preprocessing and writes .npy files to DIR:\n"
    "  image, image_mask  (1, 1, H, W) the network input after preprocessing\n"
    "  encoder_out        (1, C, h, w)\n"
    "  counting_vector    (1, V) (CAN only)\n"
    "  logits             (T, V) teacher-forced on the tokens with eos appended\n"
    "  loss               () the training loss on that input (cross entropy + counting terms)\n"
    "  pred_tokens        int64 greedy ids up to, not including, eos\n";

const char* kAlignUsage =
    "usage: hmer align DIR_A DIR_B [--threshold T] [--method mean|max]\n"
    "\n"
    "Compares two dump folders (hmer forward, can_twin.py forward) name by name: shapes, mean and max\n"
    "absolute difference, pass when the chosen statistic (default mean) is <= T (default 1e-5).\n"
    "Prints a report and names the first failing tensor in computation order (image, image_mask,\n"
    "encoder_out, counting_vector, logits, loss, pred_tokens, then the rest by name).\n"
    "Exit status 0 when every tensor passes, 1 otherwise.\n";

struct Args {
  std::map<std::string, std::string> opts;
  std::vector<std::string> positional;
};

Args parse_args(const std::vector<std::string>& args, const std::vector<std::string>& flags, const char* usage) {
  Args r;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) == 0) {
      HMER_CHECK(std::find(flags.begin(), flags.end(), a) != flags.end(), "unknown option '", a, "'\n\n", usage);
      r.opts[a] = option_value(args, i, usage);
    } else {
      r.positional.push_back(a);
    }
  }
  return r;
}

bool wants_help(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; });
}

const std::string& required(const Args& a, const std::string& flag, const char* usage) {
  auto it = a.opts.find(flag);
  HMER_CHECK(it != a.opts.end(), flag, " is required\n\n", usage);
  return it->second;
}

std::vector<std::string> split_ws(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> out;
  for (std::string t; is >> t;) out.push_back(t);
  return out;
}

}  // namespace

int cmd_init(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::cout << kInitUsage;
    return 0;
  }
  const Args a = parse_args(args, {"--config", "--seed", "--out"}, kInitUsage);
  HMER_CHECK(a.positional.empty(), "unexpected argument '", a.positional.empty() ? "" : a.positional[0], "'\n\n",
             kInitUsage);
  const std::string config = required(a, "--config", kInitUsage);
  const std::string out = required(a, "--out", kInitUsage);
  const std::string seed_s = required(a, "--seed", kInitUsage);
  uint64_t seed = 0;
  try {
    size_t used = 0;
    seed = std::stoull(seed_s, &used);
    HMER_CHECK(used == seed_s.size(), "");
  } catch (const std::exception&) {
    fail("--seed: expected a non-negative integer, got '", seed_s, "'");
  }
  const models::Config cfg = models::load_config(config);
  const auto model = models::make_model(cfg.model, seed);
  models::save_weights(*model, out,
                       {{"format", "pt"},
                        {"model", models::model_kind_name(cfg.model.kind)},
                        {"init", init_preset_name(cfg.model.init)},
                        {"seed", std::to_string(seed)},
                        {"config", config}});
  std::cout << "wrote " << out << ": " << models::model_kind_name(cfg.model.kind) << ", "
            << model->state_dict().size() << " tensors, " << model->num_parameters() << " parameters, init "
            << init_preset_name(cfg.model.init) << ", seed " << seed << "\n";
  return 0;
}

int cmd_forward(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::cout << kForwardUsage;
    return 0;
  }
  const Args a = parse_args(args, {"--config", "--weights", "--image", "--tokens", "--out"}, kForwardUsage);
  HMER_CHECK(a.positional.empty(), "unexpected argument '", a.positional.empty() ? "" : a.positional[0], "'\n\n",
             kForwardUsage);
  const std::string config = required(a, "--config", kForwardUsage);
  const std::string weights = required(a, "--weights", kForwardUsage);
  const std::string image_path = required(a, "--image", kForwardUsage);
  const std::string tokens_s = required(a, "--tokens", kForwardUsage);
  const fs::path out = required(a, "--out", kForwardUsage);

  const models::Config cfg = models::load_config(config);
  const data::Vocabulary vocab = cfg.vocabulary();
  models::CanModel model(cfg.model);
  models::load_weights(model, weights);
  model.eval();

  const auto ids = vocab.encode(split_ws(tokens_s), cfg.vocab.token_map, cfg.vocab.on_unknown, nullptr, "--tokens");
  HMER_CHECK(ids.has_value(), "--tokens: the label holds a token that is not in the dictionary");
  cv::Mat img = data::scale_image(data::read_gray_image(image_path), cfg.preprocess);
  data::CollateItem item{img, &*ids, 0, fs::path(image_path).filename().string()};
  const data::Batch batch = data::collate({item}, cfg.preprocess, vocab.eos_id(), vocab.pad_id());

  NoGradGuard no_grad;
  const models::CanModel::Output o = model.forward(batch.images, batch.image_mask, batch.labels, batch.label_mask);
  const models::Hypothesis h = models::greedy_decode(model, batch.images, cfg.model.decoding.max_steps);

  fs::create_directories(out);
  auto dump = [&](const std::string& name, const Tensor& t) { save_npy((out / (name + ".npy")).string(), t); };
  dump("image", batch.images);
  dump("image_mask", batch.image_mask);
  dump("encoder_out", o.features);
  if (o.counts.defined()) dump("counting_vector", o.counts);
  dump("logits", o.logits.select(0, 0));
  dump("loss", o.loss);
  dump("pred_tokens", Tensor::from_vector<int64_t>(h.tokens, {static_cast<int64_t>(h.tokens.size())}));

  std::cout << "image " << batch.images.size(2) << "x" << batch.images.size(3) << ", features "
            << o.features.size(2) << "x" << o.features.size(3) << ", loss " << o.loss.item_double();
  if (o.counting_loss.defined())
    std::cout << " (cross entropy " << o.word_loss.item_double() << ", counting " << o.counting_loss.item_double()
              << ")";
  std::cout << "\ngreedy (" << h.tokens.size() << " tokens" << (h.finished ? "" : ", no eos") << "):";
  constexpr size_t kShown = 60;  // an untrained model runs to the 200-step cap
  for (size_t i = 0; i < h.tokens.size() && i < kShown; ++i) {
    char conf[32];
    std::snprintf(conf, sizeof conf, "%.3f", h.confidences[i]);
    std::cout << " " << vocab.token(h.tokens[i]) << "[" << conf << "]";
  }
  if (h.tokens.size() > kShown) std::cout << " ... (" << h.tokens.size() - kShown << " more)";
  std::cout << "\nwrote " << out.string() << "\n";
  return 0;
}

int cmd_align(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::cout << kAlignUsage;
    return 0;
  }
  const Args a = parse_args(args, {"--threshold", "--method"}, kAlignUsage);
  HMER_CHECK(a.positional.size() == 2, "expected two dump folders\n\n", kAlignUsage);
  double threshold = 1e-5;
  if (a.opts.count("--threshold")) {
    const std::string& v = a.opts.at("--threshold");
    try {
      size_t used = 0;
      threshold = std::stod(v, &used);
      HMER_CHECK(used == v.size() && threshold >= 0, "");
    } catch (const std::exception&) {
      fail("--threshold: expected a non-negative number, got '", v, "'");
    }
  }
  const std::string method = a.opts.count("--method") ? a.opts.at("--method") : "mean";
  HMER_CHECK(method == "mean" || method == "max", "--method: expected mean or max, got '", method, "'");
  const fs::path A = a.positional[0], B = a.positional[1];
  for (const fs::path& d : {A, B}) HMER_CHECK(fs::is_directory(d), d.string(), ": not a directory");

  auto names_in = [](const fs::path& d) {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(d))
      if (e.is_regular_file() && e.path().extension() == ".npy") v.push_back(e.path().stem().string());
    return v;
  };
  std::vector<std::string> na = names_in(A), nb = names_in(B), all = na;
  all.insert(all.end(), nb.begin(), nb.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  // Computation order first, so the first failure is where a divergence starts.
  static const std::vector<std::string> kOrder = {"image",  "image_mask", "encoder_out", "counting_vector",
                                                  "logits", "loss",       "pred_tokens"};
  auto rank = [&](const std::string& n) {
    auto it = std::find(kOrder.begin(), kOrder.end(), n);
    return it == kOrder.end() ? kOrder.size() : static_cast<size_t>(it - kOrder.begin());
  };
  std::stable_sort(all.begin(), all.end(), [&](const std::string& x, const std::string& y) { return rank(x) < rank(y); });
  HMER_CHECK(!all.empty(), "no .npy files in ", A.string(), " or ", B.string());

  std::printf("%-18s %-16s %-16s %12s %12s %12s  %s\n", "tensor", "shape A", "shape B", "mean |diff|", "max |diff|",
              "max |A|", "result");
  std::string first_fail;
  int failures = 0;
  for (const std::string& n : all) {
    const bool in_a = std::find(na.begin(), na.end(), n) != na.end();
    const bool in_b = std::find(nb.begin(), nb.end(), n) != nb.end();
    std::string result, sa = "-", sb = "-";
    double mean_d = NAN, max_d = NAN, max_a = NAN;
    if (!in_a || !in_b) {
      result = std::string("FAIL (missing in ") + (in_a ? "B" : "A") + ")";
    } else {
      const Tensor ta = load_npy((A / (n + ".npy")).string()), tb = load_npy((B / (n + ".npy")).string());
      sa = shape_str(ta.shape());
      sb = shape_str(tb.shape());
      if (ta.shape() != tb.shape()) {
        result = "FAIL (shape)";
      } else {
        const std::vector<double> va = ta.to_vector<double>(), vb = tb.to_vector<double>();
        double s = 0;
        max_d = 0;
        max_a = 0;
        bool nan = false;
        for (size_t i = 0; i < va.size(); ++i) {
          const double d = std::fabs(va[i] - vb[i]);
          if (std::isnan(d)) nan = nan || std::isnan(va[i]) != std::isnan(vb[i]);
          else {
            s += d;
            max_d = std::max(max_d, d);
          }
          max_a = std::max(max_a, std::fabs(va[i]));
        }
        mean_d = va.empty() ? 0.0 : s / static_cast<double>(va.size());
        const double stat = method == "mean" ? mean_d : max_d;
        result = (!nan && stat <= threshold) ? "pass" : "FAIL";
      }
    }
    if (result != "pass") {
      ++failures;
      if (first_fail.empty()) first_fail = n;
    }
    std::printf("%-18s %-16s %-16s %12.4g %12.4g %12.4g  %s\n", n.c_str(), sa.c_str(), sb.c_str(), mean_d, max_d,
                max_a, result.c_str());
  }
  std::printf("method %s, threshold %g: ", method.c_str(), threshold);
  if (failures == 0) {
    std::printf("all %zu tensors match\n", all.size());
    return 0;
  }
  std::printf("%d of %zu tensors differ; first failing tensor: %s\n", failures, all.size(), first_fail.c_str());
  return 1;
}

}  // namespace hmer::app
