#pragma once
// Tensor: a reference-counted view (shape, strides, offset) into a shared Storage, with the
// autograd fields PyTorch users expect (requires_grad, grad, grad_fn). Copying a Tensor copies
// the handle, not the data, exactly as in PyTorch.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/storage.h"

namespace hmer {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

class Node;
class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;  // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::Float32;
  Device device;

  // autograd
  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;          // set on non-leaf results of differentiable ops
  std::weak_ptr<Node> grad_accumulator;   // the AccumulateGrad node of a leaf, created lazily
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation -------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::Float32);
  static Tensor arange(int64_t n, DType dtype = DType::Int64);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape) {
    return from_vector<float>(values, shape);
  }

  // ---- metadata ---------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().device; }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
  std::string str() const;  // "float32[2, 3] cpu"

  // Pointer to element 0 of this view (storage base + offset). Checks the dtype.
  template <class T> T* data_ptr() const;
  void* raw_data_ptr() const;
  template <class T> T item() const;
  double item_double() const;
  template <class T> std::vector<T> to_vector() const;  // contiguous copy, CPU

  // ---- views (share storage; differentiable) ------------------------------------------------
  Tensor view(const Shape& shape) const;      // requires compatible strides
  Tensor reshape(const Shape& shape) const;   // view when possible, otherwise copies
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& shape) const;    // broadcasting view (stride 0)
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;                  // self if contiguous, else a differentiable copy

  // ---- copies and conversions -------------------------------------------------------------
  Tensor clone() const;                       // differentiable copy
  Tensor to(DType dtype) const;               // differentiable between floating types
  Tensor to(Device device) const;             // differentiable
  Tensor detach() const;                      // shares storage, no history
  void copy_(const Tensor& src);              // in place, no autograd; broadcasts src
  void fill_(double value);                   // in place, no autograd

  // ---- autograd -----------------------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool r);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
  void set_grad(const Tensor& g);
  void zero_grad();  // drops .grad (PyTorch set_to_none=True semantics)
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  void retain_grad();
  // Backpropagates from this tensor. Without `grad` the tensor must hold one element.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  // ---- arithmetic sugar (see core/ops.h for the full functional API) ---------------------------
  Tensor operator-() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);

// Result metadata shared by ops: wrap storage in a new contiguous tensor.
Tensor make_tensor(std::shared_ptr<Storage> storage, const Shape& shape, const Shape& strides,
                   int64_t offset, DType dtype, Device device);

// Normalises a possibly negative dimension index against `ndim`, naming `op` on error.
int64_t wrap_dim(int64_t d, int64_t ndim, const char* op);

// ---- template definitions -----------------------------------------------------------------
template <class T>
T* Tensor::data_ptr() const {
  HMER_CHECK(defined(), "data_ptr: undefined tensor");
  HMER_CHECK(dtype_of<T>::value == dtype(), "data_ptr: tensor is ", dtype_name(dtype()),
             " but ", dtype_name(dtype_of<T>::value), " was requested");
  return static_cast<T*>(storage() ? storage()->data() : nullptr) + offset();
}

}  // namespace hmer
