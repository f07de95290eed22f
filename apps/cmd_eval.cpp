// `hmer eval`: recognition metrics of trained weights on a dataset (train/evaluator.h).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/error.h"
#include "models/can.h"
#include "train/checkpoint.h"
#include "train/evaluator.h"
#include "train/logging.h"
#include "train/trainer.h"

namespace hmer::app {

namespace {

const char* kUsage =
    "usage: hmer eval --config FILE --weights W.safetensors --data DIR --out FILE.json [options]\n"
    "\n"
    "Decodes every image of DIR alone at its own size (as the official inference.py) and writes the\n"
    "metrics as JSON: exprate, le1, le2, le3 (token-level Levenshtein <= 1/2/3), wer, n (rates in\n"
    "percent), per-length buckets, counting MAE (CAN) and the worst predictions. Prints the ExpRate line.\n"
    "\n"
    "options:\n"
    "  --config FILE    the model config (a training config or a model-only one)\n"
    "  --weights W      safetensors with the official names (e.g. RUN/weights_best.safetensors)\n"
    "  --data DIR       a CoMER-layout split (DIR/caption.txt + DIR/img), or a training config's\n"
    "                   dataset given as layout:path (comer:DIR, inkml:DIR)\n"
    "  --beam K         beam width (default 1: greedy, the official metric)\n"
    "  --limit N        first N samples only\n"
    "  --out FILE       the JSON report\n"
    "  --no-counting    skip the counting MAE (saves one encoder pass per image)\n";

}  // namespace

int cmd_eval(const std::vector<std::string>& args) {
  std::string config, weights, data_dir, out;
  int64_t beam = 1, limit = 0;
  bool counting = true;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--no-counting") {
      counting = false;
      continue;
    }
    const bool known = a == "--config" || a == "--weights" || a == "--data" || a == "--out" || a == "--beam" ||
                       a == "--limit";
    HMER_CHECK(known, "unknown argument '", a, "'\n\n", kUsage);
    const std::string& v = option_value(args, i, kUsage);
    if (a == "--config") config = v;
    else if (a == "--weights") weights = v;
    else if (a == "--data") data_dir = v;
    else if (a == "--out") out = v;
    else if (a == "--beam") beam = std::stoll(v);
    else limit = std::stoll(v);
  }
  HMER_CHECK(!config.empty() && !weights.empty() && !data_dir.empty() && !out.empty(),
             "--config, --weights, --data and --out are required\n\n", kUsage);
  HMER_CHECK(beam >= 1, "--beam ", beam, ": must be >= 1");

  const models::Config cfg = load_model_config(config);
  const data::Vocabulary vocab = cfg.vocabulary();
  data::DatasetConfig dcfg;
  std::string root = data_dir;
  if (root.rfind("inkml:", 0) == 0) {
    dcfg.layout = data::DatasetLayout::Inkml;
    root = root.substr(6);
  } else if (root.rfind("comer:", 0) == 0) {
    root = root.substr(6);
  }
  dcfg.root = root;
  dcfg.allow_extra_images = true;
  const auto ds = train::load_encoded_dataset(dcfg, vocab, cfg.vocab);

  models::CanModel model(cfg.model);
  models::load_weights(model, weights);

  train::EvalOptions eo;
  eo.beam_width = beam;
  eo.max_steps = cfg.model.decoding.max_steps;
  eo.length_normalization = cfg.model.decoding.length_normalization;
  eo.length_alpha = cfg.model.decoding.length_alpha;
  eo.limit = limit;
  eo.counting = counting;
  train::ProgressOptions po;
  po.label = "eval";
  po.total = limit > 0 ? std::min<int64_t>(limit, static_cast<int64_t>(ds->size())) : static_cast<int64_t>(ds->size());
  train::ProgressBar bar(po);
  eo.on_progress = [&](int64_t, int64_t) { bar.step(1); };
  const train::EvalOutput r = train::evaluate(model, *ds, vocab, cfg.preprocess, eo);
  bar.finish();

  nlohmann::ordered_json j;
  j["exprate"] = nullptr;  // keeps the headline keys first
  const nlohmann::ordered_json report = r.to_json();
  for (const auto& [k, v] : report.items()) j[k] = v;
  j["beam_width"] = beam;
  j["weights"] = weights;
  j["data"] = data_dir;
  j["config"] = config;
  const std::filesystem::path op(out);
  if (op.has_parent_path()) std::filesystem::create_directories(op.parent_path());
  train::write_file_atomic(out, j.dump(2) + "\n");
  std::cout << r.metrics.summary_line() << "\n";
  if (r.metrics.counting_n() > 0) std::cout << "counting MAE " << r.metrics.counting_mae() << "\n";
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace hmer::app
