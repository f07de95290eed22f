#pragma once
// Shared test helpers: PyTorch reference loading, tolerance comparison with a parity report line,
// and the float64 finite-difference gradient check.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "tests/tolerances.h"

namespace hmer::test {

// Loads HMER_REF_DIR/<area>/<name>.npy written by tools/reference/ref_<area>.py. A missing file
// throws with the command that regenerates it (the test then fails: references are required).
Tensor ref(const std::string& area, const std::string& name);
bool ref_exists(const std::string& area, const std::string& name);

// Element-wise |actual - expected| <= atol + rtol * |expected|, shapes must match. Prints
//   PARITY <what> max_abs=<e> max_rel=<e> n=<count>
// so `ctest -V | grep PARITY` lists the measured error of every comparison.
::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, Tol tol, const std::string& what);
// Same shape, dtype and bytes (so -0 differs from 0 and NaN equals the same NaN): for results
// that must not change at all, e.g. a fused or in-place path against its op-by-op reference.
::testing::AssertionResult bitwise_equal(const Tensor& actual, const Tensor& expected, const std::string& what);

// Whole-tensor relative error max|actual - expected| / max|expected| <= bound (the model-parity
// measure); prints "PARITY <what> max_abs=.. rel=.. max_ref=.. n=..". NaN anywhere fails.
::testing::AssertionResult max_rel_close(const Tensor& actual, const Tensor& expected, double bound,
                                         const std::string& what, double* measured = nullptr);

struct GradcheckOptions {
  double eps = tol::kFdEps;
  Tol tol = tol::kGradcheck;
  int64_t max_checks_per_input = 200;  // random subset of elements for large inputs
  uint64_t seed = 1234;
};

// Checks d/d(inputs) of sum(f(inputs) * R) (R a fixed random tensor, so grad_output is not all
// ones) against central differences. Inputs must be float64 with requires_grad on those to check.
::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

// Writes a 16-sample CoMER-layout dataset (dir/caption.txt + dir/img/*.png, short captions over
// CAN's dictionary, white strokes on black) for tests that train or evaluate a tiny model.
void write_tiny_comer_dataset(const std::string& dir);
// The directory holding the real data (crohme/, crohme_inkml/): $HMER_SHARED_DATA, else ../shared/data
// beside the source tree. Tests that need it skip when it is absent.
std::string shared_data();
// That dataset, written once per test process into a temporary directory; returns the directory.
const std::string& tiny_comer_dataset();
// A fresh, empty temporary directory for this test process: <tmp>/hmer_test_<name>_<pid>.
std::string fresh_temp_dir(const std::string& name);
// Writes configs/can_tiny.yaml with its data sections pointed at tiny_comer_dataset() and the given
// dotted overrides (train::apply_override, in order) to `path`.
void write_tiny_can_config(const std::string& path, const std::vector<std::string>& overrides);

// Deterministic random tensors for tests (uniform in [lo, hi)).
Tensor rand_tensor(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0, DType dtype = DType::Float64);

}  // namespace hmer::test
