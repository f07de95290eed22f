// Element-wise, broadcasting, reductions, matmul/linear, cat/stack: finite differences in float64 and
// parity with PyTorch 1.13 in float32 (tools/reference/ref_elementwise.py).
#include <gtest/gtest.h>

#include <cmath>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "tests/testing.h"

using namespace hmer;
using namespace hmer::test;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Loads <case>__x{i}, runs fn, compares out and every grad_x{i} with the reference.
void check_parity(const std::string& name, int n_inputs, const Fn& fn, Tol tol) {
  std::vector<Tensor> xs;
  for (int i = 0; i < n_inputs; ++i) {
    Tensor x = ref("elementwise", name + "__x" + std::to_string(i));
    if (is_floating(x.dtype())) x.set_requires_grad(true);
    xs.push_back(x);
  }
  Tensor y = fn(xs);
  EXPECT_TRUE(all_close(y, ref("elementwise", name + "__out"), tol, name + ".out"));
  y.backward(ref("elementwise", name + "__grad_out"));
  for (int i = 0; i < n_inputs; ++i) {
    const std::string g = name + "__grad_x" + std::to_string(i);
    if (ref_exists("elementwise", g)) {
      EXPECT_TRUE(all_close(xs[i].grad(), ref("elementwise", g), tol, name + ".grad_x" + std::to_string(i)));
    }
  }
}

Tensor leaf(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor t = rand_tensor(s, seed, lo, hi);
  t.set_requires_grad(true);
  return t;
}

struct UnaryCase {
  const char* name;
  Tensor (*fn)(const Tensor&);
  double lo, hi;
};

Tensor pow3(const Tensor& x) { return pow(x, 3.0); }
Tensor pow_half(const Tensor& x) { return pow(x, 0.5); }
Tensor hs2(const Tensor& x) { return hard_sigmoid(x, HardSigmoidKind::Keras2); }
Tensor hs3(const Tensor& x) { return hard_sigmoid(x, HardSigmoidKind::Keras3); }

const UnaryCase kUnary[] = {
    {"exp", exp, -1, 1},         {"log", log, 0.1, 2},          {"sqrt", sqrt, 0.1, 2},
    {"square", square, -1, 1},   {"abs", abs, -1, 1},           {"pow3", pow3, -1, 1},
    {"pow_half", pow_half, 0.1, 2}, {"neg", neg, -1, 1},        {"relu", relu, -1, 1},
    {"sigmoid", sigmoid, -4, 4}, {"tanh", tanh, -2, 2},
    {"hard_sigmoid_keras3", hs3, -4, 4}, {"hard_sigmoid_keras2", hs2, -4, 4},
};

}  // namespace

TEST(ElementwiseGradcheck, Unary) {
  for (const auto& c : kUnary) {
    // Keep samples off the kinks (0 for relu/abs, the clip points for hard_sigmoid): the finite
    // difference is meaningless there.
    Tensor x = leaf({4, 5}, 7, c.lo, c.hi);
    auto* p = x.data_ptr<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      if (std::fabs(p[i]) < 1e-3) p[i] = 0.25;
      for (double kink : {-3.0, 3.0, -2.5, 2.5})
        if (std::fabs(p[i] - kink) < 1e-3) p[i] += 0.1;
    }
    auto fn = c.fn;
    EXPECT_TRUE(gradcheck([fn](const std::vector<Tensor>& in) { return fn(in[0]); }, {x})) << c.name;
  }
}

// The graph keeps only what a unary op's backward reads: tanh its output (which is the result itself,
// so nothing extra), square its input, neg nothing.
TEST(ElementwiseMemory, UnaryKeepsOnlyWhatItsBackwardReads) {
  const Tensor x0 = leaf({1000}, 3);
  Allocator* cpu_alloc = get_allocator(Device::cpu());
  auto held = [&](Tensor (*fn)(const Tensor&)) {
    const int64_t before = cpu_alloc->stats().allocated_bytes;
    Tensor y;
    {
      Tensor mid = mul(x0, 2.0);  // an intermediate: alive afterwards only if fn's node keeps it
      y = fn(mid);
    }
    const int64_t bytes = cpu_alloc->stats().allocated_bytes - before;
    y.backward(Tensor::ones(y.shape(), y.dtype()));
    return bytes;
  };
  const int64_t by_tanh = held([](const Tensor& t) { return tanh(t); });
  const int64_t by_square = held([](const Tensor& t) { return square(t); });
  const int64_t by_neg = held([](const Tensor& t) { return neg(t); });
  EXPECT_EQ(by_tanh, by_neg);
  EXPECT_EQ(by_square - by_tanh, 1000 * 8);
}

TEST(ElementwiseParity, Unary) {
  for (const auto& c : kUnary) {
    auto fn = c.fn;
    check_parity(c.name, 1, [fn](const std::vector<Tensor>& in) { return fn(in[0]); }, tol::kElementwise);
  }
}

TEST(ElementwiseGradcheck, BroadcastBinary) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {leaf({3, 1, 5}, 1), leaf({4, 1}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }, {leaf({3, 4, 5}, 1), leaf({5}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {leaf({2, 3, 1}, 1), leaf({1, 3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return div(in[0], in[1]); },
                        {leaf({2, 3, 4}, 1), leaf({3, 1}, 2, 0.5, 1.5)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return add(mul(in[0], 2.5), 1.0) / 3.0 - 0.5; }, {leaf({5}, 3)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return rsub(in[0], 1.0); }, {leaf({5}, 3)}));
}

TEST(ElementwiseParity, BroadcastBinary) {
  check_parity("add_bcast", 2, [](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, tol::kElementwise);
  check_parity("sub_bcast", 2, [](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }, tol::kElementwise);
  check_parity("mul_bcast", 2, [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, tol::kReduce);
  check_parity("div_bcast", 2, [](const std::vector<Tensor>& in) { return div(in[0], in[1]); }, tol::kReduce);
}

TEST(ReduceGradcheck, SumMeanMax) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return sum(in[0], {0, 2}); }, {leaf({3, 4, 5}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return sum(in[0], {1}, true); }, {leaf({3, 4, 5}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return sum(in[0]); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return mean(in[0], {1}); }, {leaf({3, 4, 5}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return mean(in[0]); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return max(in[0], 1).values; }, {leaf({3, 6, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return max(in[0], -1, true).values; }, {leaf({3, 6, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return amax(in[0]); }, {leaf({5, 6}, 1)}));
}

TEST(ReduceParity, SumMeanMax) {
  check_parity("sum_dims", 1, [](const std::vector<Tensor>& in) { return sum(in[0], {0, 2}); }, tol::kReduce);
  check_parity("sum_keep", 1, [](const std::vector<Tensor>& in) { return sum(in[0], {1}, true); }, tol::kReduce);
  check_parity("sum_all", 1, [](const std::vector<Tensor>& in) { return sum(in[0]); }, tol::kReduce);
  check_parity("mean_dims", 1, [](const std::vector<Tensor>& in) { return mean(in[0], {1}); }, tol::kReduce);
  check_parity("mean_all", 1, [](const std::vector<Tensor>& in) { return mean(in[0]); }, tol::kReduce);
  check_parity("max_dim", 1, [](const std::vector<Tensor>& in) { return max(in[0], 1).values; }, tol::kReduce);
  check_parity("amax_all", 1, [](const std::vector<Tensor>& in) { return amax(in[0]); }, tol::kReduce);
}

TEST(LinalgGradcheck, MatmulLinear) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {leaf({7, 13}, 1), leaf({13, 5}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {leaf({3, 7, 13}, 1), leaf({3, 13, 5}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                        {leaf({2, 3, 20}, 1), leaf({11, 20}, 2), leaf({11}, 3)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {leaf({6, 20}, 1), leaf({11, 20}, 2)}));
}

TEST(LinalgParity, MatmulLinear) {
  check_parity("matmul", 2, [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, tol::kMatmul);
  check_parity("bmm", 2, [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, tol::kMatmul);
  check_parity("linear", 3, [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, tol::kLinear);
  check_parity("linear_nobias", 2, [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, tol::kLinear);
}

TEST(JoinGradcheck, CatStack) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return cat({in[0], in[1]}, 1); }, {leaf({2, 3, 4}, 1), leaf({2, 5, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return stack({in[0], in[1]}, 2); }, {leaf({2, 3, 4}, 1), leaf({2, 3, 4}, 2)}));
}

TEST(JoinParity, CatStack) {
  check_parity("cat", 2, [](const std::vector<Tensor>& in) { return cat({in[0], in[1]}, 1); }, tol::kElementwise);
  check_parity("stack", 2, [](const std::vector<Tensor>& in) { return stack({in[0], in[1]}, 2); }, tol::kElementwise);
}

// Non-contiguous operands go run by run when their trailing dims are contiguous (channel slices) and
// element by element otherwise; both must give exactly what the contiguous copies give.
TEST(StridedElementwise, RunsAndCursorMatchContiguousCopies) {
  const Tensor big = rand_tensor({3, 10, 5, 7}, 31, -1, 1, DType::Float32);
  const Tensor other = rand_tensor({3, 10, 5, 7}, 32, -1, 1, DType::Float32);
  struct View {
    const char* name;
    std::function<Tensor(const Tensor&)> make;
  };
  const View views[] = {
      {"channel slice (runs of 4x5x7)", [](const Tensor& t) { return t.narrow(1, 2, 4); }},
      {"inner slice (runs of 7)", [](const Tensor& t) { return t.narrow(2, 1, 3); }},
      {"column slice (runs of 3, cursor)", [](const Tensor& t) { return t.narrow(3, 2, 3); }},
      {"transposed (cursor)", [](const Tensor& t) { return t.narrow(1, 0, 4).transpose(2, 3); }},
      {"batch slice of one (contiguous)", [](const Tensor& t) { return t.narrow(0, 1, 1).narrow(1, 3, 5); }},
  };
  for (const View& v : views) {
    const Tensor a = v.make(big), b = v.make(other);
    const Tensor want = add(contiguous_copy(a), contiguous_copy(b));
    EXPECT_TRUE(bitwise_equal(add(a, b), want, std::string("add ") + v.name));
    EXPECT_TRUE(bitwise_equal(mul(a, contiguous_copy(b)), mul(contiguous_copy(a), contiguous_copy(b)),
                              std::string("mul ") + v.name));
    // copy_ into a strided destination, from a strided and from a contiguous source
    Tensor dst_buf = Tensor::zeros(big.shape());
    Tensor dst = v.make(dst_buf);
    dst.copy_(a);
    EXPECT_TRUE(bitwise_equal(contiguous_copy(dst), contiguous_copy(a), std::string("copy_ ") + v.name));
    Tensor dst2_buf = Tensor::zeros(big.shape());
    Tensor dst2 = v.make(dst2_buf);
    dst2.copy_(contiguous_copy(b));
    EXPECT_TRUE(bitwise_equal(contiguous_copy(dst2), contiguous_copy(b), std::string("copy_ from contiguous ") + v.name));
    // nothing outside the view was touched
    const double outside = sum(dst_buf).item<float>() - sum(contiguous_copy(dst)).item<float>();
    EXPECT_NEAR(outside, 0.0, 1e-4) << v.name;
  }
}

// A per-(batch, channel) value broadcast over long trailing runs (the attention's query (B, A, 1, 1)
// added to (B, A, H, W)) goes run by run with one scalar per run, on either side and also when the
// full operand is itself a channel slice: the same bits as on contiguous copies.
TEST(StridedElementwise, ScalarPerRunBroadcastMatchesContiguousCopies) {
  const Tensor full = rand_tensor({3, 6, 5, 7}, 33, -1, 1, DType::Float32);
  const Tensor wide = rand_tensor({3, 9, 5, 7}, 34, -1, 1, DType::Float32);
  const Tensor q = rand_tensor({3, 6, 1, 1}, 35, 0.5, 2, DType::Float32);
  const Tensor row = rand_tensor({3, 6, 5, 1}, 36, 0.5, 2, DType::Float32);  // runs of 7 < 16: the cursor
  for (const Tensor& x : {full, wide.narrow(1, 2, 6)}) {
    const std::string tag = x.is_contiguous() ? "contiguous" : "channel slice";
    const Tensor xe = contiguous_copy(x), qe = contiguous_copy(q.expand(x.shape()));
    const Tensor re = contiguous_copy(row.expand(x.shape()));
    EXPECT_TRUE(bitwise_equal(add(x, q), add(xe, qe), "add x + q " + tag));
    EXPECT_TRUE(bitwise_equal(add(q, x), add(qe, xe), "add q + x " + tag));
    EXPECT_TRUE(bitwise_equal(sub(q, x), sub(qe, xe), "sub q - x " + tag));
    EXPECT_TRUE(bitwise_equal(div(x, q), div(xe, qe), "div x / q " + tag));
    EXPECT_TRUE(bitwise_equal(mul(row, x), mul(re, xe), "mul row * x " + tag));
  }
}

// DenseNet's chain x = cat({x, new}, 1), appended in place: the same values and gradients as the
// chain of cats, every result a leading slice of one buffer, and no earlier result disturbed.
TEST(ChannelConcat, MatchesTheCatChainInOneBuffer) {
  const Tensor x0 = rand_tensor({3, 2, 4, 5}, 1), p1 = rand_tensor({3, 3, 4, 5}, 2), p2 = rand_tensor({3, 1, 4, 5}, 3);
  auto leaves = [&] {
    std::vector<Tensor> v{x0.detach().clone(), p1.detach().clone(), p2.detach().clone()};
    for (Tensor& t : v) t.set_requires_grad(true);
    return v;
  };
  std::vector<Tensor> a = leaves(), b = leaves();
  const Tensor chain1 = cat({a[0], a[1]}, 1);
  const Tensor chain2 = cat({chain1, a[2]}, 1);
  ChannelConcat cc(b[0], 6);
  const Tensor grown1 = cc.append(b[1]);
  const Tensor grown2 = cc.append(b[2]);
  EXPECT_EQ(cc.channels(), 6);
  EXPECT_TRUE(bitwise_equal(grown1, chain1, "after one append"));  // not overwritten by the second
  EXPECT_TRUE(bitwise_equal(grown2, chain2, "after two appends"));
  EXPECT_EQ(grown1.raw_data_ptr(), grown2.raw_data_ptr());
  EXPECT_FALSE(grown1.is_contiguous());  // a (3, 5) slice of a 6-channel buffer
  EXPECT_TRUE(grown2.is_contiguous());   // full
  // Both intermediate results feed the loss, as in a dense block where every layer reads its prefix.
  const Tensor g1 = rand_tensor({3, 5, 4, 5}, 4), g2 = rand_tensor({3, 6, 4, 5}, 5);
  (sum(mul(chain1, g1)) + sum(mul(chain2, g2))).backward();
  (sum(mul(grown1, g1)) + sum(mul(grown2, g2))).backward();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(bitwise_equal(b[i].grad(), a[i].grad(), "grad " + std::to_string(i)));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        ChannelConcat c(in[0], 5);
        c.append(in[1]);
        return mul(c.result(), c.result());
      },
      {leaf({2, 2, 3, 1}, 6), leaf({2, 3, 3, 1}, 7)}));
}

// ChannelConcat::conv2d (a dense block's conv1 reading the growing prefix) adds its input gradient
// straight into the block's gradient buffer. The chain must give the same numbers as conv2d on
// result(): bit for bit for 1x1 convs (the GEMM adds into the buffer), to rounding for 3x3 (col2im
// adds), the same again in a second pass (a new buffer per backward pass), and the backward must run
// no gradient sums for the prefixes: the profiler counts the engine's adds.
TEST(ChannelConcat, Conv2dAddsItsInputGradientIntoTheBuffer) {
  for (const int64_t k : {1, 3}) {
    const std::string tag = std::to_string(k) + "x" + std::to_string(k);
    const Tensor x0 = rand_tensor({2, 4, 5, 6}, 51, -1, 1, DType::Float32);
    std::vector<Tensor> ws;
    for (int i = 0; i < 3; ++i) ws.push_back(rand_tensor({3, 4 + 3 * i, k, k}, 52 + i, -0.5, 0.5, DType::Float32));
    const Conv2dOptions o{{1, 1}, {k / 2, k / 2}, {1, 1}};
    const Tensor r = rand_tensor({2, 13, 5, 6}, 55, -1, 1, DType::Float32);
    // Three layers: new = tanh(conv(prefix)), appended; the loss reads the full result.
    auto run = [&](bool in_place, bool retain, std::vector<Tensor>& grads, int64_t* backward_adds) {
      Tensor x = x0.detach().clone();
      x.set_requires_grad(true);
      std::vector<Tensor> w;
      for (const Tensor& wi : ws) w.push_back(wi.detach().clone().set_requires_grad(true));
      ChannelConcat cc(x, 13);
      for (int i = 0; i < 3; ++i) {
        Tensor y = in_place ? cc.conv2d(w[i], Tensor(), o) : conv2d(cc.result(), w[i], Tensor(), o);
        cc.append(tanh(y));
      }
      // With retain_grad the full result's gradient is also held by the user: the buffer must then
      // be a copy, and the retained gradient must not see the in-place additions.
      Tensor full = cc.result();
      if (retain) full.retain_grad();
      const Tensor loss = sum(mul(full, r));
      profiler::reset();
      profiler::set_enabled(true);
      loss.backward();
      profiler::set_enabled(false);
      *backward_adds = 0;
      for (const auto& e : profiler::entries()) {
        if (e.phase == "backward" && e.name == "add") *backward_adds += e.calls;
      }
      grads = {x.grad()};
      for (const Tensor& wi : w) grads.push_back(wi.grad());
      if (retain) grads.push_back(full.grad());
    };
    std::vector<Tensor> plain, in_place, again, plain_kept, kept;
    int64_t adds_plain = 0, adds_in_place = 0, adds_again = 0, adds_kept = 0;
    run(false, false, plain, &adds_plain);
    run(true, false, in_place, &adds_in_place);
    run(true, false, again, &adds_again);
    run(false, true, plain_kept, &adds_kept);
    run(true, true, kept, &adds_kept);
    EXPECT_EQ(adds_kept, 0) << tag;
    for (size_t i = 0; i < kept.size(); ++i) {
      EXPECT_TRUE(bitwise_equal(kept[i], i < in_place.size() ? in_place[i] : plain_kept[i],
                                tag + " with retain_grad, grad " + std::to_string(i)));
    }
    EXPECT_EQ(adds_plain, 3) << tag;  // each prefix's conv gradient + the next result's slice
    EXPECT_EQ(adds_in_place, 0) << tag;
    EXPECT_EQ(adds_again, 0) << tag;
    for (size_t i = 0; i < plain.size(); ++i) {
      const std::string what = tag + " grad " + std::to_string(i);
      EXPECT_TRUE(bitwise_equal(again[i], in_place[i], what + ", second pass"));
      if (k == 1) {
        EXPECT_TRUE(bitwise_equal(in_place[i], plain[i], what));
      } else {
        // col2im adds its 9 taps into the buffer one by one, where the plain path sums them first
        // (and in another kernel) and then adds: a few ulp apart.
        EXPECT_TRUE(all_close(in_place[i], plain[i], tol::kConvGrad, "channel_concat.conv2d " + what));
      }
    }
  }
  // float64 finite differences through the in-place gradient
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        ChannelConcat c(in[0], 7);
        c.append(tanh(c.conv2d(in[1], Tensor(), Conv2dOptions{{1, 1}, {1, 1}, {1, 1}})));
        c.append(c.conv2d(in[2]));
        return c.result();
      },
      {leaf({2, 3, 4, 3}, 56), leaf({2, 3, 3, 3}, 57), leaf({2, 5, 1, 1}, 58)}));
}

TEST(ChannelConcat, RejectsOverflowAndMismatchedParts) {
  ChannelConcat cc(Tensor::zeros({2, 3, 4, 4}), 5);
  EXPECT_THROW(cc.append(Tensor::zeros({2, 3, 4, 4})), Error);             // 3 + 3 > 5
  EXPECT_THROW(cc.append(Tensor::zeros({1, 2, 4, 4})), Error);             // batch
  EXPECT_THROW(cc.append(Tensor::zeros({2, 2, 4, 5})), Error);             // width
  EXPECT_THROW(cc.append(Tensor::zeros({2, 2, 4, 4}, DType::Float64)), Error);
  EXPECT_THROW(cc.append(Tensor::zeros({2, 2, 16})), Error);                // not 4-D
  EXPECT_THROW(ChannelConcat(Tensor::zeros({2, 3, 4, 4}), 2), Error);      // capacity below the first
  EXPECT_EQ(cc.channels(), 3);                                              // nothing was appended
  try {
    cc.append(Tensor::zeros({2, 3, 4, 4}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overflows the capacity of 5"), std::string::npos) << e.what();
  }
}

TEST(ViewGradcheck, PermuteSliceExpand) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return in[0].permute({2, 0, 1}).contiguous(); }, {leaf({2, 3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return in[0].slice(1, 0, 4, 2); }, {leaf({2, 5, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return in[0].expand({3, 2, 4}); }, {leaf({2, 1}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return in[0].transpose(0, 1).reshape({-1}); }, {leaf({3, 4}, 1)}));
}
