#pragma once
// Module: the container every layer and model derives from, shaped like torch::nn::Module so that
// parameter names, state_dict keys and their order are exactly PyTorch's ("encoder.0.weight").
//
// A module owns three ordered lists: its parameters (leaf tensors with requires_grad), its buffers
// (state that is saved but not trained, e.g. BatchNorm's running statistics) and its child modules
// (held as std::shared_ptr so a child can be shared with the code that built it). A layer keeps its
// own Tensor handles (weight_, bias_) to the same TensorImpl it registered, so anything that
// changes a parameter in place (load_state_dict, to(Device), an optimizer) is seen by both.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/serialization.h"
#include "core/tensor.h"

namespace hmer {

// Chainable option setters in the style of torch's TORCH_ARG:
//   LinearOptions(4, 8).bias(false)   and   opts.bias()   to read.
#define HMER_ARG(T, name)                          \
 public:                                           \
  auto name(const T& value)->decltype(*this) {     \
    this->name##_ = value;                         \
    return *this;                                  \
  }                                                \
  const T& name() const { return this->name##_; } \
                                                   \
 private:                                          \
  T name##_

// Which framework's default initialisation a model gets (see docs/layers.md for every formula).
enum class InitPreset { Torch, Paddle, Keras };
InitPreset init_preset_from_string(const std::string& s);  // "torch" | "paddle" | "keras"
const char* init_preset_name(InitPreset p);

// What load_state_dict(strict = false) tolerated (torch's _IncompatibleKeys).
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

class Module {
 public:
  explicit Module(std::string type_name);
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // "Linear", "GRUCell", ...: used in error messages and repr().
  const std::string& type_name() const { return type_name_; }

  // ---- registration (names must be non-empty, contain no '.', and be unique in this module) ----
  // Makes `t` a parameter: it must be a floating leaf tensor; requires_grad is switched on.
  // Returns the stored handle (same TensorImpl as `t`).
  Tensor& register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  // Buffers never require grad. A non-persistent buffer is moved by to() but not saved.
  Tensor& register_buffer(const std::string& name, Tensor t, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

  // ---- lookup -----------------------------------------------------------------------------------
  // PyTorch order: this module's own entries in registration order, then each child's, recursively
  // (pre-order). Parameters shared between modules are listed once (the first name wins).
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  // Pre-order; this module comes first with the name "" (as torch.nn.Module.named_modules()).
  std::vector<std::pair<std::string, Module*>> named_modules();
  // A parameter / buffer / child of this module by its local name; throws naming what exists.
  Tensor& parameter(const std::string& name);
  Tensor& buffer(const std::string& name);
  std::shared_ptr<Module> child(const std::string& name) const;

  // ---- state ------------------------------------------------------------------------------------
  // Parameters and persistent buffers, per module its own parameters then its own buffers, then the
  // children recursively: the key order of torch's state_dict(). The tensors are the live ones
  // (detached handles sharing storage), as torch's state_dict() returns them.
  NamedTensors state_dict() const;
  // Copies values in place (parameters keep their identity, so optimizers keep working). Shapes
  // must match exactly; dtype is converted. With strict, any missing or unexpected key is an error;
  // all problems are reported together in ONE hmer::Error, each size mismatch with both shapes.
  LoadStateDictResult load_state_dict(const NamedTensors& state, bool strict = true);

  // ---- modes and placement -------------------------------------------------------------------------
  virtual void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Moves every parameter, buffer and existing .grad to `device` in place (the TensorImpl is kept,
  // so handles held by layers and optimizers stay valid); requires_grad is unchanged.
  void to(Device device);
  // Converts floating parameters and buffers (not int64 ones such as num_batches_tracked).
  void to(DType dtype);
  // set_to_none (default, torch >= 2.0) drops .grad; false zeroes existing grads in place (torch 1.13).
  void zero_grad(bool set_to_none = true);
  int64_t num_parameters(bool trainable_only = false) const;

  // ---- initialisation ---------------------------------------------------------------------------
  // Re-initialises THIS module's own parameters and buffers (not its children) following `preset`.
  // Layers without parameters keep the default no-op. apply_init_preset() walks a whole model.
  virtual void reset_parameters(InitPreset preset, Generator& gen) {}

  // Calls fn on every child (recursively) and then on this module, as torch's Module.apply.
  void apply(const std::function<void(Module&)>& fn);

  // A torch-like printout: "Linear(in_features=4, out_features=8, bias=true)" and nested children.
  std::string repr() const;
  virtual std::string extra_repr() const { return ""; }

 protected:
  // Called on this module after load_state_dict has copied its values (e.g. BatchNorm re-reads its
  // batch counter).
  virtual void on_state_loaded() {}

 private:
  struct Entry {
    std::string name;
    Tensor tensor;
    bool persistent = true;
  };
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void check_new_name(const std::string& name, const char* what) const;
  void collect_state(const std::string& prefix, NamedTensors& out) const;
  void collect(const std::string& prefix, bool params, bool recurse, NamedTensors& out,
               std::vector<const TensorImpl*>& seen) const;
  void named_modules_into(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out);
  void repr_into(std::string& out, int indent) const;

  std::string type_name_;
  bool training_ = true;
  std::vector<Entry> params_;
  std::vector<Entry> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// A module with a single-tensor forward: what Sequential can chain.
class UnaryModule : public Module {
 public:
  using Module::Module;
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// Children named "0", "1", ... applied in order (torch.nn.Sequential).
class Sequential : public UnaryModule {
 public:
  Sequential() : UnaryModule("Sequential") {}
  explicit Sequential(std::vector<std::shared_ptr<UnaryModule>> modules);
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    layers_.push_back(module);
    return register_module(std::to_string(layers_.size() - 1), std::move(module));
  }
  Tensor forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }
  const std::shared_ptr<UnaryModule>& operator[](size_t i) const { return layers_.at(i); }

 private:
  std::vector<std::shared_ptr<UnaryModule>> layers_;
};

}  // namespace hmer
