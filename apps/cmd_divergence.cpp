// `hmer divergence`: the Adadelta torch-vs-Paddle experiment (train/divergence.h).
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/error.h"
#include "train/divergence.h"

namespace hmer::app {

namespace {

const char* kUsage =
    "usage: hmer divergence --config FILE --out DIR [--set key=value ...] [--quiet]\n"
    "       hmer divergence --replot DIR\n"
    "\n"
    "Trains one model from one initial state on one data order eight times, changing only the optimizer:\n"
    "Adadelta torch and Paddle<=2.4 under CAN's warm-up + cosine schedule (Paddle ignores the lr), both at\n"
    "a constant lr 1 (controls: the same update, they must coincide up to rounding), Momentum SGD in\n"
    "the torch and Paddle forms (they must nearly coincide), and the rounding baselines torch_const_ulp and\n"
    "sgd_torch_ulp (a control's first run with eps / momentum one float32 ulp higher: how far one rounding\n"
    "difference carries). Writes DIR/summary.json, DIR/report.md,\n"
    "DIR/per_step.csv, DIR/curves.png and each run's folder DIR/runs/<name>. The config is a training\n"
    "config with a divergence: section (see docs/divergence.md and configs/divergence_quick.yaml).\n"
    "\n"
    "options:\n"
    "  --config FILE      the config\n"
    "  --out DIR          output folder (its runs/<name> folders are replaced)\n"
    "  --set key=value    override a config value by its dotted key (repeatable), e.g.\n"
    "                     --set epochs=6 --set divergence.runs=[torch,paddle]\n"
    "  --quiet            no progress lines\n"
    "  --replot DIR       only re-draw DIR/curves.png from the CSV files of an earlier run\n";

}  // namespace

int cmd_divergence(const std::vector<std::string>& args) {
  train::DivergenceOptions o;
  std::string replot;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--quiet") {
      o.verbose = false;
      continue;
    }
    const bool known = a == "--config" || a == "--out" || a == "--set" || a == "--replot";
    HMER_CHECK(known, "unknown argument '", a, "'\n\n", kUsage);
    const std::string& v = option_value(args, i, kUsage);
    if (a == "--config") o.config_path = v;
    else if (a == "--out") o.out_dir = v;
    else if (a == "--replot") replot = v;
    else o.overrides.push_back(v);
  }
  if (!replot.empty()) {
    const auto runs = train::replot_divergence(replot);
    std::cout << "wrote " << replot << "/curves.png (" << runs.size() << " runs)\n";
    return 0;
  }
  HMER_CHECK(!o.config_path.empty(), "--config is required\n\n", kUsage);
  HMER_CHECK(!o.out_dir.empty(), "--out is required\n\n", kUsage);
  const train::DivergenceResult r = train::run_divergence(o);
  std::cout << r.summary.dump(2) << "\n";
  std::cout << "wrote " << o.out_dir << "/summary.json, report.md, per_step.csv, curves.png (" << static_cast<int>(r.seconds)
            << " s)\n";
  return 0;
}

}  // namespace hmer::app
