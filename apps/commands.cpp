#include "apps/commands.h"

#include <iostream>

#include "core/allocator.h"
#include "core/device.h"
#include "core/version.h"
#include "kernels/cpu/parallel.h"

namespace hmer::app {

int cmd_schedule(const std::vector<std::string>& args);  // apps/cmd_schedule.cpp
int cmd_synth(const std::vector<std::string>& args);     // apps/cmd_synth.cpp

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
  };
  return table;
}

}  // namespace hmer::app
