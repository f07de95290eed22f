// `hmer predict`: LaTeX for images, one line each with its confidence.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/autograd.h"
#include "core/error.h"
#include "data/dataset.h"
#include "models/can.h"
#include "models/decoding.h"
#include "train/evaluator.h"

namespace hmer::app {

namespace {

const char* kUsage =
    "usage: hmer predict --weights W.safetensors [--config FILE] [--beam K] IMAGE...\n"
    "\n"
    "Prints one line per image: the image path, a tab, the confidence (the product of the\n"
    "probabilities of the emitted tokens and of eos), a tab, and the LaTeX tokens.\n"
    "Without --config the run folder's config (the directory of W, config.yaml) is used.\n"
    "Images are read as the training data (8-bit gray, white ink on black as in CROHME/`hmer synth`).\n";

}  // namespace

int cmd_predict(const std::vector<std::string>& args) {
  std::string config, weights;
  int64_t beam = 1;
  std::vector<std::string> images;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--config" || a == "--weights" || a == "--beam") {
      const std::string& v = option_value(args, i, kUsage);
      if (a == "--config") config = v;
      else if (a == "--weights") weights = v;
      else beam = std::stoll(v);
      continue;
    }
    HMER_CHECK(a.rfind("--", 0) != 0, "unknown option '", a, "'\n\n", kUsage);
    images.push_back(a);
  }
  HMER_CHECK(!weights.empty(), "--weights is required\n\n", kUsage);
  HMER_CHECK(!images.empty(), "no image given\n\n", kUsage);
  HMER_CHECK(beam >= 1, "--beam ", beam, ": must be >= 1");
  if (config.empty()) {
    const std::filesystem::path guess = std::filesystem::path(weights).parent_path() / "config.yaml";
    HMER_CHECK(std::filesystem::exists(guess), "no --config given and ", guess.string(),
               " does not exist\n\n", kUsage);
    config = guess.string();
  }
  const models::Config cfg = load_model_config(config);
  const data::Vocabulary vocab = cfg.vocabulary();
  models::CanModel model(cfg.model);
  models::load_weights(model, weights);
  model.eval();
  NoGradGuard no_grad;
  models::BeamOptions bo = models::BeamOptions::from(cfg.model.decoding);
  bo.beam_width = beam;
  for (const auto& path : images) {
    const Tensor image = train::prepare_image(data::read_gray_image(path), cfg.preprocess);
    models::Hypothesis h;
    if (beam == 1) {
      h = models::greedy_decode(model, image, cfg.model.decoding.max_steps);
    } else {
      auto hyps = models::beam_search(model, image, bo);
      HMER_CHECK(!hyps.empty(), "beam search returned nothing for ", path);
      h = std::move(hyps.front());
    }
    double conf = 1.0;
    for (float c : h.confidences) conf *= c;
    if (h.finished) conf *= h.eos_confidence;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", conf);
    std::cout << path << "\t" << buf << "\t" << vocab.decode_string(h.tokens, false) << "\n";
  }
  return 0;
}

}  // namespace hmer::app
