#pragma once
// Optimizer base: parameter groups (per-group lr and weight decay), lazily created per-parameter
// state (a step counter and named buffers such as Adadelta's square_avg), zero_grad/step, and a
// state dict made of tensors plus string scalars, so it can be written with save_safetensors
// (tensors + "__metadata__") and resumed bit for bit.
//
// Updates run in place on the raw float32 data of each parameter, one element at a time, with the
// float32 rounding recipes of framework-semantics.md §1 (std::fma exactly where PyTorch's kernels
// fuse; the build uses -ffp-contract=off so nothing else is fused). See docs/optimizers.md.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/serialization.h"
#include "core/tensor.h"

// Chainable option setters in the style of PyTorch's TORCH_ARG:
//   AdamOptions().lr(1e-3).weight_decay(1e-2)
#define HMER_OPTIM_ARG(T, NAME, DEFAULT)   \
 public:                                   \
  auto& NAME(T value) {                    \
    NAME##_ = value;                       \
    return *this;                          \
  }                                        \
  T NAME() const { return NAME##_; }       \
                                           \
 private:                                  \
  T NAME##_ = DEFAULT

namespace hmer::optim {

// What a caller hands to an optimizer: parameters and optional per-group overrides of the
// optimizer-wide lr and weight decay (as PyTorch's param-group dicts).
struct ParamGroup {
  std::vector<Tensor> params;
  std::vector<std::string> names;  // optional; when given, one per parameter (used by logs)
  std::optional<double> lr;
  std::optional<double> weight_decay;
};

// A state dict: tensors (moments, buffers) and scalars (step counters, lrs, hyper-parameters)
// stored as exact round-trip decimal strings; scalars become safetensors metadata.
struct OptimizerState {
  NamedTensors tensors;
  std::map<std::string, std::string> scalars;
};

class Optimizer {
 public:
  struct Group {
    std::vector<Tensor> params;
    std::vector<std::string> names;
    double lr = 0;          // the value the next step() uses; schedules overwrite it
    double initial_lr = 0;  // the configured lr, the base a schedule scales (PyTorch 'initial_lr')
    double weight_decay = 0;
  };
  // Per-parameter state, created at the parameter's first step (PyTorch creates it lazily too).
  struct ParamState {
    int64_t step = 0;  // steps taken by this parameter (only steps where it had a gradient)
    std::vector<Tensor> buffers;  // one per buffer_names(), float32, shaped like the parameter
  };

  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Updates every parameter that has a .grad(); parameters without one are skipped and keep
  // their state, as in PyTorch.
  void step();
  // Drops every .grad() (PyTorch set_to_none=True).
  void zero_grad();

  std::vector<Group>& param_groups() { return groups_; }
  const std::vector<Group>& param_groups() const { return groups_; }
  void set_lr(double lr);  // every group
  std::vector<Tensor> parameters() const;
  // "name" from the group when given, otherwise "group<g>.param<i>".
  std::vector<std::string> parameter_names() const;

  // Type id stored in state dicts, e.g. "adadelta_torch"; loading checks it.
  const std::string& type() const { return type_; }
  // Human-readable one-liner with every hyper-parameter (for logs).
  virtual std::string describe() const = 0;
  // Names of the per-parameter buffers (PyTorch's state keys, or Paddle's accumulator names).
  virtual std::vector<std::string> buffer_names() const = 0;
  // State of one parameter, or nullptr before its first step.
  const ParamState* state(size_t group, size_t index) const;
  // The lr the update formula actually applies (1 for Paddle <= 2.4 Adadelta, which ignores lr).
  virtual double effective_lr(const Group& g) const { return g.lr; }

  // Keys: tensors "state.<g>.<i>.<buffer>"; scalars "type", "groups", "group.<g>.size",
  // "group.<g>.lr", "group.<g>.initial_lr", "group.<g>.weight_decay", "state.<g>.<i>.step" and the
  // optimizer's hyper-parameters under "option.<name>".
  OptimizerState state_dict() const;
  // Restores everything state_dict() wrote (like PyTorch, the saved hyper-parameters and group lrs
  // replace the current ones). Throws naming the key when the dict does not fit this optimizer
  // (other type, other group layout, wrong buffer shape, missing or unknown keys).
  void load_state_dict(const OptimizerState& state);

 protected:
  Optimizer(std::string type, std::vector<ParamGroup> groups, double default_lr, double default_weight_decay);

  // Applies one step to one parameter (contiguous float32 CPU; grad of the same shape). Called
  // with st.step already incremented and st.buffers allocated (zeros) at the first step.
  virtual void update(const Group& group, const Tensor& param, const Tensor& grad, ParamState& st) = 0;
  virtual std::map<std::string, std::string> options_to_scalars() const = 0;
  virtual void options_from_scalars(const std::map<std::string, std::string>& s) = 0;

 private:
  std::string type_;
  std::vector<Group> groups_;
  std::vector<std::vector<ParamState>> state_;
};

// Exact round-trip text for doubles (shortest representation that parses back to the same bits)
// and the parser that reads it back, naming `what` on malformed input.
std::string format_double(double v);
double parse_double(const std::string& text, const std::string& what);
// Looks up `key` in a scalar map, failing with the key's name when it is absent.
const std::string& scalar_at(const std::map<std::string, std::string>& s, const std::string& key);

// state_dict() through save_safetensors (scalars as metadata) and back.
void save_optimizer_state(const std::string& path, const Optimizer& opt);
void load_optimizer_state(const std::string& path, Optimizer& opt);

// Typical parallel grain for the per-element update loops.
constexpr int64_t kUpdateGrain = 32768;

}  // namespace hmer::optim
