// CUDA backend: CPU-vs-CUDA parity of every element-wise kernel (forward and backward of each unary
// op, broadcasting binary ops, strided dtype-converting copy, fill, host<->device copies) and of the
// dropout mask, which must match the CPU's Philox stream bit for bit. These need a GPU and skip
// without one. The tests at the top run everywhere: a build without CUDA, or a CUDA build on a
// machine without a device, must refuse CUDA tensors with a clear error instead of crashing.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "kernels/cpu/elementwise.h"
#include "tests/testing.h"
#ifdef HMER_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/runtime.h"
#endif

using namespace hmer;
using namespace hmer::test;

namespace {

// Runs f, which must throw hmer::Error containing `what`.
template <class F>
::testing::AssertionResult throws_with(F&& f, const std::string& what) {
  try {
    f();
  } catch (const Error& e) {
    if (std::string(e.what()).find(what) == std::string::npos)
      return ::testing::AssertionFailure() << "error does not mention '" << what << "': " << e.what();
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-hmer exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw (expected '" << what << "')";
}

// ---- everywhere ---------------------------------------------------------------------------------

#ifdef HMER_WITH_CUDA
// Declared first so it runs before anything calls cuda_is_available(): the first CUDA tensor of a
// program must work without an explicit initialisation call (get_allocator initialises lazily).
TEST(CudaAvailability, FirstCudaTensorNeedsNoExplicitInit) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "no CUDA device";
  }
  Tensor t = Tensor::full({3}, 1.5, DType::Float32, Device::cuda());
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1.5f, 1.5f, 1.5f}));
}
#endif

TEST(CudaAvailability, WithoutCudaCompiledCudaTensorsAreRefused) {
  if (cuda_is_compiled()) GTEST_SKIP() << "this build has the CUDA backend";
  EXPECT_FALSE(cuda_is_available());
  EXPECT_TRUE(throws_with([] { Tensor::empty({2, 3}, DType::Float32, Device::cuda()); }, "without CUDA"));
  EXPECT_TRUE(throws_with([] { Tensor::zeros({2}, DType::Float64, Device::cuda(1)); }, "without CUDA"));
  EXPECT_TRUE(throws_with([] { Tensor::ones({4}).to(Device::cuda()); }, "without CUDA"));
}

TEST(CudaAvailability, CompiledWithoutDeviceReportsZeroDevices) {
  if (!cuda_is_compiled()) GTEST_SKIP() << "built without CUDA";
  if (cuda_is_available()) GTEST_SKIP() << "a CUDA device is present";
#ifdef HMER_WITH_CUDA
  // Probing must not throw on a machine without a GPU or driver, however often it is asked.
  EXPECT_EQ(hmer::cuda::device_count(), 0);
  EXPECT_EQ(hmer::cuda::device_count(), 0);
  EXPECT_FALSE(cuda_is_available());
  EXPECT_TRUE(throws_with([] { Tensor::empty({2, 3}, DType::Float32, Device::cuda()); }, "no CUDA device"));
  EXPECT_TRUE(throws_with([] { Tensor::ones({4}).to(Device::cuda()); }, "no CUDA device"));
  // The libraries are linked and loadable without a device.
  EXPECT_GT(hmer::cuda::runtime_version(), 0);
  EXPECT_EQ(hmer::cuda::cudnn_version() / 10000, CUDNN_MAJOR) << "cuDNN " << hmer::cuda::cudnn_version();
#endif
}

#ifdef HMER_WITH_CUDA

// ---- GPU parity ---------------------------------------------------------------------------------

#define HMER_REQUIRE_GPU() \
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device"

const Device kGpu = Device::cuda(0);

Tensor to_gpu(const Tensor& t) { return t.detach().to(kGpu); }
Tensor to_cpu(const Tensor& t) { return t.detach().to(Device::cpu()); }

// Same dtype, shape and bytes.
::testing::AssertionResult bit_equal(const Tensor& actual_any, const Tensor& expected) {
  const Tensor actual = contiguous_copy(to_cpu(actual_any));
  const Tensor e = contiguous_copy(expected);
  if (actual.dtype() != e.dtype() || actual.shape() != e.shape())
    return ::testing::AssertionFailure() << "got " << actual.str() << ", expected " << e.str();
  const size_t n = static_cast<size_t>(e.numel()) * dtype_size(e.dtype());
  if (n && std::memcmp(actual.raw_data_ptr(), e.raw_data_ptr(), n) != 0) {
    const std::vector<double> a = actual.to_vector<double>(), b = e.to_vector<double>();
    for (size_t i = 0; i < a.size(); ++i)
      if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0)
        return ::testing::AssertionFailure() << "first difference at flat index " << i << ": " << a[i] << " vs "
                                             << b[i];
  }
  return ::testing::AssertionSuccess();
}

struct UnaryCase {
  const char* name;
  UnaryOp op;
  double param;
  double lo, hi;
  // Only IEEE-exact operations (+ - * / sqrt, compares): CUDA must match the CPU bit for bit when
  // nvcc does not contract a*b+c into an FMA (--fmad=false). exp/log/tanh/pow differ by ~1-2 ulp
  // between CUDA's libdevice and glibc.
  bool exact;
};

const UnaryCase kUnary[] = {
    {"neg", UnaryOp::Neg, 0, -3, 3, true},
    {"exp", UnaryOp::Exp, 0, -5, 5, false},
    {"log", UnaryOp::Log, 0, 0.01, 10, false},
    {"sqrt", UnaryOp::Sqrt, 0, 0.01, 10, true},
    {"square", UnaryOp::Square, 0, -3, 3, true},
    {"abs", UnaryOp::Abs, 0, -3, 3, true},
    {"pow3", UnaryOp::Pow, 3.0, -2, 2, false},
    {"pow2", UnaryOp::Pow, 2.0, -2, 2, true},
    {"pow1", UnaryOp::Pow, 1.0, -2, 2, true},
    {"pow0", UnaryOp::Pow, 0.0, 0.1, 2, false},
    {"pow_half", UnaryOp::Pow, 0.5, 0.01, 4, false},
    {"pow_neg1.5", UnaryOp::Pow, -1.5, 0.1, 4, false},
    {"relu", UnaryOp::Relu, 0, -3, 3, true},
    {"sigmoid", UnaryOp::Sigmoid, 0, -8, 8, false},
    {"tanh", UnaryOp::Tanh, 0, -4, 4, false},
    {"hard_sigmoid_keras2", UnaryOp::HardSigmoidKeras2, 0, -4, 4, true},
    {"hard_sigmoid_keras3", UnaryOp::HardSigmoidKeras3, 0, -4, 4, true},
};

// Random values in [lo, hi) plus the points where the piecewise ops switch branch (when in range).
Tensor unary_input(const UnaryCase& c, DType dtype, uint64_t seed) {
  std::vector<double> v = rand_tensor({5000}, seed, c.lo, c.hi).to_vector<double>();
  for (double s : {0.0, -0.0, -3.0, 3.0, -2.5, 2.5, 1.0})
    if (s >= c.lo && s < c.hi) v.push_back(s);
  return Tensor::from_vector<double>(v, {static_cast<int64_t>(v.size())}).to(dtype);
}

TEST(CudaElementwise, UnaryForwardAndBackwardMatchCpu) {
  HMER_REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    for (const UnaryCase& c : kUnary) {
      const std::string what = std::string(c.name) + "." + dtype_name(dtype);
      const Tensor x = unary_input(c, dtype, 17);
      const Tensor g = rand_tensor(x.shape(), 18, 0.5, 1.5, dtype);
      Tensor y_cpu = Tensor::empty(x.shape(), dtype), gx_cpu = Tensor::empty(x.shape(), dtype);
      cpu::unary_forward(c.op, x, y_cpu, c.param);
      cpu::unary_backward(c.op, x, y_cpu, g, gx_cpu, c.param);

      const Tensor xg = to_gpu(x), yg_in = to_gpu(y_cpu), gg = to_gpu(g);
      Tensor y_gpu = Tensor::empty(x.shape(), dtype, kGpu), gx_gpu = Tensor::empty(x.shape(), dtype, kGpu);
      hmer::cuda::unary_forward(c.op, xg, y_gpu, c.param);
      // Backward from the same y on both sides, so only the backward formula is compared.
      hmer::cuda::unary_backward(c.op, xg, yg_in, gg, gx_gpu, c.param);

      EXPECT_TRUE(all_close(to_cpu(y_gpu), y_cpu, tol::kElementwise, "cuda." + what + ".out"));
      EXPECT_TRUE(all_close(to_cpu(gx_gpu), gx_cpu, tol::kElementwise, "cuda." + what + ".grad_x"));
      if (c.exact) {
        EXPECT_TRUE(bit_equal(y_gpu, y_cpu)) << what << ".out";
        EXPECT_TRUE(bit_equal(gx_gpu, gx_cpu)) << what << ".grad_x";
      }
    }
  }
}

// Through the public ops and autograd: unary ops on CUDA tensors give the CPU's values and grads.
TEST(CudaElementwise, OpsAndAutogradOnCudaTensors) {
  HMER_REQUIRE_GPU();
  const Tensor x = rand_tensor({3, 4, 5}, 3, -2, 2, DType::Float32);
  const Tensor gy = rand_tensor({3, 4, 5}, 4, 0.5, 1.5, DType::Float32);
  Tensor xc = x.clone().detach().set_requires_grad(true);
  Tensor xg = to_gpu(x).set_requires_grad(true);
  Tensor yc = tanh(sigmoid(xc) * xc);
  Tensor yg = tanh(sigmoid(xg) * xg);
  EXPECT_TRUE(yg.device().is_cuda());
  yc.backward(gy);
  yg.backward(to_gpu(gy));
  EXPECT_TRUE(all_close(to_cpu(yg), yc, tol::kElementwise, "cuda.ops_chain.out"));
  ASSERT_TRUE(xg.grad().defined());
  EXPECT_TRUE(xg.grad().device().is_cuda());
  EXPECT_TRUE(all_close(to_cpu(xg.grad()), xc.grad(), tol::kElementwise, "cuda.ops_chain.grad_x"));
}

TEST(CudaElementwise, BinaryBroadcastAndStridedMatchCpu) {
  HMER_REQUIRE_GPU();
  using View = std::function<Tensor(const Tensor&)>;
  const View same = [](const Tensor& t) { return t; };
  struct Pair {
    const char* name;
    Tensor a;   // CPU float64 base of the left operand
    View view;  // applied to the base on each device, so both sides see the same strides
    Tensor b;   // right operand (divisors kept away from 0)
  };
  const std::vector<Pair> pairs = {
      {"same_shape", rand_tensor({4, 5}, 1), same, rand_tensor({4, 5}, 2, 0.5, 2)},
      {"bcast_3d", rand_tensor({3, 1, 5}, 3), same, rand_tensor({4, 1}, 4, 0.5, 2)},
      {"bcast_scalar", rand_tensor({2, 3, 4}, 5), same, Tensor::full({}, 0.75, DType::Float64)},
      {"scalar_lhs", Tensor::full({}, -1.25, DType::Float64), same, rand_tensor({7}, 6, 0.5, 2)},
      {"transposed", rand_tensor({6, 8}, 7), [](const Tensor& t) { return t.t(); }, rand_tensor({8, 6}, 8, 0.5, 2)},
      {"stepped_and_bcast", rand_tensor({6, 8}, 9), [](const Tensor& t) { return t.slice(1, 1, 8, 2); },
       rand_tensor({4}, 10, 0.5, 2)},
      {"bias_nchw", rand_tensor({2, 3, 4, 5}, 11), same, rand_tensor({3, 1, 1}, 12, 0.5, 2)},
      {"permuted_4d", rand_tensor({2, 3, 4, 5}, 13), [](const Tensor& t) { return t.permute({0, 2, 3, 1}); },
       rand_tensor({3}, 14, 0.5, 2)},
      {"empty", rand_tensor({0, 3}, 15), same, rand_tensor({3}, 16, 0.5, 2)},
  };
  for (DType dtype : {DType::Float32, DType::Float64, DType::Int64}) {
    // int64 operands: scale up so products and quotients are not all zero; divisors stay >= 5.
    const double scale = dtype == DType::Int64 ? 10.0 : 1.0;
    for (const Pair& p : pairs) {
      const Tensor a_base = (p.a * scale).to(dtype), b = (p.b * scale).to(dtype);
      const Tensor a_cpu = p.view(a_base), a_gpu = p.view(to_gpu(a_base)), b_gpu = to_gpu(b);
      ASSERT_EQ(a_cpu.strides(), a_gpu.strides()) << p.name;
      const Shape shape = broadcast_shapes(a_cpu.shape(), b.shape(), "test");
      for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
        const std::string what = std::string(p.name) + "." + binary_op_name(op) + "." + dtype_name(dtype);
        Tensor out_cpu = Tensor::empty(shape, dtype);
        cpu::binary_forward(op, a_cpu.expand(shape), b.expand(shape), out_cpu);
        Tensor out_gpu = Tensor::empty(shape, dtype, kGpu);
        hmer::cuda::binary_forward(op, a_gpu.expand(shape), b_gpu.expand(shape), out_gpu);
        // + - * / are correctly rounded on both devices: bit-exact.
        EXPECT_TRUE(bit_equal(out_gpu, out_cpu)) << what;
        if (is_floating(dtype)) {
          EXPECT_TRUE(all_close(to_cpu(out_gpu), out_cpu, tol::kElementwise, "cuda." + what));
        }
      }
    }
  }
}

TEST(CudaElementwise, CopyStridedAndDtypeConverting) {
  HMER_REQUIRE_GPU();
  const Tensor base = rand_tensor({6, 10}, 21, -50, 50);
  for (DType src_t : {DType::Float32, DType::Float64, DType::Int64}) {
    for (DType dst_t : {DType::Float32, DType::Float64, DType::Int64}) {
      const std::string what = std::string(dtype_name(src_t)) + "->" + dtype_name(dst_t);
      const Tensor src_cpu = base.to(src_t);
      const Tensor src_gpu = to_gpu(src_cpu);
      // Views of the source: transposed, stepped, broadcast, 4-d permuted.
      const std::vector<std::pair<Tensor, Tensor>> views = {
          {src_cpu.t(), src_gpu.t()},
          {src_cpu.slice(1, 1, 10, 3), src_gpu.slice(1, 1, 10, 3)},
          {src_cpu.narrow(0, 2, 1).expand({5, 10}), src_gpu.narrow(0, 2, 1).expand({5, 10})},
          {src_cpu.view({2, 3, 5, 2}).permute({3, 0, 2, 1}), src_gpu.view({2, 3, 5, 2}).permute({3, 0, 2, 1})},
      };
      for (const auto& [vc, vg] : views) {
        Tensor dc = Tensor::empty(vc.shape(), dst_t);
        cpu::copy(vc, dc);
        Tensor dg = Tensor::empty(vg.shape(), dst_t, kGpu);
        hmer::cuda::copy(vg, dg);
        EXPECT_TRUE(bit_equal(dg, dc)) << what << " from " << vc.str();
      }
      // Strided destination: write into every other column of a larger tensor.
      Tensor dst_cpu = Tensor::zeros({6, 20}, dst_t), dst_gpu = Tensor::zeros({6, 20}, dst_t, kGpu);
      cpu::copy(src_cpu, dst_cpu.slice(1, 0, 20, 2));
      hmer::cuda::copy(src_gpu, dst_gpu.slice(1, 0, 20, 2));
      EXPECT_TRUE(bit_equal(dst_gpu, dst_cpu)) << what << " into a strided view";
    }
  }
}

TEST(CudaElementwise, CopyRejectsMoreThanEightUnmergeableDims) {
  HMER_REQUIRE_GPU();
  const Shape s(9, 2);
  Tensor src = Tensor::zeros(s, DType::Float32, kGpu).permute({8, 7, 6, 5, 4, 3, 2, 1, 0});
  Tensor dst = Tensor::empty(src.shape(), DType::Float32, kGpu);
  EXPECT_TRUE(throws_with([&] { hmer::cuda::copy(src, dst); }, "at most 8"));
  // Contiguous 9-d tensors merge into one dimension and are fine.
  Tensor a = Tensor::ones(s, DType::Float32, kGpu);
  Tensor b = Tensor::empty(s, DType::Float32, kGpu);
  hmer::cuda::copy(a, b);
  EXPECT_TRUE(bit_equal(b, Tensor::ones(s)));
}

TEST(CudaElementwise, FillContiguousAndStrided) {
  HMER_REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64, DType::Int64}) {
    Tensor c = Tensor::zeros({5, 7}, dtype), g = Tensor::zeros({5, 7}, dtype, kGpu);
    cpu::fill(c, -2.75);
    hmer::cuda::fill(g, -2.75);
    EXPECT_TRUE(bit_equal(g, c)) << dtype_name(dtype);
    cpu::fill(c.slice(1, 1, 7, 3), 9.5);
    hmer::cuda::fill(g.slice(1, 1, 7, 3), 9.5);
    cpu::fill(c.select(0, 3), 1e10);
    hmer::cuda::fill(g.select(0, 3), 1e10);
    EXPECT_TRUE(bit_equal(g, c)) << dtype_name(dtype) << " strided";
    Tensor e = Tensor::empty({0, 3}, dtype, kGpu);
    hmer::cuda::fill(e, 1.0);  // no launch, no error
  }
  EXPECT_TRUE(bit_equal(Tensor::full({3, 3}, 0.5, DType::Float32, kGpu), Tensor::full({3, 3}, 0.5)));
}

TEST(CudaElementwise, CopyBetweenDevices) {
  HMER_REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64, DType::Int64}) {
    const Tensor h = (rand_tensor({33, 17}, 31, -1e6, 1e6)).to(dtype);
    Tensor d = Tensor::empty(h.shape(), dtype, kGpu);
    hmer::cuda::copy_between_devices(h, d);
    Tensor d2 = Tensor::empty(h.shape(), dtype, kGpu);
    hmer::cuda::copy_between_devices(d, d2);
    Tensor back = Tensor::empty(h.shape(), dtype);
    hmer::cuda::copy_between_devices(d2, back);
    EXPECT_TRUE(bit_equal(back, h)) << dtype_name(dtype);
  }
  // Tensor::to handles 0-d, empty and non-contiguous sources through the same path.
  EXPECT_TRUE(bit_equal(to_gpu(Tensor::scalar(3.5)), Tensor::scalar(3.5)));
  EXPECT_TRUE(bit_equal(to_gpu(Tensor::empty({0, 2})), Tensor::empty({0, 2})));
  const Tensor m = rand_tensor({4, 6}, 32);
  EXPECT_TRUE(bit_equal(to_gpu(m.t()), contiguous_copy(m.t())));
  EXPECT_TRUE(throws_with([&] { hmer::cuda::copy_between_devices(m, Tensor::empty({4, 6}, DType::Float32, kGpu)); },
                          "dtypes differ"));
  EXPECT_TRUE(throws_with([&] { hmer::cuda::copy_between_devices(m.t(), Tensor::empty({6, 4}, DType::Float64, kGpu)); },
                          "contiguous"));
}

// The mask is a pure function of (seed, offset, i): CPU and CUDA agree exactly, for offsets that are
// not a multiple of the 4-word Philox block and for sizes that end mid-block.
TEST(CudaElementwise, DropoutMaskMatchesCpuPhilox) {
  HMER_REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    for (uint64_t offset : {0ull, 6ull, (1ull << 33) + 1}) {
      for (float p : {0.0f, 0.2f, 0.5f, 1.0f}) {
        const int64_t n = 100003;
        const uint64_t seed = 20211024;
        Tensor expected = Tensor::empty({n}, DType::Float64);
        double* e = expected.data_ptr<double>();
        for (int64_t i = 0; i < n; ++i) e[i] = philox_uniform_float(seed, offset, static_cast<uint64_t>(i)) >= p;
        Tensor mask = Tensor::empty({n}, dtype, kGpu);
        hmer::cuda::dropout_mask(seed, offset, p, mask);
        EXPECT_TRUE(bit_equal(mask, expected.to(dtype)))
            << dtype_name(dtype) << " offset " << offset << " p " << p;
      }
    }
  }
  // A 4-d mask is the flat mask reshaped (element i in row-major order).
  Tensor m4 = Tensor::empty({2, 3, 5, 7}, DType::Float32, kGpu), m1 = Tensor::empty({210}, DType::Float32, kGpu);
  hmer::cuda::dropout_mask(5, 12, 0.3f, m4);
  hmer::cuda::dropout_mask(5, 12, 0.3f, m1);
  EXPECT_TRUE(bit_equal(m4.reshape({210}), to_cpu(m1)));
}

TEST(CudaElementwise, KernelsRejectCpuAndMixedDeviceTensors) {
  HMER_REQUIRE_GPU();
  const Tensor c = Tensor::zeros({4});
  Tensor g = Tensor::zeros({4}, DType::Float32, kGpu);
  EXPECT_TRUE(throws_with([&] { hmer::cuda::unary_forward(UnaryOp::Exp, c, g, 0); }, "CUDA tensor"));
  EXPECT_TRUE(throws_with([&] { hmer::cuda::copy(c, g); }, "CUDA tensor"));
  EXPECT_TRUE(throws_with([&] { add(c, g); }, "one device"));
}

TEST(CudaRuntime, AllocatorCountsBytes) {
  HMER_REQUIRE_GPU();
  Allocator* a = get_allocator(kGpu);
  const AllocatorStats before = a->stats();
  {
    Tensor t = Tensor::empty({1000}, DType::Float64, kGpu);
    EXPECT_EQ(a->stats().allocated_bytes, before.allocated_bytes + 8000);
    EXPECT_GE(a->stats().peak_bytes, before.allocated_bytes + 8000);
  }
  EXPECT_EQ(a->stats().allocated_bytes, before.allocated_bytes);
  EXPECT_GT(hmer::cuda::cudnn_version(), 0);
  EXPECT_NE(hmer::cuda::cublas_handle(), nullptr);
  EXPECT_NE(hmer::cuda::cudnn_handle(), nullptr);
  EXPECT_EQ(hmer::cuda::cublas_handle(), hmer::cuda::cublas_handle());
}

#endif  // HMER_WITH_CUDA

}  // namespace
