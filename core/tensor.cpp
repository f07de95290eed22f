#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sstream>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/cpu/elementwise.h"
#ifdef HMER_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace hmer {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size(), 1);
  for (int64_t d = static_cast<int64_t>(s.size()) - 2; d >= 0; --d) st[d] = st[d + 1] * std::max<int64_t>(s[d + 1], 1);
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  const int64_t n = std::max<int64_t>(ndim, 1);
  HMER_CHECK(d >= -n && d < n, op, ": dimension ", d, " out of range for a ", ndim, "-d tensor");
  return d < 0 ? d + n : d;
}

Tensor make_tensor(std::shared_ptr<Storage> storage, const Shape& shape, const Shape& strides, int64_t offset,
                   DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype;
  impl->device = device;
  return Tensor(std::move(impl));
}

namespace {
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
  return make_tensor(base.storage(), shape, strides, offset, base.dtype(), base.device());
}
void check_shape(const Shape& shape, const char* op) {
  for (int64_t v : shape) HMER_CHECK(v >= 0, op, ": negative dimension in shape ", shape_str(shape));
}
}  // namespace

TensorImpl& Tensor::impl() const {
  HMER_CHECK(impl_ != nullptr, "operation on an undefined Tensor");
  return *impl_;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, "empty");
  const int64_t n = shape_numel(shape);
  auto storage = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype), device);
  return make_tensor(std::move(storage), shape, contiguous_strides(shape), 0, dtype, device);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

Tensor Tensor::arange(int64_t n, DType dtype) {
  Tensor t = empty({n}, DType::Float64);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<double>(i);
  return dtype == DType::Float64 ? t : t.to(dtype);
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  HMER_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value);
  if (!values.empty()) std::memcpy(t.data_ptr<T>(), values.data(), values.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from_vector<float>(const std::vector<float>&, const Shape&);
template Tensor Tensor::from_vector<double>(const std::vector<double>&, const Shape&);
template Tensor Tensor::from_vector<int64_t>(const std::vector<int64_t>&, const Shape&);

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape()[d] == 1) continue;
    if (strides()[d] != expected) return false;
    expected *= shape()[d];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " " + device().str();
}

void* Tensor::raw_data_ptr() const {
  return static_cast<char*>(storage() ? storage()->data() : nullptr) + offset() * dtype_size(dtype());
}

template <class T>
T Tensor::item() const {
  HMER_CHECK(numel() == 1, "item: tensor ", str(), " has ", numel(), " elements, expected 1");
  Tensor c = device().is_cpu() ? *this : to(Device::cpu());
  if (c.dtype() != dtype_of<T>::value) c = c.detach().to(dtype_of<T>::value);
  return *c.data_ptr<T>();
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;

double Tensor::item_double() const { return item<double>(); }

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = detach();
  if (!c.device().is_cpu()) c = c.to(Device::cpu());
  if (c.dtype() != dtype_of<T>::value) c = c.to(dtype_of<T>::value);
  c = contiguous_copy(c);
  const T* p = c.data_ptr<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

// ---- views ------------------------------------------------------------------------------------

namespace {
// Shape with one -1 resolved, checked against numel.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      HMER_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      HMER_CHECK(out[i] >= 0, op, ": invalid shape ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    HMER_CHECK(known > 0 && numel % known == 0, op, ": shape ", shape_str(shape), " is invalid for ", numel,
               " elements");
    out[infer] = numel / known;
  }
  HMER_CHECK(shape_numel(out) == numel, op, ": shape ", shape_str(shape), " is invalid for input of ", numel,
             " elements");
  return out;
}

// Strides for viewing (old_shape, old_strides) as new_shape without a copy, if possible
// (same algorithm as PyTorch's computeStride). Returns false if a copy is needed.
bool view_strides(const Shape& old_shape, const Shape& old_strides, const Shape& new_shape, Shape& out) {
  out.assign(new_shape.size(), 1);
  if (shape_numel(old_shape) == 0 || old_shape.empty() || new_shape.empty()) {
    out = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t td = static_cast<int64_t>(old_shape.size()) - 1; td >= 0; --td) {
    tensor_numel *= old_shape[td];
    if (td == 0 || (old_shape[td - 1] != 1 && old_strides[td - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (td > 0) {
        chunk_base_stride = old_strides[td - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}
}  // namespace

Tensor Tensor::view(const Shape& shape_in) const {
  const Shape shape = infer_shape(shape_in, numel(), "view");
  Shape st;
  HMER_CHECK(view_strides(this->shape(), strides(), shape, st), "view: cannot view ", str(), " as ",
             shape_str(shape), " without a copy (use reshape)");
  Tensor out = make_view(*this, shape, st, offset());
  const Shape in_shape = this->shape();
  return record_fn(out, "ViewBackward", {*this}, [in_shape](const Tensor& g) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
}

Tensor Tensor::reshape(const Shape& shape_in) const {
  const Shape shape = infer_shape(shape_in, numel(), "reshape");
  Shape st;
  if (view_strides(this->shape(), strides(), shape, st)) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  HMER_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: got ", dims.size(), " dims for ", str());
  Shape sh(dims.size()), st(dims.size());
  std::vector<int64_t> inverse(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    HMER_CHECK(!seen[d], "permute: repeated dimension ", d);
    seen[d] = true;
    sh[i] = shape()[d];
    st[i] = strides()[d];
    inverse[d] = static_cast<int64_t>(i);
  }
  Tensor out = make_view(*this, sh, st, offset());
  return record_fn(out, "PermuteBackward", {*this}, [inverse](const Tensor& g) {
    return std::vector<Tensor>{g.permute(inverse)};
  });
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> dims(dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(a, dim(), "transpose")], dims[wrap_dim(b, dim(), "transpose")]);
  return permute(dims);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  HMER_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape sh = shape(), st = strides();
  sh[d] = (end - start + step - 1) / step;
  st[d] = strides()[d] * step;
  Tensor out = make_view(*this, sh, st, offset() + start * strides()[d]);
  const Shape in_shape = shape();
  return record_fn(out, "SliceBackward", {*this}, [in_shape, d, start, end, step](const Tensor& g) {
    Tensor gi = Tensor::zeros(in_shape, g.dtype(), g.device());
    gi.slice(d, start, end, step).copy_(g);
    return std::vector<Tensor>{gi};
  });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  HMER_CHECK(start >= 0 && length >= 0 && start + length <= shape()[d], "narrow: start ", start, " length ", length,
             " out of range for dim ", d, " of ", str());
  return slice(d, start, start + length, 1);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t n = shape()[d];
  HMER_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d, " of ", str());
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& shape_in) const {
  const int64_t nd = static_cast<int64_t>(shape_in.size());
  HMER_CHECK(nd >= dim(), "expand: cannot expand ", str(), " to ", shape_str(shape_in));
  Shape sh(nd), st(nd);
  for (int64_t i = nd - 1; i >= 0; --i) {
    const int64_t j = i - (nd - dim());
    const int64_t want = shape_in[i];
    if (j >= 0) {
      const int64_t have = shape()[j];
      if (want == -1 || want == have) {
        sh[i] = have;
        st[i] = strides()[j];
      } else {
        HMER_CHECK(have == 1, "expand: the size ", have, " at dim ", j, " of ", str(), " must match ", want,
                   " or be 1 (target ", shape_str(shape_in), ")");
        sh[i] = want;
        st[i] = 0;
      }
    } else {
      HMER_CHECK(want >= 0, "expand: -1 not allowed for new leading dim in ", shape_str(shape_in));
      sh[i] = want;
      st[i] = 0;
    }
  }
  Tensor out = make_view(*this, sh, st, offset());
  const Shape in_shape = shape();
  return record_fn(out, "ExpandBackward", {*this}, [in_shape](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, in_shape)};
  });
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape sh = shape();
  sh.insert(sh.begin() + d, 1);
  return view(sh);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[d] != 1) return *this;
  Shape sh = shape();
  sh.erase(sh.begin() + d);
  return view(sh);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim, dim(), "flatten");
  end_dim = wrap_dim(end_dim, dim(), "flatten");
  Shape sh(shape().begin(), shape().begin() + start_dim);
  int64_t m = 1;
  for (int64_t i = start_dim; i <= end_dim; ++i) m *= shape()[i];
  sh.push_back(m);
  sh.insert(sh.end(), shape().begin() + end_dim + 1, shape().end());
  return reshape(sh);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

// ---- copies -----------------------------------------------------------------------------------

Tensor Tensor::clone() const {
  Tensor out = contiguous_copy(*this);
  return record_fn(out, "CloneBackward", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = Tensor::empty(shape(), target, device());
  out.copy_(*this);
  if (!is_floating(target) || !is_floating(dtype())) return out;
  const DType src = dtype();
  return record_fn(out, "ToDtypeBackward", {*this}, [src](const Tensor& g) { return std::vector<Tensor>{g.to(src)}; });
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor out = Tensor::empty(shape(), dtype(), target);
  out.copy_(*this);
  const Device src = device();
  return record_fn(out, "ToDeviceBackward", {*this}, [src](const Tensor& g) { return std::vector<Tensor>{g.to(src)}; });
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

void Tensor::copy_(const Tensor& src_in) {
  Tensor src = src_in.detach();
  if (src.shape() != shape()) src = src.expand(shape());
  if (src.device() != device()) {
#ifdef HMER_WITH_CUDA
    // Cross-device: stage through a contiguous tensor of the destination dtype on the source side.
    Tensor staged = src.dtype() == dtype() && src.is_contiguous() ? src : Tensor::empty(shape(), dtype(), src.device());
    if (!staged.is_same(src)) staged.copy_(src);
    Tensor landing = is_contiguous() ? *this : Tensor::empty(shape(), dtype(), device());
    cuda::copy_between_devices(staged, landing);
    if (!landing.is_same(*this)) copy_(landing);
    return;
#else
    fail("copy_: cannot copy from ", src.device().str(), " to ", device().str(), ": hmer was built without CUDA");
#endif
  }
  HMER_DISPATCH_DEVICE("copy_", device(), cpu::copy(src, *this), cuda::copy(src, *this));
}

void Tensor::fill_(double value) {
  HMER_DISPATCH_DEVICE("fill_", device(), cpu::fill(*this, value), cuda::fill(*this, value));
}

// ---- autograd -------------------------------------------------------------------------------

Tensor& Tensor::set_requires_grad(bool r) {
  HMER_CHECK(!r || is_floating(dtype()), "requires_grad: only floating tensors can require gradients, got ",
             str());
  HMER_CHECK(is_leaf() || r, "requires_grad: cannot clear requires_grad on a non-leaf tensor (use detach())");
  impl().requires_grad = r;
  return *this;
}

void Tensor::set_grad(const Tensor& g) {
  if (!g.defined()) {
    impl().grad.reset();
    return;
  }
  HMER_CHECK(g.shape() == shape() && g.dtype() == dtype() && g.device() == device(), "set_grad: gradient ", g.str(),
             " does not match tensor ", str());
  impl().grad = g.impl_ptr();
}

void Tensor::zero_grad() { impl().grad.reset(); }

void Tensor::retain_grad() {
  HMER_CHECK(requires_grad(), "retain_grad: tensor does not require grad");
  if (is_leaf()) return;
  impl().retains_grad = true;
  grad_fn()->retained_output = impl_ptr();
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  run_backward(*this, grad, retain_graph);
}

Tensor Tensor::operator-() const { return neg(*this); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double b) { return add(a, b); }
Tensor operator-(const Tensor& a, double b) { return add(a, -b); }
Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
Tensor operator/(const Tensor& a, double b) { return div(a, b); }
Tensor operator+(double a, const Tensor& b) { return add(b, a); }
Tensor operator-(double a, const Tensor& b) { return rsub(b, a); }
Tensor operator*(double a, const Tensor& b) { return mul(b, a); }

}  // namespace hmer
