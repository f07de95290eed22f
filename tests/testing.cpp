#include "tests/testing.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/serialization.h"
#include "train/trainer.h"

namespace hmer::test {

namespace {
std::string ref_path(const std::string& area, const std::string& name) {
  return std::string(HMER_REF_DIR) + "/" + area + "/" + name + ".npy";
}
}  // namespace

bool ref_exists(const std::string& area, const std::string& name) {
  return std::filesystem::exists(ref_path(area, name));
}

Tensor ref(const std::string& area, const std::string& name) {
  const std::string p = ref_path(area, name);
  if (!std::filesystem::exists(p)) {
    fail("reference file ", p, " is missing; regenerate with: ", HMER_TORCH_PYTHON, " ", HMER_SOURCE_DIR,
         "/tools/reference/generate.py --out ", HMER_REF_DIR);
  }
  return load_npy(p);
}

::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, Tol tol, const std::string& what) {
  if (!actual.defined() || !expected.defined())
    return ::testing::AssertionFailure() << what << ": undefined tensor (actual " << actual.defined() << ", expected "
                                         << expected.defined() << ")";
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(actual.shape()) << " vs expected "
                                         << shape_str(expected.shape());
  const std::vector<double> a = actual.to_vector<double>();
  const std::vector<double> e = expected.to_vector<double>();
  double max_abs = 0, max_rel = 0;
  int64_t worst = -1, bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - e[i]);
    const bool nan_mismatch = std::isnan(a[i]) != std::isnan(e[i]);
    if (std::isnan(a[i]) && std::isnan(e[i])) continue;
    if (d > max_abs) max_abs = d;
    const double r = d / std::max(std::fabs(e[i]), 1e-30);
    if (d > 0 && r > max_rel) max_rel = r;
    if (nan_mismatch || d > tol.atol + tol.rtol * std::fabs(e[i])) {
      if (worst < 0) worst = static_cast<int64_t>(i);
      ++bad;
    }
  }
  std::printf("PARITY %s max_abs=%.3g max_rel=%.3g n=%zu\n", what.c_str(), max_abs, max_rel, a.size());
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << a.size()
                                       << " elements out of tolerance (atol " << tol.atol << ", rtol " << tol.rtol
                                       << "); first at flat index " << worst << ": " << a[worst] << " vs expected "
                                       << e[worst] << "; max_abs " << max_abs << ", max_rel " << max_rel;
}

void write_tiny_comer_dataset(const std::string& dir_in) {
  const std::filesystem::path dir(dir_in);
  std::filesystem::create_directories(dir / "img");
  const std::vector<std::string> caps = {"x", "1 + 2", "a = b", "x ^ { 2 }", "\\frac { 1 } { 2 }", "y - 3",
                                         "a b", "2 x", "\\sqrt { x }", "( a )", "b", "3", "x + y", "a _ { 1 }",
                                         "z", "1 2"};
  std::ofstream cap(dir / "caption.txt");
  for (size_t i = 0; i < caps.size(); ++i) {
    const int h = 32 + static_cast<int>(i % 3) * 8, w = 40 + static_cast<int>(i * 7 % 50);
    cv::Mat img(h, w, CV_8UC1, cv::Scalar(0));
    cv::line(img, {4, 4 + static_cast<int>(i % 5)}, {w - 5, h - 5}, cv::Scalar(255), 3);
    cv::circle(img, {w / 2, h / 2}, 6 + static_cast<int>(i % 4), cv::Scalar(255), 2);
    const std::string name = "s" + std::to_string(100 + i);
    cv::imwrite((dir / "img" / (name + ".png")).string(), img);
    cap << name << "\t" << caps[i] << "\n";
  }
}

::testing::AssertionResult max_rel_close(const Tensor& a, const Tensor& e, double bound, const std::string& what,
                                         double* measured) {
  if (a.shape() != e.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(a.shape()) << " vs twin "
                                         << shape_str(e.shape());
  const std::vector<double> va = a.to_vector<double>(), ve = e.to_vector<double>();
  double max_d = 0, max_e = 0;
  bool nan = false;
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(ve[i])) nan = true;
    max_d = std::max(max_d, std::fabs(va[i] - ve[i]));
    max_e = std::max(max_e, std::fabs(ve[i]));
  }
  const double rel = max_e > 0 ? max_d / max_e : max_d;
  if (measured) *measured = rel;
  std::printf("PARITY %s max_abs=%.3g rel=%.3g max_ref=%.3g n=%zu\n", what.c_str(), max_d, rel, max_e, va.size());
  if (!nan && rel <= bound) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": max |diff| " << max_d << " / max |ref| " << max_e << " = " << rel
                                       << " > " << bound << (nan ? " (NaN)" : "");
}

Tensor rand_tensor(const Shape& shape, uint64_t seed, double lo, double hi, DType dtype) {
  Generator g(seed);
  Tensor t = Tensor::empty(shape, DType::Float64);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * g.uniform_double();
  return dtype == DType::Float64 ? t : t.to(dtype);
}

::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].defined() && inputs[i].requires_grad() && inputs[i].dtype() != DType::Float64)
      return ::testing::AssertionFailure() << "gradcheck: input " << i << " must be float64";
  }
  Tensor out0;
  {
    NoGradGuard ng;
    out0 = f(inputs);
  }
  const Tensor R = rand_tensor(out0.shape(), opt.seed, 0.5, 1.5);
  auto scalar_fn = [&](const std::vector<Tensor>& in) {
    NoGradGuard ng;
    return sum(mul(f(in), R)).item<double>();
  };
  // analytic
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) {
      Tensor c = t.detach().clone();
      c.set_requires_grad(true);
      leaves.push_back(c);
    } else {
      leaves.push_back(t);
    }
  }
  Tensor loss = sum(mul(f(leaves), R));
  loss.backward();
  Generator pick(opt.seed + 1);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    const Tensor analytic = leaves[i].grad();
    if (!analytic.defined()) return ::testing::AssertionFailure() << "gradcheck: input " << i << " got no gradient";
    const std::vector<double> an = analytic.to_vector<double>();
    const int64_t n = inputs[i].numel();
    std::vector<int64_t> idx;
    if (n <= opt.max_checks_per_input) {
      for (int64_t k = 0; k < n; ++k) idx.push_back(k);
    } else {
      for (int64_t k = 0; k < opt.max_checks_per_input; ++k)
        idx.push_back(static_cast<int64_t>(pick.uniform_double() * static_cast<double>(n)) % n);
    }
    for (int64_t k : idx) {
      std::vector<Tensor> plus = inputs, minus = inputs;
      plus[i] = contiguous_copy(inputs[i].detach());
      minus[i] = contiguous_copy(inputs[i].detach());
      plus[i].data_ptr<double>()[k] += opt.eps;
      minus[i].data_ptr<double>()[k] -= opt.eps;
      const double numeric = (scalar_fn(plus) - scalar_fn(minus)) / (2 * opt.eps);
      const double d = std::fabs(numeric - an[k]);
      if (d > opt.tol.atol + opt.tol.rtol * std::fabs(numeric)) {
        return ::testing::AssertionFailure() << "gradcheck: input " << i << " element " << k << ": analytic " << an[k]
                                             << " vs numeric " << numeric << " (|diff| " << d << ")";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

std::string shared_data() {
  if (const char* e = std::getenv("HMER_SHARED_DATA")) return e;
  return std::string(HMER_SOURCE_DIR) + "/../shared/data";
}

const std::string& tiny_comer_dataset() {
  static const std::string dir = [] {
    const std::string d = fresh_temp_dir("data");
    write_tiny_comer_dataset(d);
    return d;
  }();
  return dir;
}

std::string fresh_temp_dir(const std::string& name) {
  const std::filesystem::path d =
      std::filesystem::temp_directory_path() / ("hmer_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

void write_tiny_can_config(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root = YAML::LoadFile(std::string(HMER_SOURCE_DIR) + "/configs/can_tiny.yaml");
  const std::string& data = tiny_comer_dataset();
  for (const std::string& s : std::vector<std::string>{"data.train.layout=comer", "data.train.root=" + data,
                                                       "data.valid.layout=comer", "data.valid.root=" + data})
    train::apply_override(root, s);
  for (const std::string& s : overrides) train::apply_override(root, s);
  std::ofstream(path) << YAML::Dump(root) << "\n";
}

::testing::AssertionResult bitwise_equal(const Tensor& actual, const Tensor& expected, const std::string& what) {
  if (!actual.defined() || !expected.defined())
    return ::testing::AssertionFailure() << what << ": undefined tensor";
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(actual.shape()) << " vs "
                                         << shape_str(expected.shape());
  if (actual.dtype() != expected.dtype())
    return ::testing::AssertionFailure() << what << ": dtype " << dtype_name(actual.dtype()) << " vs "
                                         << dtype_name(expected.dtype());
  const Tensor a = actual.to(Device::cpu()).contiguous(), e = expected.to(Device::cpu()).contiguous();
  const size_t item = dtype_size(a.dtype());
  const auto* pa = static_cast<const unsigned char*>(a.raw_data_ptr());
  const auto* pe = static_cast<const unsigned char*>(e.raw_data_ptr());
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(pa + i * item, pe + i * item, item) != 0) {
      const std::vector<double> va = a.reshape({-1}).narrow(0, i, 1).to_vector<double>();
      const std::vector<double> ve = e.reshape({-1}).narrow(0, i, 1).to_vector<double>();
      return ::testing::AssertionFailure() << what << ": element " << i << " differs: " << va[0] << " vs " << ve[0];
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace hmer::test
