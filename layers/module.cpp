#include "layers/module.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "core/autograd.h"

namespace hmer {

InitPreset init_preset_from_string(const std::string& s) {
  if (s == "torch") return InitPreset::Torch;
  if (s == "paddle") return InitPreset::Paddle;
  if (s == "keras") return InitPreset::Keras;
  fail("init preset: unknown name '", s, "' (expected torch, paddle or keras)");
}

const char* init_preset_name(InitPreset p) {
  switch (p) {
    case InitPreset::Torch: return "torch";
    case InitPreset::Paddle: return "paddle";
    case InitPreset::Keras: return "keras";
  }
  return "?";
}

Module::Module(std::string type_name) : type_name_(std::move(type_name)) {}

// ---- registration ------------------------------------------------------------------------------

void Module::check_new_name(const std::string& name, const char* what) const {
  HMER_CHECK(!name.empty(), type_name_, ": ", what, " name must not be empty");
  HMER_CHECK(name.find('.') == std::string::npos, type_name_, ": ", what, " name '", name,
             "' must not contain '.' (dots separate module levels in state_dict keys)");
  auto taken = [&](const std::vector<Entry>& v) {
    return std::any_of(v.begin(), v.end(), [&](const Entry& e) { return e.name == name; });
  };
  const bool child_taken =
      std::any_of(children_.begin(), children_.end(), [&](const auto& c) { return c.first == name; });
  HMER_CHECK(!taken(params_) && !taken(buffers_) && !child_taken, type_name_, ": cannot register ", what, " '",
             name, "': the name is already used by a parameter, buffer or submodule");
}

Tensor& Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  check_new_name(name, "parameter");
  HMER_CHECK(t.defined(), type_name_, ": parameter '", name, "' is undefined");
  HMER_CHECK(is_floating(t.dtype()), type_name_, ": parameter '", name, "' must be floating, got ", t.str());
  // An optimizer updates a parameter in place; a non-leaf would have its history silently cut.
  HMER_CHECK(t.is_leaf(), type_name_, ": parameter '", name, "' must be a leaf tensor (use detach())");
  t.set_requires_grad(requires_grad);
  params_.push_back({name, std::move(t), true});
  return params_.back().tensor;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t, bool persistent) {
  check_new_name(name, "buffer");
  HMER_CHECK(t.defined(), type_name_, ": buffer '", name, "' is undefined");
  HMER_CHECK(!t.requires_grad(), type_name_, ": buffer '", name, "' must not require grad");
  buffers_.push_back({name, std::move(t), persistent});
  return buffers_.back().tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "submodule");
  HMER_CHECK(module != nullptr, type_name_, ": submodule '", name, "' is null");
  HMER_CHECK(module.get() != this, type_name_, ": a module cannot be its own child");
  children_.emplace_back(name, std::move(module));
}

// ---- lookup ------------------------------------------------------------------------------------

void Module::collect(const std::string& prefix, bool params, bool recurse, NamedTensors& out,
                     std::vector<const TensorImpl*>& seen) const {
  for (const Entry& e : params ? params_ : buffers_) {
    const TensorImpl* id = e.tensor.impl_ptr().get();
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
    seen.push_back(id);
    out.emplace_back(prefix + e.name, e.tensor);
  }
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, true, out, seen);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  std::vector<const TensorImpl*> seen;
  collect("", true, recurse, out, seen);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  std::vector<const TensorImpl*> seen;
  collect("", false, recurse, out, seen);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

void Module::named_modules_into(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out) {
  for (const auto& m : out)
    if (m.second == this) return;  // a module shared twice is visited once, as in torch
  out.emplace_back(prefix, this);
  for (const auto& [name, child] : children_)
    child->named_modules_into(prefix.empty() ? name : prefix + "." + name, out);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  named_modules_into("", out);
  return out;
}

namespace {
template <class V, class F>
std::string list_names(const V& v, F name_of) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ", ") + name_of(e);
  return s.empty() ? "(none)" : s;
}
}  // namespace

Tensor& Module::parameter(const std::string& name) {
  for (Entry& e : params_)
    if (e.name == name) return e.tensor;
  fail(type_name_, ": no parameter '", name, "'; parameters are: ",
       list_names(params_, [](const Entry& e) { return e.name; }));
}

Tensor& Module::buffer(const std::string& name) {
  for (Entry& e : buffers_)
    if (e.name == name) return e.tensor;
  fail(type_name_, ": no buffer '", name, "'; buffers are: ",
       list_names(buffers_, [](const Entry& e) { return e.name; }));
}

std::shared_ptr<Module> Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_)
    if (n == name) return c;
  fail(type_name_, ": no submodule '", name, "'; submodules are: ",
       list_names(children_, [](const auto& c) { return c.first; }));
}

// ---- state -------------------------------------------------------------------------------------

void Module::collect_state(const std::string& prefix, NamedTensors& out) const {
  for (const Entry& e : params_) out.emplace_back(prefix + e.name, e.tensor.detach());
  for (const Entry& e : buffers_)
    if (e.persistent) out.emplace_back(prefix + e.name, e.tensor.detach());
  for (const auto& [name, child] : children_) child->collect_state(prefix + name + ".", out);
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect_state("", out);
  return out;
}

LoadStateDictResult Module::load_state_dict(const NamedTensors& state, bool strict) {
  // Live entries by key, in our order (handles share the TensorImpl, so copy_ writes in place).
  NamedTensors own;
  collect_state("", own);
  std::map<std::string, const Tensor*> given;
  std::vector<std::string> duplicates;
  for (const auto& [name, t] : state) {
    if (!given.emplace(name, &t).second) duplicates.push_back(name);
  }
  LoadStateDictResult result;
  std::vector<std::string> mismatched;
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  std::map<std::string, bool> known;
  for (const auto& [name, dst] : own) {
    known[name] = true;
    auto it = given.find(name);
    if (it == given.end()) {
      result.missing_keys.push_back(name);
      continue;
    }
    const Tensor& src = *it->second;
    if (!src.defined() || src.shape() != dst.shape()) {
      mismatched.push_back("size mismatch for " + name + ": copying a tensor with shape " +
                           (src.defined() ? shape_str(src.shape()) : std::string("(undefined)")) +
                           " from the state dict, the shape in the current model is " + shape_str(dst.shape()));
      continue;
    }
    if (is_floating(dst.dtype()) != is_floating(src.dtype())) {
      mismatched.push_back("dtype mismatch for " + name + ": " + dtype_name(src.dtype()) +
                           " in the state dict, " + dtype_name(dst.dtype()) + " in the current model");
      continue;
    }
    copies.emplace_back(dst, &src);
  }
  for (const auto& [name, t] : state)
    if (!known.count(name)) result.unexpected_keys.push_back(name);

  const bool key_errors = strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty());
  if (key_errors || !mismatched.empty() || !duplicates.empty()) {
    auto shape_of = [&](const std::string& n, bool ours) {
      if (ours) {
        for (const auto& [k, t] : own)
          if (k == n) return shape_str(t.shape());
      } else {
        const Tensor* t = given.at(n);
        return t->defined() ? shape_str(t->shape()) : std::string("(undefined)");
      }
      return std::string();
    };
    std::ostringstream os;
    os << "Error(s) in loading state_dict for " << type_name_ << ":";
    if (strict && !result.missing_keys.empty()) {
      os << "\n\tMissing key(s) in state_dict: ";
      for (size_t i = 0; i < result.missing_keys.size(); ++i)
        os << (i ? ", " : "") << '"' << result.missing_keys[i] << "\" " << shape_of(result.missing_keys[i], true);
      os << '.';
    }
    if (strict && !result.unexpected_keys.empty()) {
      os << "\n\tUnexpected key(s) in state_dict: ";
      for (size_t i = 0; i < result.unexpected_keys.size(); ++i)
        os << (i ? ", " : "") << '"' << result.unexpected_keys[i] << "\" "
           << shape_of(result.unexpected_keys[i], false);
      os << '.';
    }
    for (const std::string& m : mismatched) os << "\n\t" << m << '.';
    for (const std::string& d : duplicates) os << "\n\tduplicate key in state_dict: \"" << d << "\".";
    throw Error(os.str());
  }
  // Nothing is written unless every entry is valid, so a failed load leaves the model untouched.
  {
    NoGradGuard no_grad;
    for (auto& [dst, src] : copies) {
      Tensor d = dst;
      d.copy_(*src);
    }
  }
  apply([](Module& m) { m.on_state_loaded(); });
  return result;
}

// ---- modes and placement -------------------------------------------------------------------------

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

namespace {
// Repoints `t`'s TensorImpl at `moved`'s storage and layout, so every handle to it sees the change.
void rebind(const Tensor& t, const Tensor& moved) {
  TensorImpl& impl = t.impl();
  impl.storage = moved.storage();
  impl.shape = moved.shape();
  impl.strides = moved.strides();
  impl.offset = moved.offset();
  impl.dtype = moved.dtype();
  impl.device = moved.device();
}

Tensor converted(const Tensor& t, DType dtype, Device device) {
  Tensor out = Tensor::empty(t.shape(), dtype, device);
  out.copy_(t);
  return out;
}

void convert_in_place(const Tensor& t, DType dtype, Device device) {
  if (t.dtype() == dtype && t.device() == device) return;
  rebind(t, converted(t, dtype, device));
  if (t.impl().grad) {
    Tensor g(t.impl().grad);
    t.impl().grad = converted(g, dtype, device).impl_ptr();
  }
}
}  // namespace

void Module::to(Device device) {
  NoGradGuard no_grad;
  for (Entry& e : params_) convert_in_place(e.tensor, e.tensor.dtype(), device);
  for (Entry& e : buffers_) convert_in_place(e.tensor, e.tensor.dtype(), device);
  for (auto& [name, child] : children_) child->to(device);
}

void Module::to(DType dtype) {
  HMER_CHECK(is_floating(dtype), type_name_, ".to: target dtype must be floating, got ", dtype_name(dtype));
  NoGradGuard no_grad;
  for (Entry& e : params_) convert_in_place(e.tensor, dtype, e.tensor.device());
  for (Entry& e : buffers_)
    if (is_floating(e.tensor.dtype())) convert_in_place(e.tensor, dtype, e.tensor.device());
  for (auto& [name, child] : children_) child->to(dtype);
}

void Module::zero_grad(bool set_to_none) {
  for (Tensor& p : parameters()) {
    if (set_to_none) {
      p.zero_grad();
    } else if (p.grad().defined()) {
      p.grad().fill_(0.0);
    }
  }
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const Tensor& p : parameters())
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

void Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& [name, child] : children_) child->apply(fn);
  fn(*this);
}

void Module::repr_into(std::string& out, int indent) const {
  out += type_name_ + "(" + extra_repr();
  if (!children_.empty()) {
    out += "\n";
    for (const auto& [name, child] : children_) {
      out += std::string(indent + 2, ' ') + "(" + name + "): ";
      child->repr_into(out, indent + 2);
      out += "\n";
    }
    out += std::string(indent, ' ');
  }
  out += ")";
}

std::string Module::repr() const {
  std::string s;
  repr_into(s, 0);
  return s;
}

// ---- Sequential ----------------------------------------------------------------------------------

Sequential::Sequential(std::vector<std::shared_ptr<UnaryModule>> modules) : Sequential() {
  for (auto& m : modules) push_back(std::move(m));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& m : layers_) y = m->forward(y);
  return y;
}

}  // namespace hmer
