#include "core/autograd.h"

#include <atomic>
#include <queue>
#include <unordered_map>

#include "core/ops.h"
#include "core/profiler.h"

namespace hmer {

namespace {
std::atomic<uint64_t> g_next_seq{0};
std::atomic<uint64_t> g_backward_pass{0};
thread_local bool g_grad_enabled = true;
}  // namespace

Node::Node() : seq_(g_next_seq.fetch_add(1)) {}

uint64_t backward_pass_id() { return g_backward_pass.load(std::memory_order_relaxed); }

bool GradMode::is_enabled() { return g_grad_enabled; }
void GradMode::set_enabled(bool enabled) { g_grad_enabled = enabled; }

std::vector<Tensor> AccumulateGrad::backward(const Tensor& grad_output) {
  TensorImpl& leaf = *leaf_;
  Tensor g = grad_output;
  if (g.shape() != leaf.shape) g = sum_to_shape(g, leaf.shape);
  if (!leaf.grad) {
    // Own a fresh contiguous buffer: the incoming gradient may alias another node's output.
    leaf.grad = contiguous_copy(g.detach()).impl_ptr();
  } else {
    Tensor acc(leaf.grad);
    Tensor sum = add(acc, g);
    leaf.grad = sum.impl_ptr();
  }
  return {};
}

std::vector<Tensor> FunctionNode::backward(const Tensor& grad_output) {
  HMER_CHECK(fn_ != nullptr, name(),
             ": trying to backward through the graph a second time (its saved tensors were freed); pass "
             "retain_graph=true to the first backward()");
  return fn_(grad_output);
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t != nullptr && t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return Edge{};
  if (t.grad_fn()) return Edge{t.grad_fn()};
  TensorImpl& impl = t.impl();
  std::shared_ptr<Node> acc = impl.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    impl.grad_accumulator = acc;
  }
  return Edge{acc};
}

Tensor record(Tensor out, const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs) {
  if (!any_requires_grad(inputs)) return out;
  node->next_edges.clear();
  node->next_edges.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next_edges.push_back(gradient_edge(t));
  TensorImpl& o = out.impl();
  o.grad_fn = node;
  o.requires_grad = true;
  return out;
}

Tensor record_fn(Tensor out, const char* name, const std::vector<Tensor>& inputs, FunctionNode::BackwardFn backward) {
  if (!any_requires_grad(inputs)) return out;
  return record(std::move(out), std::make_shared<FunctionNode>(name, std::move(backward)), inputs);
}

void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph) {
  HMER_CHECK(root.defined(), "backward: undefined tensor");
  HMER_CHECK(root.requires_grad(), "backward: tensor ", root.str(),
             " does not require grad and has no grad_fn (did every input have requires_grad = false?)");
  Tensor g0 = grad_root;
  if (!g0.defined()) {
    HMER_CHECK(root.numel() == 1, "backward: grad can be implicitly created only for a one-element output, got ",
               root.str());
    g0 = Tensor::ones(root.shape(), root.dtype(), root.device());
  } else {
    HMER_CHECK(g0.shape() == root.shape(), "backward: gradient shape ", shape_str(g0.shape()),
               " does not match output shape ", shape_str(root.shape()));
  }

  g_backward_pass.fetch_add(1, std::memory_order_relaxed);
  NoGradGuard no_grad;  // gradients are computed without recording (no double backward)
  profiler::PhaseGuard phase("backward");
  const Edge start = gradient_edge(root);

  // Count, for every node reachable from the root, how many edges point at it. A node runs only
  // once all of them have delivered, so a gradient is never dropped whatever the creation order
  // (a leaf's AccumulateGrad is created lazily and may be younger than its consumers).
  std::unordered_map<Node*, int64_t> dependencies;
  std::vector<std::shared_ptr<Node>> visited;  // keeps nodes alive and lists them for release
  {
    std::vector<Node*> stack{start.fn.get()};
    visited.push_back(start.fn);
    dependencies[start.fn.get()] = 0;
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (const Edge& e : n->next_edges) {
        if (!e.fn) continue;
        auto [it, inserted] = dependencies.try_emplace(e.fn.get(), 0);
        ++it->second;
        if (inserted) {
          visited.push_back(e.fn);
          stack.push_back(e.fn.get());
        }
      }
    }
  }

  // Among ready nodes run the most recently created first: it frees activations in roughly the
  // reverse order they were made, as PyTorch does.
  struct ByLatest {
    bool operator()(const Node* a, const Node* b) const { return a->sequence_nr() < b->sequence_nr(); }
  };
  std::priority_queue<Node*, std::vector<Node*>, ByLatest> ready;
  std::unordered_map<Node*, Tensor> pending;
  pending.emplace(start.fn.get(), g0);
  ready.push(start.fn.get());

  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    Tensor g;
    if (auto it = pending.find(node); it != pending.end()) {
      g = std::move(it->second);
      pending.erase(it);
    }
    std::vector<Tensor> grads;
    if (g.defined()) {
      if (auto out = node->retained_output.lock()) out->grad = g.detach().impl_ptr();
      std::string node_name;  // named only when profiling: the scope keeps a pointer into it
      if (profiler::enabled()) node_name = node->name();
      profiler::Scope scope(node_name.c_str());
      grads = node->backward(g);
      HMER_CHECK(grads.empty() || grads.size() == node->next_edges.size(), node->name(), ": backward returned ",
                 grads.size(), " gradients for ", node->next_edges.size(), " inputs");
    }
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      Node* next = node->next_edges[i].fn.get();
      if (next == nullptr) continue;
      if (i < grads.size() && grads[i].defined()) {
        auto it = pending.find(next);
        if (it == pending.end()) {
          pending.emplace(next, grads[i]);
        } else {
          it->second = add(it->second, grads[i]);
        }
      }
      if (--dependencies[next] == 0) ready.push(next);
    }
  }

  if (!retain_graph) {
    for (auto& n : visited) {
      n->release_saved();
      n->released = true;
    }
  }
}

Tensor sum_to_shape(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
  HMER_CHECK(lead >= 0, "sum_to_shape: cannot reduce ", shape_str(grad.shape()), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < lead; ++i) dims.push_back(i);
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i)
    if (shape[i] == 1 && grad.shape()[lead + i] != 1) dims.push_back(lead + i);
  Tensor r = dims.empty() ? grad : sum(grad, dims, true);
  if (lead > 0 || r.shape() != shape) r = r.reshape(shape);
  return r;
}

}  // namespace hmer
