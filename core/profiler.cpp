#include "core/profiler.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

namespace hmer::profiler {

namespace detail {
std::atomic<bool> g_enabled{false};
std::atomic<bool> g_count_flops{false};
}  // namespace detail

namespace {

using Clock = std::chrono::steady_clock;

struct Totals {
  double seconds = 0;
  int64_t calls = 0;
};

std::mutex g_mutex;
std::map<std::pair<std::string, std::string>, Totals> g_table;
double g_flops = 0;

struct Frame {
  const char* name;
  const char* phase;
  Clock::time_point resumed;  // when this frame's own clock last started
  double own = 0;             // exclusive seconds so far
};

thread_local std::vector<Frame> t_stack;
thread_local const char* t_phase = "forward";

void charge(const Frame& f) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Totals& t = g_table[{f.phase, f.name}];
  t.seconds += f.own;
  t.calls += 1;
}

}  // namespace

namespace detail {

void enter(const char* name) {
  const Clock::time_point now = Clock::now();
  if (!t_stack.empty()) {
    Frame& parent = t_stack.back();
    parent.own += std::chrono::duration<double>(now - parent.resumed).count();
  }
  t_stack.push_back({name, t_phase, now, 0.0});
}

void leave() {
  if (t_stack.empty()) return;  // enabled in the middle of a scope: nothing to close
  const Clock::time_point now = Clock::now();
  Frame f = t_stack.back();
  t_stack.pop_back();
  f.own += std::chrono::duration<double>(now - f.resumed).count();
  charge(f);
  // The parent resumes after the bookkeeping, so the profiler's own cost is charged to nobody.
  if (!t_stack.empty()) t_stack.back().resumed = Clock::now();
}

void add_flops(double flops) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_flops += flops;
}

}  // namespace detail

void set_enabled(bool on) { detail::g_enabled.store(on, std::memory_order_relaxed); }

void set_count_flops(bool on) { detail::g_count_flops.store(on, std::memory_order_relaxed); }

void reset() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_table.clear();
  g_flops = 0;
}

double flops() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_flops;
}

std::vector<Entry> entries() {
  std::vector<Entry> out;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const auto& [key, t] : g_table) out.push_back({key.first, key.second, t.seconds, t.calls});
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

PhaseGuard::PhaseGuard(const char* phase) : prev_(t_phase) { t_phase = phase; }
PhaseGuard::~PhaseGuard() { t_phase = prev_; }

}  // namespace hmer::profiler
