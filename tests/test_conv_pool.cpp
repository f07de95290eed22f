// conv2d, max_pool2d, avg_pool2d: float64 finite differences, float32 parity with PyTorch 1.13
// (tools/reference/ref_conv_pool.py), PyTorch's output-size rules, errors, and thread-count invariance.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu/conv2d.h"
#include "tests/testing.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace hmer;
using namespace hmer::test;

namespace {

const char* const kArea = "conv_pool";

// Mirrors CONV_CASES in tools/reference/ref_conv_pool.py (checked against each case's __opts file).
struct ConvCase {
  const char* name;
  Shape x;
  int64_t out_channels;
  Pair kernel, stride, padding, dilation;
  bool bias;
  Conv2dOptions options() const { return Conv2dOptions{stride, padding, dilation}; }
  Shape w() const { return {out_channels, x[1], kernel[0], kernel[1]}; }
};

const ConvCase kConvCases[] = {
    {"k3p1", {2, 5, 9, 11}, 4, {3, 3}, {1, 1}, {1, 1}, {1, 1}, true},
    {"stem7s2", {2, 1, 33, 47}, 6, {7, 7}, {2, 2}, {3, 3}, {1, 1}, false},
    {"cov11", {2, 1, 13, 17}, 5, {11, 11}, {1, 1}, {5, 5}, {1, 1}, true},
    {"k1", {2, 6, 5, 7}, 3, {1, 1}, {1, 1}, {0, 0}, {1, 1}, false},
    {"k1s2_n3", {3, 4, 7, 9}, 5, {1, 1}, {2, 2}, {0, 0}, {1, 1}, true},
    {"dil2", {2, 3, 10, 12}, 4, {3, 3}, {1, 1}, {2, 2}, {2, 2}, true},
    {"k5s2", {2, 3, 11, 14}, 4, {5, 5}, {2, 2}, {1, 1}, {1, 1}, true},
    {"asym", {2, 3, 9, 13}, 4, {3, 5}, {1, 2}, {1, 2}, {2, 1}, true},
    {"single", {1, 4, 6, 8}, 3, {3, 3}, {1, 1}, {1, 1}, {1, 1}, true},
    {"dense96", {2, 96, 6, 10}, 24, {3, 3}, {1, 1}, {1, 1}, {1, 1}, false},
};

// Mirrors POOL_CASES in tools/reference/ref_conv_pool.py.
struct PoolCase {
  const char* name;
  bool is_max;
  Shape x;
  Pair kernel, stride, padding;
  bool ceil_mode, count_include_pad;
  Pool2dOptions options() const { return Pool2dOptions{kernel, stride, padding, ceil_mode, count_include_pad}; }
  Tensor run(const Tensor& x) const { return is_max ? max_pool2d(x, options()) : avg_pool2d(x, options()); }
};

const PoolCase kPoolCases[] = {
    {"avg2_ceil", false, {2, 3, 7, 9}, {2, 2}, {2, 2}, {0, 0}, true, true},
    {"max2_ceil", true, {2, 3, 7, 9}, {2, 2}, {2, 2}, {0, 0}, true, true},
    {"max3s2p1_ceil", true, {2, 3, 8, 11}, {3, 3}, {2, 2}, {1, 1}, true, true},
    {"max3s2p1", true, {2, 3, 8, 11}, {3, 3}, {2, 2}, {1, 1}, false, true},
    {"avg3s2p1_ceil_incl", false, {2, 3, 8, 11}, {3, 3}, {2, 2}, {1, 1}, true, true},
    {"avg3s2p1_ceil_excl", false, {2, 3, 8, 11}, {3, 3}, {2, 2}, {1, 1}, true, false},
    {"avg3s2p1_incl", false, {2, 3, 8, 11}, {3, 3}, {2, 2}, {1, 1}, false, true},
    {"max2s2p1_ceil", true, {2, 2, 5, 6}, {2, 2}, {2, 2}, {1, 1}, true, true},
    {"avg2s2p1_ceil_incl", false, {2, 2, 5, 6}, {2, 2}, {2, 2}, {1, 1}, true, true},
    {"avg2s2p1_ceil_excl", false, {2, 2, 5, 6}, {2, 2}, {2, 2}, {1, 1}, true, false},
};

Tensor leaf(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor t = rand_tensor(s, seed, lo, hi);
  t.set_requires_grad(true);
  return t;
}

// float64 leaf whose values are a shuffled even grid in [-2, 2): all distinct and at least 4/n apart,
// far more than the finite-difference step, so no max-pool window has a (near) tie.
Tensor distinct_leaf(const Shape& s, uint64_t seed) {
  const int64_t n = shape_numel(s);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(seed));
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = (static_cast<double>(perm[i]) + 0.5) / static_cast<double>(n) * 4.0 - 2.0;
  Tensor t = Tensor::from_vector<double>(v, s);
  t.set_requires_grad(true);
  return t;
}

::testing::AssertionResult opts_match(const std::string& name, const std::vector<int64_t>& expected) {
  const std::vector<int64_t> got = ref(kArea, name + "__opts").to_vector<int64_t>();
  if (got == expected) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << name << ": the C++ case table disagrees with ref_conv_pool.py's options";
}

// Runs f, expecting an hmer::Error whose message contains every needle.
template <class F>
void expect_error(const F& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected an hmer::Error containing '" << *needles.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

// Sets the OpenMP thread count for a scope.
class ThreadCount {
 public:
  explicit ThreadCount(int n) {
#ifdef _OPENMP
    prev_ = omp_get_max_threads();
    omp_set_num_threads(n);
#endif
  }
  ~ThreadCount() {
#ifdef _OPENMP
    omp_set_num_threads(prev_);
#endif
  }

 private:
  int prev_ = 1;
};

}  // namespace

// ---- conv2d ---------------------------------------------------------------------------------------

TEST(Conv2dGradcheck, AllCases) {
  uint64_t seed = 10;
  for (const ConvCase& c : kConvCases) {
    std::vector<Tensor> in = {leaf(c.x, ++seed), leaf(c.w(), ++seed)};
    if (c.bias) in.push_back(leaf({c.out_channels}, ++seed));
    const Conv2dOptions o = c.options();
    EXPECT_TRUE(gradcheck(
        [o](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor(), o); }, in))
        << c.name;
  }
}

TEST(Conv2dGradcheck, NonContiguousInputAndPartialGrads) {
  // x arrives as a transposed view; only some inputs require grad.
  Tensor xt = leaf({2, 3, 8, 6}, 1);
  Tensor w = leaf({4, 3, 3, 3}, 2);
  Tensor b = rand_tensor({4}, 3);
  const Conv2dOptions o{{2, 1}, {1, 1}, {1, 1}};
  EXPECT_TRUE(gradcheck([o, b](const std::vector<Tensor>& t) { return conv2d(t[0].transpose(2, 3), t[1], b, o); },
                        {xt, w}));
  Tensor wc = rand_tensor({4, 3, 3, 3}, 2);
  EXPECT_TRUE(gradcheck([o, wc](const std::vector<Tensor>& t) { return conv2d(t[0], wc, Tensor(), o); },
                        {leaf({2, 3, 6, 8}, 4)}));
}

TEST(Conv2d, OnlyRequestedGradsAreProduced) {
  Tensor x = rand_tensor({2, 3, 6, 7}, 1), w = rand_tensor({4, 3, 3, 3}, 2), b = rand_tensor({4}, 3);
  w.set_requires_grad(true);
  sum(conv2d(x, w, b, {{1, 1}, {1, 1}, {1, 1}})).backward();
  EXPECT_TRUE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(b.grad().defined());

  Tensor x2 = leaf({2, 3, 6, 7}, 1), w2 = rand_tensor({4, 3, 3, 3}, 2), b2 = leaf({4}, 3);
  sum(conv2d(x2, w2, b2)).backward();
  EXPECT_TRUE(x2.grad().defined());
  EXPECT_TRUE(b2.grad().defined());
  EXPECT_FALSE(w2.grad().defined());
  // d(sum y)/db = number of output positions per image times the batch
  EXPECT_DOUBLE_EQ(b2.grad().to_vector<double>()[0], 2.0 * 4 * 5);

  Tensor y = conv2d(rand_tensor({1, 3, 6, 7}, 4), w2);
  EXPECT_FALSE(y.requires_grad());
}

TEST(Conv2dParity, AllCases) {
  for (const ConvCase& c : kConvCases) {
    const std::string n = c.name;
    const Conv2dOptions o = c.options();
    ASSERT_TRUE(opts_match(n, {o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1]}));
    Tensor x = ref(kArea, n + "__x"), w = ref(kArea, n + "__w");
    Tensor b = c.bias ? ref(kArea, n + "__b") : Tensor();
    ASSERT_EQ(x.shape(), c.x) << n;
    ASSERT_EQ(w.shape(), c.w()) << n;
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    if (c.bias) b.set_requires_grad(true);
    Tensor y = conv2d(x, w, b, o);
    EXPECT_TRUE(all_close(y, ref(kArea, n + "__out"), tol::kConv, "conv2d." + n + ".out"));
    y.backward(ref(kArea, n + "__grad_out"));
    EXPECT_TRUE(all_close(x.grad(), ref(kArea, n + "__grad_x"), tol::kConvGrad, "conv2d." + n + ".grad_x"));
    EXPECT_TRUE(all_close(w.grad(), ref(kArea, n + "__grad_w"), tol::kConvGrad, "conv2d." + n + ".grad_w"));
    if (c.bias) {
      EXPECT_TRUE(all_close(b.grad(), ref(kArea, n + "__grad_b"), tol::kConvGrad, "conv2d." + n + ".grad_b"));
    }
  }
}

TEST(Conv2dErrors, ShapesDtypesOptions) {
  const Tensor x = rand_tensor({2, 3, 8, 8}, 1, -1, 1, DType::Float32);
  const Tensor w = rand_tensor({4, 3, 3, 3}, 2, -1, 1, DType::Float32);
  expect_error([&] { conv2d(rand_tensor({3, 8, 8}, 1, -1, 1, DType::Float32), w); }, {"conv2d", "[3, 8, 8]"});
  expect_error([&] { conv2d(x, rand_tensor({4, 3, 3}, 2, -1, 1, DType::Float32)); }, {"conv2d", "weight", "[4, 3, 3]"});
  expect_error([&] { conv2d(x, rand_tensor({4, 5, 3, 3}, 2, -1, 1, DType::Float32)); },
               {"conv2d", "[4, 5, 3, 3]", "[2, 3, 8, 8]", "channels"});
  expect_error([&] { conv2d(x, w, rand_tensor({5}, 3, -1, 1, DType::Float32)); }, {"conv2d", "bias", "[5]"});
  expect_error([&] { conv2d(x, w, rand_tensor({4, 1}, 3, -1, 1, DType::Float32)); }, {"conv2d", "bias", "[4, 1]"});
  const Tensor xi = Tensor::zeros({2, 3, 8, 8}, DType::Int64), wi = Tensor::zeros({4, 3, 3, 3}, DType::Int64);
  expect_error([&] { conv2d(xi, wi); }, {"conv2d", "int64"});
  expect_error([&] { conv2d(x, rand_tensor({4, 3, 3, 3}, 2)); }, {"conv2d", "float32", "float64"});
  expect_error([&] { conv2d(x, w, Tensor(), {{0, 1}, {0, 0}, {1, 1}}); }, {"conv2d", "stride"});
  expect_error([&] { conv2d(x, w, Tensor(), {{1, 1}, {-1, 0}, {1, 1}}); }, {"conv2d", "padding"});
  expect_error([&] { conv2d(x, w, Tensor(), {{1, 1}, {0, 0}, {1, 0}}); }, {"conv2d", "dilation"});
  // 3x3 input, 5x5 kernel, no padding: empty output
  expect_error([&] { conv2d(rand_tensor({1, 3, 3, 3}, 1), rand_tensor({2, 3, 5, 5}, 2)); },
               {"conv2d", "[1, 3, 3, 3]", "[2, 3, 5, 5]"});
  // dilation 3 turns a 3x3 kernel into 7x7
  expect_error([&] { conv2d(rand_tensor({1, 3, 6, 6}, 1), rand_tensor({2, 3, 3, 3}, 2), Tensor(), {{1, 1}, {0, 0}, {3, 3}}); },
               {"conv2d", "dilation"});
}

// A CROHME-sized batch: the result must not depend on the thread count. Each image is computed by the
// same single-threaded GEMM whatever the split, so the forward and grad_input are bitwise equal to a
// one-image-at-a-time loop on one thread; grad_weight's cross-image sum is regrouped per thread.
// Batch 5 splits unevenly (2 + 3 images) across two threads.
TEST(Conv2dThreads, BatchMatchesSingleImageLoop) {
  const Tensor x8 = rand_tensor({8, 24, 30, 120}, 1, -1, 1, DType::Float32);
  const Tensor gy8 = rand_tensor({8, 16, 30, 120}, 4, -1, 1, DType::Float32);
  struct Layer {
    Shape w;
    Conv2dOptions o;
  };
  const Layer layers[] = {{{16, 24, 3, 3}, {{1, 1}, {1, 1}, {1, 1}}}, {{16, 24, 1, 1}, {}}};
  for (const int64_t batch : {8, 5}) {
    const Tensor x = contiguous_copy(x8.narrow(0, 0, batch));
    const Tensor gy = contiguous_copy(gy8.narrow(0, 0, batch));
    for (const Layer& layer : layers) {
      const Tensor w = rand_tensor(layer.w, 2, -0.1, 0.1, DType::Float32);
      const Tensor b = rand_tensor({layer.w[0]}, 3, -1, 1, DType::Float32);
      const std::string k = "N" + std::to_string(batch) + "." + std::to_string(layer.w[2]) + "x" +
                            std::to_string(layer.w[3]);
      Tensor loop_y, loop_gx;
      {
        ThreadCount one(1);
        std::vector<Tensor> ys, gxs;
        for (int64_t i = 0; i < batch; ++i) {
          Tensor xi = contiguous_copy(x.narrow(0, i, 1));
          xi.set_requires_grad(true);
          Tensor yi = conv2d(xi, w, b, layer.o);
          yi.backward(contiguous_copy(gy.narrow(0, i, 1)));
          ys.push_back(yi.detach());
          gxs.push_back(xi.grad());
        }
        loop_y = cat(ys, 0);
        loop_gx = cat(gxs, 0);
      }
      Tensor gw_one, gb_one;
      for (int threads : {1, 2}) {
        ThreadCount tc(threads);
        Tensor xl = x.detach().clone(), wl = w.detach().clone(), bl = b.detach().clone();
        xl.set_requires_grad(true);
        wl.set_requires_grad(true);
        bl.set_requires_grad(true);
        Tensor y = conv2d(xl, wl, bl, layer.o);
        const std::string tag = k + " threads=" + std::to_string(threads);
        EXPECT_TRUE(bitwise_equal(y, loop_y, "forward " + tag));
        y.backward(gy);
        EXPECT_TRUE(bitwise_equal(xl.grad(), loop_gx, "grad_x " + tag));
        if (threads == 1) {
          gw_one = wl.grad();
          gb_one = bl.grad();
        } else {
          EXPECT_TRUE(all_close(wl.grad(), gw_one, tol::kConvGrad, "conv2d.threads." + k + ".grad_w"));
          EXPECT_TRUE(bitwise_equal(bl.grad(), gb_one, "grad_b " + tag));
        }
      }
    }
  }
}

// One image of a pointwise conv on two threads splits its columns between them (greedy decoding's
// DenseNet 1x1 convs); the numbers must be those of the float64 conv, with a bias and for a
// channel-slice input, and grad paths are unaffected.
TEST(Conv2dThreads, SingleImagePointwiseSplitsColumns) {
  for (const int64_t first : {0, 4}) {
    const Tensor wide = rand_tensor({1, 40 + 2 * first, 30, 120}, 41, -1, 1, DType::Float32);
    const Tensor x = first > 0 ? wide.narrow(1, first, 40) : wide;
    const Tensor w = rand_tensor({96, 40, 1, 1}, 42, -0.2, 0.2, DType::Float32);
    const Tensor b = rand_tensor({96}, 43, -1, 1, DType::Float32);
    const Tensor ref = conv2d(x.to(DType::Float64), w.to(DType::Float64), b.to(DType::Float64));
    for (int threads : {1, 2}) {
      ThreadCount tc(threads);
      const std::string tag = "slice " + std::to_string(first) + " threads " + std::to_string(threads);
      EXPECT_TRUE(all_close(conv2d(x, w, b), ref.to(DType::Float32), tol::kConv, "conv2d.pointwise_split " + tag));
    }
  }
  // The stem's one-channel 7x7 stride-2 conv at batch 1 splits its column matrix by rows instead.
  const Tensor img = rand_tensor({1, 1, 60, 90}, 44, 0, 1, DType::Float32);
  const Tensor ws = rand_tensor({48, 1, 7, 7}, 45, -0.2, 0.2, DType::Float32);
  const Conv2dOptions stem{{2, 2}, {3, 3}, {1, 1}};
  const Tensor ref = conv2d(img.to(DType::Float64), ws.to(DType::Float64), Tensor(), stem);
  for (int threads : {1, 2}) {
    ThreadCount tc(threads);
    EXPECT_TRUE(all_close(conv2d(img, ws, Tensor(), stem), ref.to(DType::Float32), tol::kConv,
                          "conv2d.stem_rows threads " + std::to_string(threads)));
  }
}

// A channel slice of a wider buffer (ChannelConcat's results) is read in place: images lie further
// apart than C·H·W but each is one block. The numbers must be those of the contiguous copy, and the
// conv must not allocate a copy of its input (only its output).
TEST(Conv2d, ReadsAChannelSliceInPlace) {
  for (const int64_t batch : {1, 3, 8}) {
    for (const int64_t k : {1, 3}) {
      for (const int64_t first : {0, 5}) {
        const std::string tag =
            "N" + std::to_string(batch) + " k" + std::to_string(k) + " channels from " + std::to_string(first);
        const Tensor buffer = rand_tensor({batch, 40, 6, 9}, 11, -1, 1, DType::Float32);
        const Tensor w = rand_tensor({7, 24, k, k}, 12, -0.2, 0.2, DType::Float32);
        const Tensor gy = rand_tensor({batch, 7, 6, 9}, 13, -1, 1, DType::Float32);
        const Conv2dOptions o{{1, 1}, {k / 2, k / 2}, {1, 1}};
        Tensor slice = buffer.narrow(1, first, 24);
        EXPECT_EQ(slice.is_contiguous(), batch == 1) << tag;
        Tensor copy = contiguous_copy(slice);
        slice.set_requires_grad(true);
        copy.set_requires_grad(true);
        Tensor wa = w.detach().clone(), wb = w.detach().clone();
        wa.set_requires_grad(true);
        wb.set_requires_grad(true);
        Allocator* cpu_alloc = get_allocator(Device::cpu());
        const int64_t live_before = cpu_alloc->stats().allocated_bytes;
        Tensor ya = conv2d(slice, wa, Tensor(), o);
        EXPECT_EQ(cpu_alloc->stats().allocated_bytes - live_before, ya.numel() * 4) << tag << ": the input was copied";
        Tensor yb = conv2d(copy, wb, Tensor(), o);
        EXPECT_TRUE(bitwise_equal(ya, yb, "forward " + tag));
        ya.backward(gy);
        yb.backward(gy);
        EXPECT_TRUE(bitwise_equal(wa.grad(), wb.grad(), "grad_w " + tag));
        EXPECT_TRUE(bitwise_equal(slice.grad(), copy.grad(), "grad_x " + tag));
      }
    }
  }
  // float64 finite differences through an inner slice view
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& t) { return conv2d(t[0].narrow(1, 1, 3), t[1], Tensor(), Conv2dOptions{}); },
      {leaf({3, 5, 4, 6}, 14), leaf({2, 3, 1, 1}, 15)}));
}

// The direct 3x3 kernel (float32, stride 1, pad 1, <= 64 output channels; kernels/cpu/conv2d_3x3.h)
// against the float64 im2col path on the same numbers, and against the float32 im2col path it
// replaces, over shapes that hit its edges: widths below, at and past one vector and one column
// group, a single row or column, output channel counts that are not multiples of its 12- and
// 8-channel blocks, one input channel, channel-slice inputs, and grads requested one at a time.
TEST(Conv2dDirect3x3, MatchesIm2colInFloat64AndFloat32) {
  ASSERT_TRUE(cpu::direct_conv3x3_enabled());
  struct DirectCase {
    int64_t n, c, h, w, o;
    int64_t slice_from;  // > 0: x is channels [slice_from, slice_from + c) of a wider buffer
  };
  const DirectCase cases[] = {{2, 96, 6, 10, 24, 0}, {1, 5, 1, 1, 1, 0},   {3, 7, 5, 33, 13, 0},
                              {2, 3, 9, 16, 64, 0},  {1, 1, 4, 17, 5, 0},  {2, 24, 3, 40, 24, 2},
                              {1, 12, 8, 31, 9, 0},  {2, 16, 2, 65, 30, 1}, {1, 40, 11, 7, 8, 0}};
  for (const DirectCase& c : cases) {
    const std::string tag = "N" + std::to_string(c.n) + " C" + std::to_string(c.c) + " " + std::to_string(c.h) +
                            "x" + std::to_string(c.w) + " O" + std::to_string(c.o) +
                            (c.slice_from > 0 ? " slice" : "");
    const Tensor wide = rand_tensor({c.n, c.c + 2 * c.slice_from, c.h, c.w}, 21, -1, 1, DType::Float32);
    const Tensor x32 = c.slice_from > 0 ? wide.narrow(1, c.slice_from, c.c) : wide;
    const Tensor w32 = rand_tensor({c.o, c.c, 3, 3}, 22, -0.3, 0.3, DType::Float32);
    const Tensor b32 = rand_tensor({c.o}, 23, -1, 1, DType::Float32);
    const Tensor gy32 = rand_tensor({c.n, c.o, c.h, c.w}, 24, -1, 1, DType::Float32);
    const Conv2dOptions o{{1, 1}, {1, 1}, {1, 1}};
    // 0: grads of x, w and b; 1: only x's; 2: only w's
    for (int wanted = 0; wanted < 3; ++wanted) {
      auto run = [&](DType dt, bool direct) {
        cpu::set_direct_conv3x3(direct);
        Tensor x = x32.to(dt).detach(), w = w32.to(dt).detach(), b = b32.to(dt).detach();
        if (c.slice_from > 0 && dt == DType::Float32) x = x32.detach();  // keep the strided view
        x.set_requires_grad(wanted != 2);
        w.set_requires_grad(wanted != 1);
        b.set_requires_grad(wanted == 0);
        Tensor y = conv2d(x, w, b, o);
        y.backward(gy32.to(dt));
        cpu::set_direct_conv3x3(true);
        return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), b.grad()};
      };
      const auto direct = run(DType::Float32, true);
      const auto im2col32 = run(DType::Float32, false);
      const auto ref64 = run(DType::Float64, true);  // float64 always takes im2col
      const char* names[] = {"out", "grad_x", "grad_w", "grad_b"};
      for (int k = 0; k < 4; ++k) {
        ASSERT_EQ(direct[k].defined(), ref64[k].defined()) << tag << " " << names[k];
        if (!direct[k].defined()) continue;
        const std::string what = std::string("conv2d.direct3x3.") + names[k] + " " + tag;
        EXPECT_TRUE(all_close(direct[k], ref64[k].to(DType::Float32), tol::kConv, what + " vs float64"));
        EXPECT_TRUE(all_close(direct[k], im2col32[k], tol::kConv, what + " vs float32 im2col"));
      }
    }
  }
}

// grad_weight of a conv with many column rows and few positions (the counting head's 684 -> 512 5x5
// and 3x3) is one GEMM per chunk of channels over all images side by side; one image at a time takes
// the per-image path. The batch's grad_weight must be the sum of the single images' (float64, so the
// two summation orders agree to rounding), including for a channel-slice input and an uneven last
// chunk of channels, and grad_x must be the per-image one bit for bit.
TEST(Conv2d, WideWeightGradSumsImagesInOneGemm) {
  for (const int64_t k : {3, 5}) {
    for (const int64_t first : {0, 3}) {
      const int64_t C = k == 5 ? 170 : 460, N = 3;  // C*k*k >= 4096 column rows
      const std::string tag = std::to_string(k) + "x" + std::to_string(k) + (first > 0 ? " slice" : "");
      const Tensor wide = rand_tensor({N, C + 2 * first, 4, 6}, 31);
      const Tensor x = first > 0 ? wide.narrow(1, first, C) : wide;
      const Tensor w = rand_tensor({7, C, k, k}, 32, -0.1, 0.1);
      const Tensor gy = rand_tensor({N, 7, 4, 6}, 33);
      const Conv2dOptions o{{1, 1}, {k / 2, k / 2}, {1, 1}};
      Tensor xb = x.detach(), wb = w.detach().clone();
      xb.set_requires_grad(true);
      wb.set_requires_grad(true);
      conv2d(xb, wb, Tensor(), o).backward(gy);
      Tensor gw_sum = Tensor::zeros(w.shape(), DType::Float64);
      std::vector<Tensor> gxs;
      for (int64_t n = 0; n < N; ++n) {
        Tensor xn = contiguous_copy(x.narrow(0, n, 1)), wn = w.detach().clone();
        xn.set_requires_grad(true);
        wn.set_requires_grad(true);
        conv2d(xn, wn, Tensor(), o).backward(contiguous_copy(gy.narrow(0, n, 1)));
        gw_sum = add(gw_sum, wn.grad());
        gxs.push_back(xn.grad());
      }
      EXPECT_TRUE(all_close(wb.grad(), gw_sum, Tol{1e-12, 1e-10}, "conv2d.wide_grad_w " + tag));
      EXPECT_TRUE(bitwise_equal(contiguous_copy(xb.grad()), cat(gxs, 0), "grad_x " + tag));
    }
  }
}

// ---- pooling ----------------------------------------------------------------------------------------

TEST(PoolOutputSize, HandComputed) {
  // (in, k, s, p, d, ceil) -> out
  EXPECT_EQ(pool_output_size(7, 2, 2, 0, 1, false), 3);
  EXPECT_EQ(pool_output_size(7, 2, 2, 0, 1, true), 4);   // CAN's transition: ceil(7/2)
  EXPECT_EQ(pool_output_size(8, 2, 2, 0, 1, true), 4);
  EXPECT_EQ(pool_output_size(8, 3, 2, 1, 1, false), 4);  // floor(7/2) + 1
  EXPECT_EQ(pool_output_size(8, 3, 2, 1, 1, true), 5);   // ceil(7/2) + 1; last start 8 < 8 + 1
  EXPECT_EQ(pool_output_size(11, 3, 2, 1, 1, true), 6);  // (11 + 2 - 3) / 2 + 1 exactly
  // ceil gives 4, but the 4th window would start at 6 = in + p (in the right padding): dropped.
  EXPECT_EQ(pool_output_size(5, 2, 2, 1, 1, true), 3);
  EXPECT_EQ(pool_output_size(5, 2, 2, 1, 1, false), 3);
  EXPECT_EQ(pool_output_size(6, 2, 2, 1, 1, true), 4);
  EXPECT_EQ(pool_output_size(1, 2, 2, 0, 1, true), 1);   // a single partial window
  EXPECT_EQ(pool_output_size(33, 7, 2, 3, 1, false), 17);  // CAN's stem conv
  EXPECT_EQ(pool_output_size(10, 3, 1, 2, 2, false), 10);  // dilated 3x3 keeps the size
  EXPECT_EQ(pool_output_size(12, 5, 2, 1, 1, false), 5);
  // Too small: the numerator is negative and rounds toward -inf, as PyTorch's div_rtn.
  EXPECT_EQ(pool_output_size(2, 5, 2, 0, 1, false), -1);
  EXPECT_EQ(pool_output_size(3, 5, 1, 0, 1, false), -1);
  EXPECT_THROW(pool_output_size(7, 2, 0, 0, 1, false), Error);
}

TEST(PoolGradcheck, AllCases) {
  uint64_t seed = 100;
  for (const PoolCase& c : kPoolCases) {
    EXPECT_TRUE(gradcheck([&c](const std::vector<Tensor>& t) { return c.run(t[0]); }, {distinct_leaf(c.x, ++seed)}))
        << c.name;
  }
}

TEST(PoolParity, AllCases) {
  for (const PoolCase& c : kPoolCases) {
    const std::string n = c.name;
    ASSERT_TRUE(opts_match(n, {c.kernel[0], c.kernel[1], c.stride[0], c.stride[1], c.padding[0], c.padding[1],
                               c.ceil_mode ? 1 : 0, c.count_include_pad ? 1 : 0}));
    Tensor x = ref(kArea, n + "__x");
    ASSERT_EQ(x.shape(), c.x) << n;
    x.set_requires_grad(true);
    Tensor y = c.run(x);
    const std::string op = c.is_max ? "max_pool2d." : "avg_pool2d.";
    EXPECT_TRUE(all_close(y, ref(kArea, n + "__out"), tol::kPool, op + n + ".out"));
    y.backward(ref(kArea, n + "__grad_out"));
    EXPECT_TRUE(all_close(x.grad(), ref(kArea, n + "__grad_x"), tol::kPool, op + n + ".grad_x"));
  }
}

TEST(Pool, CeilModeDivisorExample) {
  // can-model.md: a 3x3 input 1..9 under 2x2 ceil-mode average pooling gives [3, 4.5, 7.5, 9].
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  Pool2dOptions o;
  o.ceil_mode = true;
  EXPECT_EQ(avg_pool2d(x, o).to_vector<double>(), (std::vector<double>{3.0, 4.5, 7.5, 9.0}));
  EXPECT_EQ(max_pool2d(x, o).to_vector<double>(), (std::vector<double>{5, 6, 8, 9}));
  // Stride 0 means stride = kernel.
  o.ceil_mode = false;
  EXPECT_EQ(avg_pool2d(x, o).shape(), (Shape{1, 1, 1, 1}));
}

TEST(Pool, MaxTieRoutesToFirstMaximum) {
  // As PyTorch: the first maximum in row-major window order takes the whole gradient.
  Tensor x = Tensor::from_vector<double>({1, 3, 3, 3, 0, 2}, {1, 1, 2, 3});
  x.set_requires_grad(true);
  Pool2dOptions o;
  o.ceil_mode = true;
  Tensor y = max_pool2d(x, o);  // windows: cols {0, 1} and {2}
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{3, 3}));
  y.backward(Tensor::from_vector<double>({10, 20}, {1, 1, 1, 2}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 10, 20, 0, 0, 0}));
}

// The 2x2 stride-2 kernels (a fast path for whole windows, the general loops for a ceil-mode border)
// against a naive evaluation in PyTorch's order: bit for bit, on inputs full of ties, signed zeros,
// infinities and NaNs, odd and even sizes.
TEST(Pool, TwoByTwoBitIdenticalToNaiveWindows) {
  std::mt19937 rng(5);
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> pool_values = {-0.0, 0.0, 1.0, 1.0, 2.5, -3.0, inf, -inf, nan, 0.75, -0.125};
  for (const DType dt : {DType::Float32, DType::Float64})
    for (const Shape& shape : {Shape{2, 3, 7, 9}, Shape{1, 2, 6, 8}, Shape{1, 1, 1, 5}})
      for (const bool ceil_mode : {false, true}) {
        const int64_t H = shape[2], W = shape[3], planes = shape[0] * shape[1];
        if (!ceil_mode && H < 2) continue;  // no whole window: an error (PoolErrors)
        std::vector<double> xv(static_cast<size_t>(planes * H * W));
        for (double& v : xv) v = pool_values[rng() % pool_values.size()];
        // Whole windows of -0 (an average of +0, as PyTorch's sum from 0 gives).
        std::fill(xv.begin(), xv.begin() + std::min<int64_t>(2, H) * W, -0.0);
        Pool2dOptions o;
        o.ceil_mode = ceil_mode;
        const int64_t OH = ceil_mode ? (H + 1) / 2 : H / 2, OW = ceil_mode ? (W + 1) / 2 : W / 2;
        std::vector<double> gv(static_cast<size_t>(planes * OH * OW));
        for (double& v : gv) v = rng() % 5 == 0 ? -0.0 : static_cast<double>(rng() % 17) - 8.0;
        const Tensor g = Tensor::from_vector<double>(gv, {shape[0], shape[1], OH, OW}).to(dt);
        const std::string tag = std::string(dtype_name(dt)) + " " + std::to_string(H) + "x" + std::to_string(W) +
                                (ceil_mode ? " ceil" : "");
        for (const bool is_max : {true, false}) {
          Tensor x = Tensor::from_vector<double>(xv, shape).to(dt);
          x.set_requires_grad(true);
          Tensor y = is_max ? max_pool2d(x, o) : avg_pool2d(x, o);
          y.backward(g);
          // The naive windows, in the tensor's dtype.
          const Tensor xr = x.detach(), gr = g;
          Tensor y_ref = Tensor::zeros({shape[0], shape[1], OH, OW}, dt);
          Tensor gx_ref = Tensor::zeros(shape, dt);
          auto naive = [&](auto zero) {
            using T = decltype(zero);
            const T* xp = xr.data_ptr<T>();
            const T* gp = gr.data_ptr<T>();
            T* yp = y_ref.data_ptr<T>();
            T* gxp = gx_ref.data_ptr<T>();
            for (int64_t p = 0; p < planes; ++p)
              for (int64_t oh = 0; oh < OH; ++oh)
                for (int64_t ow = 0; ow < OW; ++ow) {
                  const int64_t h1 = std::min(2 * oh + 2, H), w1 = std::min(2 * ow + 2, W);
                  const T go = gp[(p * OH + oh) * OW + ow];
                  T acc = is_max ? -std::numeric_limits<T>::infinity() : T(0);
                  int64_t at = (2 * oh) * W + 2 * ow;
                  for (int64_t ih = 2 * oh; ih < h1; ++ih)
                    for (int64_t iw = 2 * ow; iw < w1; ++iw) {
                      const T v = xp[p * H * W + ih * W + iw];
                      if (!is_max) acc += v;
                      else if (v > acc || v != v) acc = v, at = ih * W + iw;
                    }
                  const T div = static_cast<T>((h1 - 2 * oh) * (w1 - 2 * ow));
                  yp[(p * OH + oh) * OW + ow] = is_max ? acc : acc / div;
                  if (is_max) {
                    gxp[p * H * W + at] += go;
                  } else {
                    for (int64_t ih = 2 * oh; ih < h1; ++ih)
                      for (int64_t iw = 2 * ow; iw < w1; ++iw) gxp[p * H * W + ih * W + iw] += go / div;
                  }
                }
          };
          if (dt == DType::Float32) naive(0.0f);
          else naive(0.0);
          const std::string what = tag + (is_max ? " max" : " avg");
          EXPECT_TRUE(bitwise_equal(y.detach(), y_ref, what + " y"));
          EXPECT_TRUE(bitwise_equal(x.grad(), gx_ref, what + " grad_x"));
        }
      }
}

TEST(PoolErrors, ShapesDtypesOptions) {
  const Tensor x = rand_tensor({2, 3, 8, 8}, 1);
  for (const char* op : {"max_pool2d", "avg_pool2d"}) {
    const bool is_max = std::string(op) == "max_pool2d";
    auto run = [is_max](const Tensor& t, const Pool2dOptions& o) { return is_max ? max_pool2d(t, o) : avg_pool2d(t, o); };
    Pool2dOptions o;
    expect_error([&] { run(rand_tensor({3, 8, 8}, 1), o); }, {op, "[3, 8, 8]"});
    expect_error([&] { run(Tensor::zeros({2, 3, 8, 8}, DType::Int64), o); }, {op, "int64"});
    Pool2dOptions pad = o;
    pad.kernel = {3, 3};
    pad.padding = {2, 1};  // 2 > 3 / 2
    expect_error([&] { run(x, pad); }, {op, "padding", "(2, 1)", "(3, 3)"});
    pad.kernel = {2, 2};
    pad.padding = {1, 1};  // 1 <= 2 / 2: allowed
    EXPECT_NO_THROW(run(x, pad)) << op;
    Pool2dOptions neg = o;
    neg.stride = {-1, 2};
    expect_error([&] { run(x, neg); }, {op, "stride"});
    Pool2dOptions k0 = o;
    k0.kernel = {0, 2};
    expect_error([&] { run(x, k0); }, {op, "kernel"});
    Pool2dOptions big = o;
    big.kernel = {3, 3};
    expect_error([&] { run(rand_tensor({1, 1, 2, 2}, 1), big); }, {op, "[1, 1, 2, 2]"});
  }
}
