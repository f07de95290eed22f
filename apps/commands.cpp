#include "apps/commands.h"

#include <filesystem>
#include <iostream>

#include <yaml-cpp/yaml.h>

#include "core/allocator.h"
#include "core/device.h"
#include "core/version.h"
#include "kernels/cpu/parallel.h"

namespace hmer::app {

int cmd_schedule(const std::vector<std::string>& args);  // apps/cmd_schedule.cpp
int cmd_synth(const std::vector<std::string>& args);     // apps/cmd_synth.cpp
int cmd_init(const std::vector<std::string>& args);      // apps/cmd_model.cpp
int cmd_forward(const std::vector<std::string>& args);   // apps/cmd_model.cpp
int cmd_align(const std::vector<std::string>& args);     // apps/cmd_model.cpp
int cmd_train(const std::vector<std::string>& args);     // apps/cmd_train.cpp
int cmd_eval(const std::vector<std::string>& args);      // apps/cmd_eval.cpp
int cmd_predict(const std::vector<std::string>& args);   // apps/cmd_predict.cpp
int cmd_divergence(const std::vector<std::string>& args);  // apps/cmd_divergence.cpp
int cmd_bench(const std::vector<std::string>& args);       // apps/cmd_bench.cpp

models::Config load_model_config(const std::string& path) {
  YAML::Node root = models::read_config_file(path);
  if (root.IsMap()) {
    root.remove("data");
    root.remove("train");
    root.remove("divergence");
  }
  return models::parse_config(root, path, std::filesystem::path(path).parent_path().string());
}

namespace {

int cmd_info(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "usage: hmer info\n\nPrints the build configuration: version, CUDA backend, CPU threads.\n";
    return 0;
  }
  std::cout << "hmer " << HMER_VERSION << "\n"
            << "cuda backend compiled: " << (cuda_is_compiled() ? "yes" : "no") << "\n"
            << "cuda device available: " << (cuda_is_available() ? "yes" : "no") << "\n"
            << "cpu threads: " << cpu::num_threads() << "\n";
  return 0;
}

}  // namespace

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"info", "print the build configuration (version, CUDA, threads)", cmd_info},
      {"schedule", "write the learning rate of every step of a config's schedule as CSV", cmd_schedule},
      {"synth", "generate synthetic handwritten expressions (CoMER layout + InkML)", cmd_synth},
      {"init", "write a freshly initialised CAN / DWAP as safetensors (official names)", cmd_init},
      {"forward", "run a model on one image and dump its tensors as .npy (reprod_log style)", cmd_forward},
      {"align", "compare two dump folders and name the first differing tensor", cmd_align},
      {"train", "train a model from a YAML config (checkpoints, metrics, exact resume)", cmd_train},
      {"eval", "ExpRate, <=1/2/3, WER, counting MAE of weights on a dataset, as JSON", cmd_eval},
      {"predict", "LaTeX and confidence for images, one line each", cmd_predict},
      {"divergence", "Adadelta torch vs Paddle<=2.4 under one schedule, with controls (report + plot)", cmd_divergence},
      {"bench", "time a training step and a greedy decode (GFLOP/s, peak RSS, per-op profile)", cmd_bench},
  };
  return table;
}

}  // namespace hmer::app
