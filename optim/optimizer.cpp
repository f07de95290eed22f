#include "optim/optimizer.h"

#include <charconv>
#include <set>
#include <system_error>

#include "core/error.h"

namespace hmer::optim {

namespace {

void check_param(const Tensor& p, const std::string& type, size_t g, size_t i) {
  HMER_CHECK(p.defined(), type, ": parameter ", i, " of group ", g, " is an undefined tensor");
  HMER_CHECK(p.dtype() == DType::Float32 && p.device().is_cpu(), type, ": parameter ", i, " of group ", g, " is ",
             p.str(), "; optimizers update float32 CPU tensors");
  HMER_CHECK(p.is_contiguous(), type, ": parameter ", i, " of group ", g, " (", p.str(),
             ") is not contiguous; the update writes the raw data in place");
}

std::string state_key(size_t g, size_t i) { return "state." + std::to_string(g) + "." + std::to_string(i); }
std::string group_key(size_t g) { return "group." + std::to_string(g); }

}  // namespace

std::string format_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

double parse_double(const std::string& text, const std::string& what) {
  double v = 0;
  const char* b = text.data();
  const char* e = b + text.size();
  const auto r = std::from_chars(b, e, v);
  HMER_CHECK(r.ec == std::errc() && r.ptr == e, what, ": '", text, "' is not a number");
  return v;
}

const std::string& scalar_at(const std::map<std::string, std::string>& s, const std::string& key) {
  const auto it = s.find(key);
  HMER_CHECK(it != s.end(), "optimizer state: missing scalar '", key, "'");
  return it->second;
}

namespace {
int64_t parse_int(const std::string& text, const std::string& what) {
  int64_t v = 0;
  const char* b = text.data();
  const char* e = b + text.size();
  const auto r = std::from_chars(b, e, v);
  HMER_CHECK(r.ec == std::errc() && r.ptr == e, what, ": '", text, "' is not an integer");
  return v;
}
}  // namespace

Optimizer::Optimizer(std::string type, std::vector<ParamGroup> groups, double default_lr,
                     double default_weight_decay)
    : type_(std::move(type)) {
  HMER_CHECK(!groups.empty(), type_, ": no parameter groups given");
  std::set<const TensorImpl*> seen;
  for (size_t g = 0; g < groups.size(); ++g) {
    ParamGroup& in = groups[g];
    HMER_CHECK(in.names.empty() || in.names.size() == in.params.size(), type_, ": group ", g, " has ",
               in.params.size(), " parameters but ", in.names.size(), " names");
    for (size_t i = 0; i < in.params.size(); ++i) {
      check_param(in.params[i], type_, g, i);
      // The same tensor twice would be stepped twice per step().
      HMER_CHECK(seen.insert(&in.params[i].impl()).second, type_, ": parameter ", i, " of group ", g,
                 " appears more than once in the parameter groups");
    }
    Group out;
    out.params = std::move(in.params);
    out.names = std::move(in.names);
    out.lr = out.initial_lr = in.lr.value_or(default_lr);
    out.weight_decay = in.weight_decay.value_or(default_weight_decay);
    HMER_CHECK(out.lr >= 0, type_, ": group ", g, " has a negative learning rate ", out.lr);
    HMER_CHECK(out.weight_decay >= 0, type_, ": group ", g, " has a negative weight_decay ", out.weight_decay);
    state_.emplace_back(out.params.size());
    groups_.push_back(std::move(out));
  }
}

void Optimizer::step() {
  const std::vector<std::string> buffers = buffer_names();
  for (size_t g = 0; g < groups_.size(); ++g) {
    const Group& group = groups_[g];
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      check_param(p, type_, g, i);
      HMER_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype() && grad.device() == p.device(), type_,
                 ": gradient ", grad.str(), " of parameter ", i, " of group ", g, " does not match the parameter ",
                 p.str());
      if (!grad.is_contiguous()) grad = grad.contiguous().detach();
      ParamState& st = state_[g][i];
      if (st.step == 0) {
        st.buffers.clear();
        for (size_t b = 0; b < buffers.size(); ++b) st.buffers.push_back(Tensor::zeros(p.shape()));
      }
      ++st.step;
      update(group, p, grad, st);
    }
  }
}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  HMER_CHECK(lr >= 0, type_, ": negative learning rate ", lr);
  for (auto& g : groups_) g.lr = lr;
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> out;
  for (const auto& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

std::vector<std::string> Optimizer::parameter_names() const {
  std::vector<std::string> out;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i)
      out.push_back(groups_[g].names.empty() ? "group" + std::to_string(g) + ".param" + std::to_string(i)
                                             : groups_[g].names[i]);
  return out;
}

const Optimizer::ParamState* Optimizer::state(size_t group, size_t index) const {
  HMER_CHECK(group < state_.size() && index < state_[group].size(), type_, ": no parameter ", index, " in group ",
             group);
  const ParamState& st = state_[group][index];
  return st.step > 0 ? &st : nullptr;
}

OptimizerState Optimizer::state_dict() const {
  OptimizerState out;
  const std::vector<std::string> buffers = buffer_names();
  out.scalars["type"] = type_;
  out.scalars["groups"] = std::to_string(groups_.size());
  for (const auto& [k, v] : options_to_scalars()) out.scalars["option." + k] = v;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const Group& group = groups_[g];
    out.scalars[group_key(g) + ".size"] = std::to_string(group.params.size());
    out.scalars[group_key(g) + ".lr"] = format_double(group.lr);
    out.scalars[group_key(g) + ".initial_lr"] = format_double(group.initial_lr);
    out.scalars[group_key(g) + ".weight_decay"] = format_double(group.weight_decay);
    for (size_t i = 0; i < group.params.size(); ++i) {
      const ParamState& st = state_[g][i];
      if (st.step == 0) continue;
      out.scalars[state_key(g, i) + ".step"] = std::to_string(st.step);
      for (size_t b = 0; b < buffers.size(); ++b)
        out.tensors.emplace_back(state_key(g, i) + "." + buffers[b], st.buffers[b].clone().detach());
    }
  }
  return out;
}

void Optimizer::load_state_dict(const OptimizerState& in) {
  const std::string& t = scalar_at(in.scalars, "type");
  HMER_CHECK(t == type_, type_, ": cannot load the state of a '", t, "' optimizer");
  const int64_t ngroups = parse_int(scalar_at(in.scalars, "groups"), "optimizer state 'groups'");
  HMER_CHECK(ngroups == static_cast<int64_t>(groups_.size()), type_, ": the state has ", ngroups,
             " parameter groups, this optimizer has ", groups_.size());

  std::map<std::string, const Tensor*> tensors;
  for (const auto& [name, tensor] : in.tensors) {
    HMER_CHECK(tensors.emplace(name, &tensor).second, type_, ": state tensor '", name, "' appears twice");
  }
  std::set<std::string> used_scalars = {"type", "groups"};
  std::set<std::string> used_tensors;
  const std::vector<std::string> buffers = buffer_names();

  // Build everything first so a failing load leaves this optimizer untouched.
  std::vector<Group> groups = groups_;
  std::vector<std::vector<ParamState>> state(groups_.size());
  std::map<std::string, std::string> options;
  for (const auto& [k, v] : in.scalars) {
    if (k.rfind("option.", 0) == 0) {
      options[k.substr(7)] = v;
      used_scalars.insert(k);
    }
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string gk = group_key(g);
    const int64_t n = parse_int(scalar_at(in.scalars, gk + ".size"), gk + ".size");
    HMER_CHECK(n == static_cast<int64_t>(groups[g].params.size()), type_, ": group ", g, " of the state has ", n,
               " parameters, this optimizer's has ", groups[g].params.size());
    for (const char* field : {".size", ".lr", ".initial_lr", ".weight_decay"}) used_scalars.insert(gk + field);
    groups[g].lr = parse_double(scalar_at(in.scalars, gk + ".lr"), gk + ".lr");
    groups[g].initial_lr = parse_double(scalar_at(in.scalars, gk + ".initial_lr"), gk + ".initial_lr");
    groups[g].weight_decay = parse_double(scalar_at(in.scalars, gk + ".weight_decay"), gk + ".weight_decay");
    state[g].resize(groups[g].params.size());
    for (size_t i = 0; i < groups[g].params.size(); ++i) {
      const std::string sk = state_key(g, i);
      const auto it = in.scalars.find(sk + ".step");
      if (it == in.scalars.end()) continue;  // this parameter never stepped
      used_scalars.insert(sk + ".step");
      ParamState& st = state[g][i];
      st.step = parse_int(it->second, sk + ".step");
      HMER_CHECK(st.step > 0, type_, ": ", sk, ".step is ", st.step, " (must be positive)");
      const Tensor& p = groups[g].params[i];
      for (const auto& b : buffers) {
        const auto ti = tensors.find(sk + "." + b);
        HMER_CHECK(ti != tensors.end(), type_, ": state tensor '", sk, ".", b, "' is missing");
        const Tensor& src = *ti->second;
        HMER_CHECK(src.shape() == p.shape() && src.dtype() == DType::Float32, type_, ": state tensor '", sk, ".",
                   b, "' is ", src.str(), " but the parameter is ", p.str());
        Tensor own = Tensor::empty(p.shape());
        own.copy_(src);
        st.buffers.push_back(own);
        used_tensors.insert(sk + "." + b);
      }
    }
  }
  for (const auto& [k, v] : in.scalars)
    HMER_CHECK(used_scalars.count(k), type_, ": unknown scalar '", k, "' in the optimizer state");
  for (const auto& [k, v] : tensors)
    HMER_CHECK(used_tensors.count(k), type_, ": unknown tensor '", k, "' in the optimizer state");

  options_from_scalars(options);
  groups_ = std::move(groups);
  state_ = std::move(state);
}

void save_optimizer_state(const std::string& path, const Optimizer& opt) {
  const OptimizerState s = opt.state_dict();
  save_safetensors(path, s.tensors, s.scalars);
}

void load_optimizer_state(const std::string& path, Optimizer& opt) {
  OptimizerState s;
  s.tensors = load_safetensors(path, &s.scalars);
  opt.load_state_dict(s);
}

}  // namespace hmer::optim
