#include "kernels/cuda/elementwise.h"

#include <algorithm>
#include <initializer_list>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/cuda/runtime.h"

namespace hmer::cuda {

namespace {

constexpr int kMaxDims = 8;
constexpr int kThreads = 256;
// Grid-stride loops cover any n; more blocks than this only adds scheduling overhead.
constexpr int64_t kMaxBlocks = 65535;

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// Maps a row-major linear index of the (merged) iteration shape to an element offset. Passed to
// kernels by value, so it lives in the kernel's parameter space: no allocation, no copy per launch.
struct Indexer {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  __device__ __forceinline__ int64_t operator()(int64_t i) const {
    int64_t off = 0;
    // The outermost dimension needs no modulo: i is already below its size there.
    for (int d = ndim - 1; d > 0; --d) {
      const int64_t s = sizes[d];
      off += (i % s) * strides[d];
      i /= s;
    }
    return ndim > 0 ? off + i * strides[0] : 0;
  }
};

// Drops size-1 dimensions and merges neighbours that are contiguous with each other in every
// operand, so a contiguous tensor becomes one dimension of stride 1 and broadcasting over the inner
// dimensions costs one division per merged dimension, not per original one.
template <size_t N>
void make_indexers(const char* op, const Shape& shape, const Shape* const (&strides)[N], Indexer (&out)[N]) {
  // Built innermost first, reversed at the end.
  Shape sizes;
  std::vector<Shape> st(N);
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    bool merge = !sizes.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = (*strides[k])[d] == st[k].back() * sizes.back();
    if (merge) {
      sizes.back() *= shape[d];
    } else {
      sizes.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) st[k].push_back((*strides[k])[d]);
    }
  }
  HMER_CHECK(sizes.size() <= static_cast<size_t>(kMaxDims), op, ": CUDA kernels support at most ", kMaxDims,
             " dimensions after merging contiguous ones; shape ", shape_str(shape), " needs ", sizes.size());
  const int nd = static_cast<int>(sizes.size());
  for (size_t k = 0; k < N; ++k) {
    out[k].ndim = nd;
    for (int i = 0; i < nd; ++i) {
      out[k].sizes[i] = sizes[nd - 1 - i];
      out[k].strides[i] = st[k][nd - 1 - i];
    }
  }
}

// Every defined tensor must be on one CUDA device; returns that device's index.
int check_cuda_tensors(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (t == nullptr || !t->defined()) continue;
    HMER_CHECK(t->device().is_cuda(), op, ": expected a CUDA tensor, got ", t->str());
    if (first == nullptr) first = t;
    HMER_CHECK(t->device() == first->device(), op, ": expected all tensors on one device, got ", first->str(),
               " and ", t->str());
  }
  HMER_CHECK(first != nullptr, op, ": no tensor given");
  return first->device().index;
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  HMER_CHECK(a.shape() == b.shape(), op, ": shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
             " differ");
}

void check_contiguous(const char* op, const Tensor& t) {
  HMER_CHECK(t.is_contiguous(), op, ": the CUDA kernel expects a contiguous tensor, got ", t.str());
}

// ---- kernels --------------------------------------------------------------------------------

#define HMER_GRID_STRIDE_LOOP(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);   \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// The op is selected on the device by the same visit_unary/visit_binary switch the CPU loops use,
// once per thread outside the loop, so each case is a loop specialised for its functor. (Visiting
// on the host instead would call host lambdas from the __host__ __device__ visitor, which nvcc
// warns about.)
template <class T>
__global__ void unary_forward_kernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, T param, int64_t n) {
  visit_unary(op, [&](auto f) {
    HMER_GRID_STRIDE_LOOP(i, n) { y[i] = f.fwd(x[i], param); }
    return 0;
  });
}

template <class T>
__global__ void unary_backward_kernel(UnaryOp op, const T* __restrict__ x, const T* __restrict__ y,
                                      const T* __restrict__ gy, T* __restrict__ gx, T param, int64_t n) {
  visit_unary(op, [&](auto f) {
    HMER_GRID_STRIDE_LOOP(i, n) { gx[i] = f.bwd(x ? x[i] : T(0), y ? y[i] : T(0), gy[i], param); }
    return 0;
  });
}

template <class T>
__global__ void binary_kernel(BinaryOp op, const T* __restrict__ a, Indexer ia, const T* __restrict__ b,
                              Indexer ib, T* __restrict__ out, int64_t n) {
  visit_binary(op, [&](auto f) {
    HMER_GRID_STRIDE_LOOP(i, n) { out[i] = f(a[ia(i)], b[ib(i)]); }
    return 0;
  });
}

template <class S, class D>
__global__ void copy_kernel(const S* __restrict__ src, Indexer is, D* __restrict__ dst, Indexer id, int64_t n) {
  HMER_GRID_STRIDE_LOOP(i, n) { dst[id(i)] = static_cast<D>(src[is(i)]); }
}

template <class T>
__global__ void fill_kernel(T* __restrict__ dst, Indexer id, T value, int64_t n) {
  HMER_GRID_STRIDE_LOOP(i, n) { dst[id(i)] = value; }
}

template <class T>
__global__ void dropout_mask_kernel(uint64_t seed, uint64_t offset, float p, T* __restrict__ mask, int64_t n) {
  HMER_GRID_STRIDE_LOOP(i, n) {
    mask[i] = philox_uniform_float(seed, offset, static_cast<uint64_t>(i)) >= p ? T(1) : T(0);
  }
}

#undef HMER_GRID_STRIDE_LOOP

}  // namespace

// ---- entry points ---------------------------------------------------------------------------

void unary_forward(UnaryOp op, const Tensor& x, const Tensor& y, double param) {
  const char* name = unary_op_name(op);
  DeviceGuard guard(check_cuda_tensors(name, {&x, &y}));
  check_same_shape(name, x, y);
  check_contiguous(name, x);
  check_contiguous(name, y);
  const int64_t n = x.numel();
  if (n == 0) return;
  HMER_DISPATCH_FLOATING(x.dtype(), name, [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t p = static_cast<scalar_t>(param);
    unary_forward_kernel<scalar_t><<<blocks_for(n), kThreads>>>(op, xp, yp, p, n);
  });
  HMER_CUDA_CHECK_LAUNCH();
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx, double param) {
  const char* name = unary_op_name(op);
  DeviceGuard guard(check_cuda_tensors(name, {&x, &y, &gy, &gx}));
  check_same_shape(name, gy, gx);
  check_contiguous(name, gy);
  check_contiguous(name, gx);
  for (const Tensor* t : {&x, &y}) {
    if (!t->defined()) continue;
    check_same_shape(name, *t, gy);
    check_contiguous(name, *t);
  }
  const int64_t n = gy.numel();
  if (n == 0) return;
  HMER_DISPATCH_FLOATING(gy.dtype(), name, [&] {
    const scalar_t* xp = x.defined() ? x.data_ptr<scalar_t>() : nullptr;
    const scalar_t* yp = y.defined() ? y.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gp = gy.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    const scalar_t p = static_cast<scalar_t>(param);
    unary_backward_kernel<scalar_t><<<blocks_for(n), kThreads>>>(op, xp, yp, gp, gxp, p, n);
  });
  HMER_CUDA_CHECK_LAUNCH();
}

void binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* name = binary_op_name(op);
  DeviceGuard guard(check_cuda_tensors(name, {&a, &b, &out}));
  check_same_shape(name, a, out);
  check_same_shape(name, b, out);
  check_contiguous(name, out);
  const int64_t n = out.numel();
  if (n == 0) return;
  Indexer idx[2];
  const Shape* const strides[2] = {&a.strides(), &b.strides()};
  make_indexers(name, out.shape(), strides, idx);
  HMER_DISPATCH_ALL(out.dtype(), name, [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    scalar_t* op_ = out.data_ptr<scalar_t>();
    binary_kernel<scalar_t><<<blocks_for(n), kThreads>>>(op, ap, idx[0], bp, idx[1], op_, n);
  });
  HMER_CUDA_CHECK_LAUNCH();
}

void copy(const Tensor& src, const Tensor& dst) {
  DeviceGuard guard(check_cuda_tensors("copy", {&src, &dst}));
  check_same_shape("copy", src, dst);
  const int64_t n = dst.numel();
  if (n == 0) return;
  Indexer idx[2];
  const Shape* const strides[2] = {&src.strides(), &dst.strides()};
  make_indexers("copy", dst.shape(), strides, idx);
  HMER_DISPATCH_ALL(src.dtype(), "copy", [&] {
    using S = scalar_t;
    const S* sp = src.data_ptr<S>();
    HMER_DISPATCH_ALL(dst.dtype(), "copy", [&] {
      using D = scalar_t;
      copy_kernel<S, D><<<blocks_for(n), kThreads>>>(sp, idx[0], dst.data_ptr<D>(), idx[1], n);
    });
  });
  HMER_CUDA_CHECK_LAUNCH();
}

void fill(const Tensor& dst, double value) {
  DeviceGuard guard(check_cuda_tensors("fill", {&dst}));
  const int64_t n = dst.numel();
  if (n == 0) return;
  Indexer idx[1];
  const Shape* const strides[1] = {&dst.strides()};
  make_indexers("fill", dst.shape(), strides, idx);
  HMER_DISPATCH_ALL(dst.dtype(), "fill", [&] {
    fill_kernel<scalar_t><<<blocks_for(n), kThreads>>>(dst.data_ptr<scalar_t>(), idx[0],
                                                        static_cast<scalar_t>(value), n);
  });
  HMER_CUDA_CHECK_LAUNCH();
}

void copy_between_devices(const Tensor& src, const Tensor& dst) {
  const char* name = "copy_between_devices";
  HMER_CHECK(src.defined() && dst.defined(), name, ": undefined tensor");
  HMER_CHECK(src.dtype() == dst.dtype(), name, ": dtypes differ: ", src.str(), " to ", dst.str());
  check_same_shape(name, src, dst);
  check_contiguous(name, src);
  check_contiguous(name, dst);
  const Device sd = src.device(), dd = dst.device();
  HMER_CHECK(sd.is_cuda() || dd.is_cuda(), name, ": neither ", src.str(), " nor ", dst.str(), " is on CUDA");
  const size_t nbytes = static_cast<size_t>(src.numel()) * dtype_size(src.dtype());
  if (nbytes == 0) return;
  const void* sp = src.raw_data_ptr();
  void* dp = dst.raw_data_ptr();
  if (sd.is_cpu()) {
    DeviceGuard guard(dd.index);
    HMER_CUDA_CHECK(cudaMemcpy(dp, sp, nbytes, cudaMemcpyHostToDevice));
  } else if (dd.is_cpu()) {
    DeviceGuard guard(sd.index);
    HMER_CUDA_CHECK(cudaMemcpy(dp, sp, nbytes, cudaMemcpyDeviceToHost));
  } else if (sd.index == dd.index) {
    DeviceGuard guard(sd.index);
    HMER_CUDA_CHECK(cudaMemcpy(dp, sp, nbytes, cudaMemcpyDeviceToDevice));
  } else {
    HMER_CUDA_CHECK(cudaMemcpyPeer(dp, dd.index, sp, sd.index, nbytes));
  }
}

void dropout_mask(uint64_t seed, uint64_t offset, float p, const Tensor& out_mask) {
  DeviceGuard guard(check_cuda_tensors("dropout_mask", {&out_mask}));
  check_contiguous("dropout_mask", out_mask);
  const int64_t n = out_mask.numel();
  if (n == 0) return;
  HMER_DISPATCH_FLOATING(out_mask.dtype(), "dropout_mask", [&] {
    dropout_mask_kernel<scalar_t><<<blocks_for(n), kThreads>>>(seed, offset, p, out_mask.data_ptr<scalar_t>(), n);
  });
  HMER_CUDA_CHECK_LAUNCH();
}

}  // namespace hmer::cuda
