// The hmer command-line tool: one binary, subcommands dispatched from a table.
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/allocator.h"
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
#ifndef HMER_WITH_TCMALLOC
  // Training frees and re-allocates the same large tensors every step: without tcmalloc, keep them
  // in the process (HMER_KEEP_FREED_MEMORY=0 leaves glibc's defaults, for A/B measurements).
  if (const char* keep = std::getenv("HMER_KEEP_FREED_MEMORY"); keep == nullptr || std::strcmp(keep, "0") != 0) {
    hmer::keep_freed_host_memory();
  }
#endif
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
