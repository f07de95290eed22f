#pragma once
#include <string>

#include "core/error.h"
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

// The subcommand table (apps/commands.cpp). Later issues add train, eval, predict, ...
const std::vector<Command>& commands();

}  // namespace hmer::app
