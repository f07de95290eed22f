// The hmer command-line tool: one binary, subcommands dispatched from a table.
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/device.h"
#include "core/error.h"
#include "core/version.h"

namespace {

void print_help(std::ostream& os) {
  os << "hmer " << HMER_VERSION
     << " - a C++ training engine for handwritten mathematical expression recognition (CAN / DWAP)\n\n"
        "usage: hmer <command> [options]\n"
        "       hmer --help | --version\n\n"
        "commands:\n";
  for (const auto& c : hmer::app::commands()) os << "  " << c.name << std::string(12 - std::min<size_t>(11, std::strlen(c.name)), ' ') << c.summary << "\n";
  os << "\nRun 'hmer <command> --help' for the options of one command.\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help(std::cout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::cout << "hmer " << HMER_VERSION << " (CUDA backend: " << (hmer::cuda_is_compiled() ? "built" : "not built")
              << ")\n";
    return 0;
  }
  for (const auto& c : hmer::app::commands()) {
    if (args[0] == c.name) {
      try {
        return c.run(std::vector<std::string>(args.begin() + 1, args.end()));
      } catch (const hmer::Error& e) {
        std::cerr << "hmer " << c.name << ": error: " << e.what() << "\n";
        return 1;
      } catch (const std::exception& e) {
        std::cerr << "hmer " << c.name << ": error: " << e.what() << "\n";
        return 1;
      }
    }
  }
  std::cerr << "hmer: unknown command '" << args[0] << "'\n\n";
  print_help(std::cerr);
  return 2;
}
