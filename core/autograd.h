#pragma once
// Reverse-mode autograd. Each differentiable op creates a Node when any input requires grad
// (and grad mode is on); the node keeps what backward needs and one edge per input. backward()
// visits nodes in decreasing creation order, which is a valid reverse topological order because a
// node is always created after the nodes of its inputs.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace hmer {

class Node;
struct Edge {
  std::shared_ptr<Node> fn;  // null when that input does not require grad
};

class Node {
 public:
  Node();
  virtual ~Node() = default;
  // Gradients for each input (one per edge, same order); an undefined Tensor means "no gradient".
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  virtual std::string name() const = 0;
  // Drops saved tensors after a backward pass without retain_graph.
  virtual void release_saved() {}

  std::vector<Edge> next_edges;
  uint64_t sequence_nr() const { return seq_; }
  bool released = false;
  std::weak_ptr<TensorImpl> retained_output;  // set by Tensor::retain_grad()

 private:
  uint64_t seq_;
};

// Accumulates an incoming gradient into a leaf tensor's .grad.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> backward(const Tensor& grad_output) override;
  std::string name() const override { return "AccumulateGrad"; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// The node nearly every op uses: its backward is a closure that captured the saved tensors.
// release_saved() drops the closure, so a second backward without retain_graph fails clearly.
class FunctionNode : public Node {
 public:
  using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;
  FunctionNode(std::string name, BackwardFn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> backward(const Tensor& grad_output) override;
  std::string name() const override { return name_; }
  void release_saved() override { fn_ = nullptr; }

 private:
  std::string name_;
  BackwardFn fn_;
};

// Records `out = op(inputs)` with the given backward closure when any input requires grad.
Tensor record_fn(Tensor out, const char* name, const std::vector<Tensor>& inputs,
                 FunctionNode::BackwardFn backward);

struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool enabled);
};

// Disables graph recording in a scope (inference, optimizer steps, backward itself).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(true); }
  ~EnableGradGuard() { GradMode::set_enabled(prev_); }

 private:
  bool prev_;
};

// True when an op with these inputs must record a node.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Connects `node` to `inputs` and makes it the grad_fn of `out` when recording; returns `out`.
// Call only after the forward result exists.
Tensor record(Tensor out, const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs);

// The edge a gradient for `t` must flow into (its grad_fn, or its leaf accumulator).
Edge gradient_edge(const Tensor& t);

void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph);

// Identifies the backward pass running now (a new value at every run_backward; 0 before the first):
// per-pass gradient state (ChannelConcat's gradient buffer) knows from it whether it is current.
uint64_t backward_pass_id();

// Sums `grad` down to `shape` over broadcast dimensions (inverse of expand).
Tensor sum_to_shape(const Tensor& grad, const Shape& shape);

}  // namespace hmer
