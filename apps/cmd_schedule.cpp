// `hmer schedule`: the learning rate of every optimizer step of a config's schedule, as CSV, so a
// user can plot it and check it against the paper or a reproducer's log before training.
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "models/model_config.h"
#include "core/error.h"
#include "optim/factory.h"
#include "optim/lr_schedule.h"

namespace hmer::app {

namespace {

const char* kUsage =
    "usage: hmer schedule --config FILE --steps-per-epoch N [--epochs E] --out lr.csv\n"
    "\n"
    "Writes the learning rate of every optimizer step of the schedule in the config's optim section\n"
    "(optim.lr_schedule, base lr optim.lr) as CSV with the header epoch,step,lr; epoch and step are\n"
    "0-based and there is one row per step.\n"
    "\n"
    "options:\n"
    "  --config FILE          YAML config with an optim: section (e.g. configs/can.yaml)\n"
    "  --steps-per-epoch N    optimizer steps per epoch (CAN on CROHME with batch 8: 1105)\n"
    "  --epochs E             number of epochs (default: the config's top-level epochs)\n"
    "  --out FILE             output CSV ('-' for standard output)\n";

int64_t parse_count(const std::string& flag, const std::string& v) {
  size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  HMER_CHECK(used == v.size() && n > 0, flag, ": expected a positive integer, got '", v, "'");
  return n;
}

}  // namespace

int cmd_schedule(const std::vector<std::string>& args) {
  std::string config, out;
  int64_t steps = -1, epochs = -1;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    const auto value = [&]() -> const std::string& {
      return option_value(args, i, kUsage);
    };
    if (a == "--config") config = value();
    else if (a == "--steps-per-epoch") steps = parse_count(a, value());
    else if (a == "--epochs") epochs = parse_count(a, value());
    else if (a == "--out") out = value();
    else fail("unknown option '", a, "'\n\n", kUsage);
  }
  HMER_CHECK(!config.empty(), "--config is required\n\n", kUsage);
  HMER_CHECK(steps > 0, "--steps-per-epoch is required\n\n", kUsage);
  HMER_CHECK(!out.empty(), "--out is required\n\n", kUsage);

  const YAML::Node root = models::read_config_file(config);
  if (epochs < 0) epochs = optim::config_epochs(root, config);
  HMER_CHECK(epochs > 0, config, " has no top-level 'epochs'; pass --epochs");
  const optim::ScheduleSpec spec = optim::build_schedule_spec(optim::optim_section(root, config), epochs);
  if (spec.lr_ignored)
    std::cerr << "note: " << spec.optimizer << " applies no learning rate (Paddle <= 2.4): the schedule below is "
              << "what the config asks for, the effective lr is 1 at every step\n";

  if (out == "-") {
    optim::write_schedule_csv(std::cout, *spec.schedule, spec.base_lr, epochs, steps);
  } else {
    std::ofstream f(out);
    HMER_CHECK(f.good(), "cannot open ", out, " for writing");
    optim::write_schedule_csv(f, *spec.schedule, spec.base_lr, epochs, steps);
    f.close();
    HMER_CHECK(f.good(), "writing ", out, " failed");
    std::cerr << "wrote " << epochs * steps << " rows (" << epochs << " epochs x " << steps << " steps, "
              << spec.schedule->describe() << ", base lr " << spec.base_lr << ") to " << out << "\n";
  }
  return 0;
}

}  // namespace hmer::app
