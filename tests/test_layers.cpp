// Layer modules: GRUCell parity with PyTorch 1.13 (sigmoid and both Keras hard_sigmoid gates,
// forward and every gradient) and float64 finite differences; Linear / Conv2d / BatchNorm2d /
// pools / Embedding / Dropout modules against their functional ops (and train/eval switching);
// Module bookkeeping: names and order equal to torch's state_dict for a nested model,
// load_state_dict errors, safetensors round trip, to(), zero_grad, registration checks.
// References: tools/reference/ref_layers.py.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/serialization.h"
#include "layers/layers.h"
#include "tests/testing.h"

using namespace hmer;
using namespace hmer::test;

namespace {

Tensor leaf(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0, DType dtype = DType::Float64) {
  Tensor t = rand_tensor(s, seed, lo, hi, dtype);
  t.set_requires_grad(true);
  return t;
}

bool equal_exact(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  return a.to_vector<double>() == b.to_vector<double>();
}

// Finite differences for a module's own parameters: perturbs each (sampled) element in place and
// compares d/dp sum(f() * R) with the gradient backward() left in p.grad(). Parameters must be
// float64 and contiguous.
::testing::AssertionResult param_gradcheck(Module& m, const std::function<Tensor()>& f, uint64_t seed = 99) {
  Tensor out0;
  {
    NoGradGuard ng;
    out0 = f();
  }
  const Tensor R = rand_tensor(out0.shape(), seed, 0.5, 1.5);
  m.zero_grad();
  sum(mul(f(), R)).backward();
  Generator pick(seed + 1);
  for (auto& [name, p] : m.named_parameters()) {
    if (!p.grad().defined()) return ::testing::AssertionFailure() << name << " got no gradient";
    const std::vector<double> an = p.grad().to_vector<double>();
    double* d = p.data_ptr<double>();
    const int64_t n = p.numel();
    std::vector<int64_t> idx;
    for (int64_t k = 0; k < std::min<int64_t>(n, 60); ++k)
      idx.push_back(n <= 60 ? k : static_cast<int64_t>(pick.uniform_double() * static_cast<double>(n)) % n);
    for (int64_t k : idx) {
      const double saved = d[k];
      NoGradGuard ng;
      d[k] = saved + tol::kFdEps;
      const double fp = sum(mul(f(), R)).item<double>();
      d[k] = saved - tol::kFdEps;
      const double fm = sum(mul(f(), R)).item<double>();
      d[k] = saved;
      const double numeric = (fp - fm) / (2 * tol::kFdEps);
      const double diff = std::fabs(numeric - an[k]);
      if (diff > tol::kGradcheck.atol + tol::kGradcheck.rtol * std::fabs(numeric))
        return ::testing::AssertionFailure() << name << "[" << k << "]: analytic " << an[k] << " vs numeric " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    fail("reference file ", path, " is missing; regenerate with: ", HMER_TORCH_PYTHON, " ", HMER_SOURCE_DIR,
         "/tools/reference/generate.py --out ", HMER_REF_DIR);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string dims(const Shape& s) {
  std::ostringstream os;
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  return os.str();
}

struct GruCase {
  const char* name;
  GateActivation act;
  bool bias;
};
const GruCase kGruCases[] = {
    {"gru_sigmoid", GateActivation::Sigmoid, true},
    {"gru_sigmoid_nobias", GateActivation::Sigmoid, false},
    {"gru_hs_keras2", GateActivation::HardSigmoidKeras2, true},
    {"gru_hs_keras3", GateActivation::HardSigmoidKeras3, true},
};

// The nested model of ref_layers.py (_Nested), built from our modules.
std::shared_ptr<Module> make_nested(Generator* gen = nullptr) {
  auto root = std::make_shared<Module>("Nested");
  auto enc = std::make_shared<Sequential>();
  enc->push_back(std::make_shared<Conv2d>(Conv2dLayerOptions(1, 4, 3).padding({1, 1}), gen));
  enc->push_back(std::make_shared<BatchNorm2d>(4));
  enc->push_back(std::make_shared<ReLU>());
  auto inner = std::make_shared<Sequential>();
  inner->push_back(std::make_shared<Conv2d>(Conv2dLayerOptions(4, 8, 3).bias(false), gen));
  inner->push_back(std::make_shared<BatchNorm2d>(8));
  enc->push_back(inner);
  root->register_module("encoder", enc);
  root->register_module("proj", std::make_shared<Linear>(8, 6, true, gen));
  auto dec = std::make_shared<Module>("Decoder");
  dec->register_module("embed", std::make_shared<Embedding>(10, 6, 0, gen));
  dec->register_module("gru", std::make_shared<GRUCell>(6, 5, true, gen));
  dec->register_module("out", std::make_shared<Linear>(5, 10, false, gen));
  root->register_module("decoder", dec);
  // Registered after the children, listed before them (torch: own entries first).
  root->register_parameter("scale", Tensor::ones({3}));
  root->register_buffer("step", Tensor::zeros({}));
  return root;
}

}  // namespace

// ---- GRUCell --------------------------------------------------------------------------------------

TEST(GRUCellParity, ForwardAndAllGradients) {
  for (const GruCase& c : kGruCases) {
    const std::string n = c.name;
    const Tensor x0 = ref("layers", n + "__x"), h0 = ref("layers", n + "__h");
    GRUCell cell(GRUCellOptions(x0.size(1), h0.size(1)).bias(c.bias).gate_activation(c.act));
    NamedTensors sd = {{"weight_ih", ref("layers", n + "__weight_ih")}, {"weight_hh", ref("layers", n + "__weight_hh")}};
    if (c.bias) {
      sd.emplace_back("bias_ih", ref("layers", n + "__bias_ih"));
      sd.emplace_back("bias_hh", ref("layers", n + "__bias_hh"));
    }
    cell.load_state_dict(sd);
    Tensor x = x0.clone().detach(), h = h0.clone().detach();
    x.set_requires_grad(true);
    h.set_requires_grad(true);
    Tensor y = cell(x, h);
    EXPECT_TRUE(all_close(y, ref("layers", n + "__out"), tol::kGruCell, n + ".out"));
    y.backward(ref("layers", n + "__grad_out"));
    EXPECT_TRUE(all_close(x.grad(), ref("layers", n + "__grad_x"), tol::kGruCell, n + ".grad_x"));
    EXPECT_TRUE(all_close(h.grad(), ref("layers", n + "__grad_h"), tol::kGruCell, n + ".grad_h"));
    for (auto& [pname, p] : cell.named_parameters())
      EXPECT_TRUE(all_close(p.grad(), ref("layers", n + "__grad_" + pname), tol::kGruCell, n + ".grad_" + pname));
  }
}

TEST(GRUCellGradcheck, InputsAndParametersFloat64) {
  for (const GruCase& c : kGruCases) {
    Generator gen(11);
    GRUCell cell(GRUCellOptions(6, 4).bias(c.bias).gate_activation(c.act), &gen);
    cell.to(DType::Float64);
    // Pre-activations stay away from the hard_sigmoid kinks (±2.5, ±3) for these magnitudes; the
    // finite difference would be meaningless across one.
    Tensor x = leaf({3, 6}, 1, -1.5, 1.5), h = leaf({3, 4}, 2, -0.8, 0.8);
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return cell(in[0], in[1]); }, {x, h})) << c.name;
    EXPECT_TRUE(param_gradcheck(cell, [&] { return cell(x.detach(), h.detach()); })) << c.name;
  }
}

// A decoder unrolls the cell: every weight and the initial state feed several nodes, so their
// gradients must accumulate over all uses.
TEST(GRUCellGradcheck, UnrolledOverTimeFloat64) {
  Generator gen(12);
  GRUCell cell(GRUCellOptions(5, 3).gate_activation(GateActivation::Sigmoid), &gen);
  cell.to(DType::Float64);
  Tensor xs = leaf({4, 2, 5}, 3, -1.5, 1.5), h0 = leaf({2, 3}, 4, -0.8, 0.8);
  auto unroll = [&](const Tensor& x, const Tensor& h_init) {
    Tensor h = h_init;
    std::vector<Tensor> outs;
    for (int64_t t = 0; t < x.size(0); ++t) {
      h = cell(x.select(0, t), h);
      outs.push_back(h);
    }
    return stack(outs, 0);
  };
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return unroll(in[0], in[1]); }, {xs, h0}));
  EXPECT_TRUE(param_gradcheck(cell, [&] { return unroll(xs.detach(), h0.detach()); }));
}

TEST(GRUCell, UnbatchedAndZeroState) {
  Generator gen(5);
  GRUCell cell(3, 4, true, &gen);
  Tensor x = rand_tensor({2, 3}, 1, -1, 1, DType::Float32);
  // h undefined == zeros
  EXPECT_TRUE(equal_exact(cell(x), cell(x, Tensor::zeros({2, 4}))));
  // unbatched == row of the batched result
  Tensor h = rand_tensor({2, 4}, 2, -1, 1, DType::Float32);
  Tensor yb = cell(x, h);
  Tensor yu = cell(x.select(0, 1), h.select(0, 1));
  EXPECT_EQ(yu.shape(), (Shape{4}));
  EXPECT_TRUE(equal_exact(yu, yb.select(0, 1)));
  EXPECT_THROW(cell(rand_tensor({2, 5}, 1, -1, 1, DType::Float32)), Error);
  EXPECT_THROW(cell(x, Tensor::zeros({3, 4})), Error);
  // Layout of torch's GRUCell.
  EXPECT_EQ(cell.weight_ih().shape(), (Shape{12, 3}));
  EXPECT_EQ(cell.weight_hh().shape(), (Shape{12, 4}));
  EXPECT_EQ(cell.bias_ih().shape(), (Shape{12}));
}

// ---- layers vs their functional ops -------------------------------------------------------------

TEST(Layers, LinearMatchesFunctional) {
  Generator gen(1);
  Linear lin(5, 3, true, &gen);
  Tensor x = rand_tensor({2, 4, 5}, 3, -1, 1, DType::Float32);
  EXPECT_TRUE(equal_exact(lin(x), linear(x, lin.weight(), lin.bias())));
  Linear nob(LinearOptions(5, 3).bias(false), &gen);
  EXPECT_FALSE(nob.bias().defined());
  EXPECT_EQ(nob.named_parameters().size(), 1u);
  EXPECT_TRUE(equal_exact(nob(x), linear(x, nob.weight())));
  sum(lin(x)).backward();
  EXPECT_TRUE(lin.weight().grad().defined() && lin.bias().grad().defined());
  EXPECT_THROW(lin(rand_tensor({2, 4}, 3, -1, 1, DType::Float32)), Error);
  lin.to(DType::Float64);
  EXPECT_TRUE(param_gradcheck(lin, [&] { return lin(rand_tensor({3, 5}, 4)); }));
}

TEST(Layers, Conv2dMatchesFunctional) {
  Generator gen(2);
  Conv2d conv(Conv2dLayerOptions(3, 4, {3, 2}).stride({2, 1}).padding({1, 0}).dilation({1, 2}), &gen);
  EXPECT_EQ(conv.weight().shape(), (Shape{4, 3, 3, 2}));
  Tensor x = rand_tensor({2, 3, 9, 8}, 5, -1, 1, DType::Float32);
  Conv2dOptions o;
  o.stride = {2, 1};
  o.padding = {1, 0};
  o.dilation = {1, 2};
  EXPECT_TRUE(equal_exact(conv(x), conv2d(x, conv.weight(), conv.bias(), o)));
  Conv2d nob(Conv2dLayerOptions(3, 2, 1).bias(false), &gen);
  EXPECT_TRUE(equal_exact(nob(x), conv2d(x, nob.weight())));
  conv.to(DType::Float64);
  Tensor x64 = rand_tensor({1, 3, 6, 6}, 6);
  EXPECT_TRUE(param_gradcheck(conv, [&] { return conv(x64); }));
}

TEST(Layers, BatchNorm2dTrainEvalAndRunningStats) {
  BatchNorm2d bn(3);
  EXPECT_EQ(bn.num_batches_tracked().dtype(), DType::Int64);
  EXPECT_EQ(bn.num_batches_tracked().dim(), 0);
  Tensor x = rand_tensor({4, 3, 5, 5}, 7, -2, 3, DType::Float32);
  // Training: same as the functional op on copies of the running buffers.
  Tensor rm = bn.running_mean().clone(), rv = bn.running_var().clone();
  BatchNormOptions o;
  Tensor expect = batch_norm2d(x, bn.weight(), bn.bias(), rm, rv, o);
  EXPECT_TRUE(equal_exact(bn(x), expect));
  EXPECT_TRUE(equal_exact(bn.running_mean(), rm));
  EXPECT_TRUE(equal_exact(bn.running_var(), rv));
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 1);
  bn(x);
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 2);
  // Eval: running statistics, no update, no count.
  bn.eval();
  const std::vector<double> rm_before = bn.running_mean().to_vector<double>();
  BatchNormOptions oe;
  oe.training = false;
  EXPECT_TRUE(equal_exact(bn(x), batch_norm2d(x, bn.weight(), bn.bias(), bn.running_mean(), bn.running_var(), oe)));
  EXPECT_EQ(bn.running_mean().to_vector<double>(), rm_before);
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 2);
  // Without running statistics: batch statistics in eval too, and no buffers.
  BatchNorm2d nostats(BatchNorm2dOptions(3).track_running_stats(false));
  EXPECT_TRUE(nostats.named_buffers().empty());
  nostats.eval();
  EXPECT_TRUE(equal_exact(nostats(x), batch_norm2d(x, nostats.weight(), nostats.bias(), Tensor(), Tensor(), o)));
  // No affine: no parameters.
  BatchNorm2d noaff(BatchNorm2dOptions(3).affine(false));
  EXPECT_TRUE(noaff.named_parameters().empty());
  EXPECT_THROW(bn(rand_tensor({4, 2, 5, 5}, 7, -1, 1, DType::Float32)), Error);
}

TEST(Layers, BatchNorm2dPaddleFlavourConvertsMomentum) {
  BatchNorm2d bn(BatchNorm2dOptions(3).flavor(BatchNormFlavor::Paddle).momentum(0.25));
  Tensor x = rand_tensor({4, 3, 5, 5}, 8, -2, 3, DType::Float32);
  Tensor rm = bn.running_mean().clone(), rv = bn.running_var().clone();
  BatchNormOptions o;
  o.flavor = BatchNormFlavor::Paddle;
  o.momentum = 0.75;  // Paddle's own convention: 1 - torch's
  Tensor expect = batch_norm2d(x, bn.weight(), bn.bias(), rm, rv, o);
  EXPECT_TRUE(equal_exact(bn(x), expect));
  EXPECT_TRUE(equal_exact(bn.running_mean(), rm));
  EXPECT_TRUE(equal_exact(bn.running_var(), rv));
  EXPECT_THROW(BatchNorm2d(BatchNorm2dOptions(3).flavor(BatchNormFlavor::Paddle).momentum(std::nullopt)), Error);
}

TEST(LayersParity, BatchNorm2dRunningStatsVsTorch) {
  for (const char* name : {"bn_momentum", "bn_cumulative"}) {
    const std::string n = name;
    BatchNorm2dOptions opts(3);
    if (n == "bn_cumulative") opts.momentum(std::nullopt);
    BatchNorm2d bn(opts);
    NamedTensors sd = bn.state_dict();
    for (auto& [k, v] : sd)
      if (k == "weight" || k == "bias") v = ref("layers", n + "__" + k);
    bn.load_state_dict(sd);
    for (int i = 0; i < 2; ++i) {
      const std::string s = std::to_string(i);
      EXPECT_TRUE(all_close(bn(ref("layers", n + "__x" + s)), ref("layers", n + "__train_out" + s), tol::kBatchNorm,
                            n + ".train_out" + s));
    }
    EXPECT_TRUE(all_close(bn.running_mean(), ref("layers", n + "__running_mean"), tol::kBatchNorm, n + ".running_mean"));
    EXPECT_TRUE(all_close(bn.running_var(), ref("layers", n + "__running_var"), tol::kBatchNorm, n + ".running_var"));
    EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), ref("layers", n + "__num_batches_tracked").item<int64_t>());
    bn.eval();
    EXPECT_TRUE(all_close(bn(ref("layers", n + "__x2")), ref("layers", n + "__eval_out"), tol::kBatchNorm,
                          n + ".eval_out"));
  }
}

TEST(Layers, PoolsMatchFunctional) {
  Tensor x = rand_tensor({2, 3, 7, 9}, 9, -1, 1, DType::Float32);
  MaxPool2d mp(MaxPool2dOptions(3).stride({2, 2}).padding({1, 1}).ceil_mode(true));
  Pool2dOptions o;
  o.kernel = {3, 3};
  o.stride = {2, 2};
  o.padding = {1, 1};
  o.ceil_mode = true;
  EXPECT_TRUE(equal_exact(mp(x), max_pool2d(x, o)));
  // Default stride = kernel size.
  MaxPool2d mp2(MaxPool2dOptions(2));
  Pool2dOptions o2;
  o2.kernel = {2, 2};
  o2.stride = {2, 2};
  EXPECT_TRUE(equal_exact(mp2(x), max_pool2d(x, o2)));
  EXPECT_EQ(mp2(x).shape(), (Shape{2, 3, 3, 4}));
  AvgPool2d ap(AvgPool2dOptions({3, 2}).padding({1, 1}).ceil_mode(true).count_include_pad(false));
  Pool2dOptions o3;
  o3.kernel = {3, 2};
  o3.stride = {3, 2};
  o3.padding = {1, 1};
  o3.ceil_mode = true;
  o3.count_include_pad = false;
  EXPECT_TRUE(equal_exact(ap(x), avg_pool2d(x, o3)));
  EXPECT_THROW(MaxPool2d(MaxPool2dOptions(2).padding({2, 2})), Error);
}

TEST(Layers, EmbeddingMatchesFunctionalAndPadding) {
  Generator gen(3);
  Embedding emb(10, 4, -1, &gen);  // negative padding_idx counts from the end, as torch
  ASSERT_TRUE(emb.padding_idx().has_value());
  EXPECT_EQ(*emb.padding_idx(), 9);
  const std::vector<float> row = emb.weight().select(0, 9).to_vector<float>();
  for (float v : row) EXPECT_EQ(v, 0.0f);
  Tensor idx = Tensor::from_vector<int64_t>({1, 9, 3, 9, 0, 2}, {2, 3});
  Tensor y = emb(idx);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 4}));
  EXPECT_TRUE(equal_exact(y, embedding(emb.weight(), idx, 9)));
  sum(mul(y, rand_tensor({2, 3, 4}, 4, 0.5, 1.5, DType::Float32))).backward();
  for (float v : emb.weight().grad().select(0, 9).to_vector<float>()) EXPECT_EQ(v, 0.0f);
  EXPECT_THROW(Embedding(10, 4, 10), Error);
}

TEST(Layers, DropoutTrainEval) {
  Tensor x = rand_tensor({8, 16}, 10, -1, 1, DType::Float32);
  Generator g1(42), g2(42);
  Dropout drop(0.3, &g1);
  EXPECT_TRUE(drop.is_training());
  Tensor y = drop(x);
  EXPECT_TRUE(equal_exact(y, dropout(x, 0.3, true, &g2)));
  // Some elements dropped, the rest scaled by 1/(1-p).
  const std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>();
  int zeros = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0.0f) ++zeros;
    else EXPECT_EQ(yv[i], xv[i] * (1.0f / 0.7f));
  }
  EXPECT_GT(zeros, 0);
  EXPECT_LT(zeros, static_cast<int>(xv.size()));
  drop.eval();
  EXPECT_TRUE(equal_exact(drop(x), x));
  // The default generator is used when none is given.
  manual_seed(5);
  Dropout d2(0.5);
  Tensor a = d2(x);
  manual_seed(5);
  EXPECT_TRUE(equal_exact(a, dropout(x, 0.5, true)));
  EXPECT_THROW(Dropout(1.5), Error);
}

TEST(Layers, ActivationsAndSequential) {
  Tensor x = rand_tensor({3, 4}, 11, -4, 4, DType::Float32);
  EXPECT_TRUE(equal_exact(ReLU()(x), relu(x)));
  EXPECT_TRUE(equal_exact(Sigmoid()(x), sigmoid(x)));
  EXPECT_TRUE(equal_exact(Tanh()(x), tanh(x)));
  EXPECT_TRUE(equal_exact(HardSigmoid()(x), hard_sigmoid(x, HardSigmoidKind::Keras3)));
  EXPECT_TRUE(equal_exact(HardSigmoid(HardSigmoidKind::Keras2)(x), hard_sigmoid(x, HardSigmoidKind::Keras2)));
  Generator gen(4);
  auto l1 = std::make_shared<Linear>(4, 6, true, &gen);
  auto l2 = std::make_shared<Linear>(6, 2, true, &gen);
  Sequential seq({l1, std::make_shared<Tanh>(), l2});
  EXPECT_EQ(seq.size(), 3u);
  EXPECT_TRUE(equal_exact(seq(x), (*l2)(tanh((*l1)(x)))));
  NamedTensors np = seq.named_parameters();
  ASSERT_EQ(np.size(), 4u);
  EXPECT_EQ(np[0].first, "0.weight");
  EXPECT_EQ(np[3].first, "2.bias");
}

// ---- Module bookkeeping -------------------------------------------------------------------------

TEST(Module, NamesAndOrderMatchTorch) {
  auto m = make_nested();
  std::string ours;
  for (auto& [k, v] : m->state_dict()) ours += "state " + k + " " + dims(v.shape()) + "\n";
  for (auto& [k, v] : m->named_parameters()) ours += "param " + k + " " + dims(v.shape()) + "\n";
  for (auto& [k, v] : m->named_buffers()) ours += "buffer " + k + " " + dims(v.shape()) + "\n";
  EXPECT_EQ(ours, read_text(std::string(HMER_REF_DIR) + "/layers/nested_names.txt"));
}

TEST(Module, ParametersAreLeavesBuffersAreNot) {
  auto m = make_nested();
  for (auto& [k, p] : m->named_parameters()) {
    EXPECT_TRUE(p.is_leaf()) << k;
    EXPECT_TRUE(p.requires_grad()) << k;
  }
  for (auto& [k, b] : m->named_buffers()) EXPECT_FALSE(b.requires_grad()) << k;
  // 1*4*9+4 + 4+4 + 8*4*9 + 8+8 + 8*6+6 + 60 + 15*6+15*5+15+15 + 50 + 3
  EXPECT_EQ(m->num_parameters(), 40 + 8 + 288 + 16 + 54 + 60 + 195 + 50 + 3);
  auto mods = m->named_modules();
  EXPECT_EQ(mods[0].first, "");
  EXPECT_EQ(mods[1].first, "encoder");
  EXPECT_EQ(mods[5].first, "encoder.3");
  EXPECT_EQ(mods[6].first, "encoder.3.0");
  EXPECT_EQ(m->child("decoder")->child("gru")->type_name(), "GRUCell");
  EXPECT_THROW(m->child("nope"), Error);
  EXPECT_THROW(m->parameter("nope"), Error);
}

TEST(Module, RegistrationChecks) {
  Module m("M");
  m.register_parameter("w", Tensor::ones({2}));
  EXPECT_THROW(m.register_parameter("w", Tensor::ones({2})), Error);   // duplicate
  EXPECT_THROW(m.register_buffer("w", Tensor::ones({2})), Error);      // clashes with a parameter
  EXPECT_THROW(m.register_parameter("a.b", Tensor::ones({2})), Error); // dotted
  EXPECT_THROW(m.register_parameter("", Tensor::ones({2})), Error);
  EXPECT_THROW(m.register_parameter("i", Tensor::zeros({2}, DType::Int64)), Error);
  Tensor nonleaf = mul(leaf({2}, 1), 2.0);
  EXPECT_THROW(m.register_parameter("n", nonleaf), Error);
  EXPECT_THROW(m.register_module("w", std::make_shared<ReLU>()), Error);
}

TEST(Module, SharedParametersListedOnce) {
  Generator gen(1);
  auto shared = std::make_shared<Linear>(3, 3, true, &gen);
  Module m("Tied");
  m.register_module("a", shared);
  m.register_module("b", shared);
  EXPECT_EQ(m.named_parameters().size(), 2u);  // torch dedups by identity
  EXPECT_EQ(m.state_dict().size(), 4u);        // ... but state_dict keeps every key
  EXPECT_EQ(m.num_parameters(), 12);
}

TEST(Module, LoadStateDictErrorsListEverything) {
  Generator gen(1);
  auto m = make_nested(&gen);
  NamedTensors sd = m->state_dict();
  const std::vector<double> before = m->child("proj")->parameter("weight").to_vector<double>();
  NamedTensors bad;
  for (auto& [k, v] : sd) {
    if (k == "decoder.gru.bias_hh" || k == "encoder.1.running_var") continue;  // missing
    if (k == "proj.weight") {
      bad.emplace_back(k, Tensor::zeros({6, 9}));  // mis-shaped
      continue;
    }
    bad.emplace_back(k, Tensor::zeros(v.shape(), v.dtype()));
  }
  bad.emplace_back("decoder.extra", Tensor::zeros({2, 2}));  // unexpected
  try {
    m->load_state_dict(bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("Error(s) in loading state_dict for Nested"), std::string::npos) << msg;
    EXPECT_NE(msg.find("\"decoder.gru.bias_hh\" [15]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("\"encoder.1.running_var\" [4]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("\"decoder.extra\" [2, 2]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("size mismatch for proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[6, 9]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[6, 8]"), std::string::npos) << msg;
  }
  // A failed load writes nothing.
  EXPECT_EQ(m->child("proj")->parameter("weight").to_vector<double>(), before);
  // Not strict: missing/unexpected are reported, size mismatches still fail.
  EXPECT_THROW(m->load_state_dict(bad, false), Error);
  NamedTensors partial;
  for (auto& [k, v] : bad)
    if (k != "proj.weight") partial.emplace_back(k, v);
  LoadStateDictResult r = m->load_state_dict(partial, false);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"encoder.1.running_var", "proj.weight", "decoder.gru.bias_hh"}));
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"decoder.extra"}));
  EXPECT_EQ(m->child("proj")->parameter("weight").to_vector<double>(), before);
  for (double v : m->child("decoder")->child("gru")->parameter("weight_ih").to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(Module, LoadStateDictKeepsIdentityAndRoundTripsThroughSafetensors) {
  Generator g1(1), g2(2);
  auto a = make_nested(&g1);
  auto b = make_nested(&g2);
  // Give a's BatchNorm a non-trivial state.
  a->child("encoder")->child("1")->train();
  Tensor x = rand_tensor({2, 1, 6, 6}, 3, -1, 1, DType::Float32);
  std::static_pointer_cast<Sequential>(a->child("encoder"))->forward(x);
  EXPECT_EQ(a->child("encoder")->child("1")->buffer("num_batches_tracked").item<int64_t>(), 1);

  const std::string path = (std::filesystem::temp_directory_path() / "hmer_test_layers_roundtrip.safetensors").string();
  save_safetensors(path, a->state_dict());
  NamedTensors loaded = load_safetensors(path);
  std::filesystem::remove(path);

  Tensor w_handle = b->child("proj")->parameter("weight");
  auto* bn_b = dynamic_cast<BatchNorm2d*>(b->child("encoder")->child("1").get());
  ASSERT_NE(bn_b, nullptr);
  b->load_state_dict(loaded);
  EXPECT_TRUE(w_handle.is_same(b->child("proj")->parameter("weight")));  // same TensorImpl
  EXPECT_TRUE(w_handle.requires_grad());
  NamedTensors sa = a->state_dict(), sb = b->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_EQ(sa[i].second.dtype(), sb[i].second.dtype()) << sa[i].first;
    EXPECT_TRUE(equal_exact(sa[i].second, sb[i].second)) << sa[i].first;
  }
  // The layer's own handle sees the loaded counter and keeps counting from it.
  EXPECT_EQ(bn_b->num_batches_tracked().item<int64_t>(), 1);
  bn_b->train();
  (*bn_b)(rand_tensor({2, 4, 3, 3}, 4, -1, 1, DType::Float32));
  EXPECT_EQ(bn_b->num_batches_tracked().item<int64_t>(), 2);
}

TEST(Module, TrainEvalRecursive) {
  auto m = make_nested();
  EXPECT_TRUE(m->is_training());
  m->eval();
  for (auto& [k, mod] : m->named_modules()) EXPECT_FALSE(mod->is_training()) << k;
  m->train();
  for (auto& [k, mod] : m->named_modules()) EXPECT_TRUE(mod->is_training()) << k;
}

TEST(Module, ToDtypeAndDeviceKeepIdentity) {
  Generator gen(1);
  auto m = make_nested(&gen);
  Tensor w = m->child("proj")->parameter("weight");
  const std::vector<double> vals = w.to_vector<double>();
  sum(mul(w, 1.0)).backward();
  m->to(DType::Float64);
  EXPECT_EQ(w.dtype(), DType::Float64);
  EXPECT_TRUE(w.requires_grad());
  EXPECT_EQ(w.grad().dtype(), DType::Float64);
  EXPECT_EQ(w.to_vector<double>(), vals);
  auto* bn = dynamic_cast<BatchNorm2d*>(m->child("encoder")->child("1").get());
  EXPECT_EQ(bn->running_var().dtype(), DType::Float64);
  EXPECT_EQ(bn->num_batches_tracked().dtype(), DType::Int64);  // integer buffers are not converted
  m->to(DType::Float32);
  m->to(Device::cpu());
  EXPECT_EQ(w.dtype(), DType::Float32);
  EXPECT_EQ(w.to_vector<double>(), vals);
  if (cuda_is_available()) {
    m->to(Device::cuda());
    EXPECT_TRUE(w.device().is_cuda());
    EXPECT_TRUE(w.requires_grad());
    m->to(Device::cpu());
    EXPECT_EQ(w.to_vector<double>(), vals);
  }
}

TEST(Module, ZeroGrad) {
  Generator gen(1);
  Linear lin(3, 2, true, &gen);
  Tensor x = rand_tensor({4, 3}, 1, -1, 1, DType::Float32);
  sum(lin(x)).backward();
  ASSERT_TRUE(lin.weight().grad().defined());
  lin.zero_grad(false);  // torch 1.13 default: zero in place
  ASSERT_TRUE(lin.weight().grad().defined());
  for (double v : lin.weight().grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
  lin.zero_grad();  // set_to_none
  EXPECT_FALSE(lin.weight().grad().defined());
  EXPECT_FALSE(lin.bias().grad().defined());
}

TEST(Module, Repr) {
  auto m = make_nested();
  const std::string r = m->repr();
  EXPECT_NE(r.find("(proj): Linear(in_features=8, out_features=6, bias=True)"), std::string::npos) << r;
  EXPECT_NE(r.find("(0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"), std::string::npos) << r;
  EXPECT_NE(r.find("(gru): GRUCell(6, 5)"), std::string::npos) << r;
  EXPECT_NE(r.find("(embed): Embedding(10, 6, padding_idx=0)"), std::string::npos) << r;
}
