#pragma once
// An opt-in per-op profiler and FLOP counter for `hmer bench --profile`.
//
// Every op passes through HMER_DISPATCH_DEVICE (core/dispatch.h), which opens a Scope named after the
// op; run_backward opens one per autograd node. Scopes nest, and each records *exclusive* time (a
// parent's clock pauses while a child runs), so no time is counted twice; time outside every scope
// (allocation, graph bookkeeping, module glue) is not in the table, and `hmer bench --profile` shows
// it as "(outside ops)". Entries are keyed by (phase, name): "forward" for work outside backward(),
// "backward" inside it. The scope stack and phase are per thread: profile ops issued from one thread
// (OpenMP workers inside a kernel issue none). When disabled (the default) a Scope costs one relaxed
// atomic load.
//
// FLOP counting is separate and also off by default: conv2d, linear and matmul add 2·M·N·K of their
// forward when counting is on (see docs/performance.md for what this count includes).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace hmer::profiler {

struct Entry {
  std::string phase;  // "forward" | "backward" | a caller-chosen phase (e.g. "optimizer")
  std::string name;
  double seconds = 0;  // exclusive
  int64_t calls = 0;
};

namespace detail {
extern std::atomic<bool> g_enabled;
extern std::atomic<bool> g_count_flops;
void enter(const char* name);
void leave();
void add_flops(double flops);
}  // namespace detail

inline bool enabled() { return detail::g_enabled.load(std::memory_order_relaxed); }
void set_enabled(bool on);
// Clears the table (and the FLOP total).
void reset();
// The table, largest exclusive time first.
std::vector<Entry> entries();

// Marks the work of the current thread as backward (run_backward) or another named phase until
// the guard ends; nests.
class PhaseGuard {
 public:
  explicit PhaseGuard(const char* phase);
  ~PhaseGuard();
  PhaseGuard(const PhaseGuard&) = delete;
  PhaseGuard& operator=(const PhaseGuard&) = delete;

 private:
  const char* prev_;
};

class Scope {
 public:
  explicit Scope(const char* name) : active_(enabled()) {
    if (active_) detail::enter(name);
  }
  ~Scope() {
    if (active_) detail::leave();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool active_;
};

// FLOPs of the model's matrix ops (forward only), accumulated while counting is on.
void set_count_flops(bool on);
inline void add_flops(double flops) {
  if (detail::g_count_flops.load(std::memory_order_relaxed)) detail::add_flops(flops);
}
double flops();

}  // namespace hmer::profiler
