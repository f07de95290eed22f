#pragma once
#include <string>
#include <vector>

namespace hmer::app {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

// The subcommand table (apps/commands.cpp). Later issues add train, eval, predict, ...
const std::vector<Command>& commands();

}  // namespace hmer::app
