#pragma once
#include <string>

#include "core/error.h"
#include "models/model_config.h"
#include <vector>

namespace hmer::app {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

// The value after option args[i] (advancing i), or an error naming the option and showing the usage.
inline const std::string& option_value(const std::vector<std::string>& args, size_t& i, const std::string& usage) {
  HMER_CHECK(i + 1 < args.size(), args[i], " needs a value\n\n", usage);
  return args[++i];
}

// The model part of a config file: a training config's data:, train: and divergence: sections
// (read by hmer train / hmer divergence) are set aside; every other key is validated.
models::Config load_model_config(const std::string& path);

// The subcommand table (apps/commands.cpp). Later issues add train, eval, predict, ...
const std::vector<Command>& commands();

}  // namespace hmer::app
