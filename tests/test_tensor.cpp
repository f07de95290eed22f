// Tensor metadata, views, autograd mechanics and error messages.
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/allocator.h"
#include "core/ops.h"
#include "tests/testing.h"

using namespace hmer;
using hmer::test::all_close;

TEST(Tensor, CreationAndMetadata) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_EQ(t.dim(), 2);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.dtype(), DType::Float32);
  EXPECT_EQ(t.str(), "float32[2, 3] cpu");
  Tensor s = Tensor::scalar(2.5);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_FLOAT_EQ(s.item<float>(), 2.5f);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = t.t();
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.shape(), (Shape{3, 2}));
  EXPECT_EQ(tt.contiguous().to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor n = t.narrow(1, 1, 2);
  EXPECT_EQ(n.to_vector<float>(), (std::vector<float>{1, 2, 4, 5}));
  n.fill_(9);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 9, 9, 3, 9, 9}));
  Tensor e = Tensor::from_vector(std::vector<float>{1, 2}, {2, 1}).expand({2, 3});
  EXPECT_EQ(e.strides(), (Shape{1, 0}));
  EXPECT_EQ(e.to_vector<float>(), (std::vector<float>{1, 1, 1, 2, 2, 2}));
  Tensor sl = Tensor::arange(10, DType::Float32).slice(0, 1, 9, 3);
  EXPECT_EQ(sl.to_vector<float>(), (std::vector<float>{1, 4, 7}));
  EXPECT_EQ(t.reshape({3, 2}).shape(), (Shape{3, 2}));
  EXPECT_EQ(t.reshape({-1}).shape(), (Shape{6}));
  EXPECT_EQ(tt.reshape({6}).to_vector<float>(), (std::vector<float>{0, 3, 9, 9, 9, 9}));
}

TEST(Tensor, ErrorsNameTheOp) {
  Tensor a = Tensor::zeros({2, 3});
  Tensor b = Tensor::zeros({4, 3});
  try {
    add(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add: shapes [2, 3] and [4, 3] cannot be broadcast"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(matmul(a, b), Error);
  EXPECT_THROW(a.view({4, 2}), Error);
  EXPECT_THROW(add(a, Tensor::zeros({2, 3}, DType::Float64)), Error);
  EXPECT_THROW(exp(Tensor::zeros({2}, DType::Int64)), Error);
  EXPECT_THROW(Tensor::zeros({2}, DType::Float32, Device::cuda()), Error);
}

TEST(Autograd, ChainAndAccumulation) {
  Tensor x = Tensor::from_vector(std::vector<double>{1.0, 2.0, 3.0}, {3});
  x.set_requires_grad(true);
  Tensor y = sum(mul(x, x));  // dy/dx = 2x
  y.backward(Tensor(), /*retain_graph=*/true);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 4, 6}));
  y.backward();  // accumulates
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, 8, 12}));
  EXPECT_THROW(y.backward(), Error);  // graph freed without retain_graph
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradAndDetach) {
  Tensor x = Tensor::ones({2}, DType::Float64);
  x.set_requires_grad(true);
  {
    NoGradGuard g;
    Tensor y = mul(x, 2.0);
    EXPECT_FALSE(y.requires_grad());
  }
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.storage() == x.storage());
  Tensor z = sum(mul(x, 3.0));
  EXPECT_TRUE(z.requires_grad());
  EXPECT_FALSE(z.is_leaf());
}

TEST(Autograd, GivenGradientAndRetainGrad) {
  Tensor x = Tensor::from_vector(std::vector<double>{1.0, -2.0}, {2});
  x.set_requires_grad(true);
  Tensor h = mul(x, 3.0);
  h.retain_grad();
  Tensor y = exp(h);
  y.backward(Tensor::from_vector(std::vector<double>{1.0, 2.0}, {2}));
  const auto gh = h.grad().to_vector<double>();
  EXPECT_NEAR(gh[0], std::exp(3.0), 1e-12);
  EXPECT_NEAR(gh[1], 2 * std::exp(-6.0), 1e-12);
  EXPECT_NEAR(x.grad().to_vector<double>()[0], 3 * std::exp(3.0), 1e-12);
  EXPECT_THROW(y.backward(Tensor::ones({3}, DType::Float64)), Error);
}

TEST(Autograd, DiamondGraphVisitsEachNodeOnce) {
  Tensor x = Tensor::from_vector(std::vector<double>{0.5}, {1});
  x.set_requires_grad(true);
  Tensor a = tanh(x);
  Tensor y = add(mul(a, a), a);  // d/dx = (2a + 1)(1 - a^2)
  y.backward(Tensor::ones({1}, DType::Float64));
  const double av = std::tanh(0.5);
  EXPECT_NEAR(x.grad().item<double>(), (2 * av + 1) * (1 - av * av), 1e-12);
}

TEST(Autograd, LeafUsedByManyOpsGetsEveryContribution) {
  // The leaf's AccumulateGrad node is created after its first consumer's node; every
  // contribution must still arrive before it runs.
  Tensor h = Tensor::from_vector(std::vector<double>{1.0, 2.0}, {1, 2});
  h.set_requires_grad(true);
  Tensor eye = Tensor::from_vector(std::vector<double>{1, 0, 0, 1}, {2, 2});
  Tensor out = add(linear(h, eye), mul(h, 2.0));
  out.backward(Tensor::ones({1, 2}, DType::Float64));
  EXPECT_EQ(h.grad().to_vector<double>(), (std::vector<double>{3.0, 3.0}));
  Tensor x = Tensor::from_vector(std::vector<double>{1.0}, {1});
  x.set_requires_grad(true);
  add(mul(x, 3.0), mul(x, 2.0)).backward(Tensor::ones({1}, DType::Float64));
  EXPECT_EQ(x.grad().item<double>(), 5.0);
}

// The CLI's malloc policy without tcmalloc (core/allocator.h): glibc must accept both settings, and
// memory freed afterwards must still come back for new tensors (values intact).
TEST(HostMemory, KeepFreedHostMemoryIsAcceptedByGlibc) {
#if defined(__GLIBC__)
  EXPECT_TRUE(keep_freed_host_memory());
#endif
  for (int round = 0; round < 3; ++round) {
    Tensor big = Tensor::full({64, 1024, 1024}, 1.5);  // 256 MiB: above glibc's default mmap threshold
    EXPECT_EQ(big.data_ptr<float>()[big.numel() - 1], 1.5f);
  }
}
