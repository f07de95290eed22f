// .npy and safetensors: C++ round trips (all dtypes, 0-d/1-d/4-d/empty, non-contiguous inputs),
// files written by numpy and by the Python safetensors writer in tools/reference/ref_serialization.py
// read back bit for bit, files written here read back by Python, malformed files rejected with an
// error that names the file, and atomic writes that leave no temporary behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <typeinfo>
#include <vector>

#include <unistd.h>

#include "core/ops.h"
#include "core/serialization.h"
#include "tests/testing.h"

using namespace hmer;
namespace fs = std::filesystem;

namespace {

// ---- helpers ----------------------------------------------------------------------------------

// Element i (row-major) = i * scale + shift, computed in double and rounded to `dtype` exactly as
// ref_serialization.py's _values_affine does.
Tensor affine(const Shape& shape, DType dtype, double scale, double shift) {
  Tensor t = Tensor::empty(shape, DType::Float64);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<double>(i) * scale + shift;
  return dtype == DType::Float64 ? t : t.to(dtype);
}

// Mirrors F64_SPECIALS and I64_BIG in ref_serialization.py.
Tensor f64_specials() {
  return Tensor::from_vector<double>({std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                                      -std::numeric_limits<double>::infinity(), -0.0, 5e-324,
                                      1.7976931348623157e308, 0.1, -2.5},
                                     {8});
}
Tensor i64_big() {
  return Tensor::from_vector<int64_t>({std::numeric_limits<int64_t>::min(), -(int64_t{1} << 40) - 3, -1, 0, 1,
                                       (int64_t{1} << 53) + 1, std::numeric_limits<int64_t>::max()},
                                      {7});
}

// Same dtype, same shape, same bytes (so NaN payloads and -0.0 count, and 0-d is not 1-d).
::testing::AssertionResult bit_equal(const Tensor& actual, const Tensor& expected) {
  if (actual.dtype() != expected.dtype() || actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "got " << actual.str() << ", expected " << expected.str();
  const Tensor a = contiguous_copy(actual), e = contiguous_copy(expected);
  const size_t n = static_cast<size_t>(a.numel()) * dtype_size(a.dtype());
  if (n && std::memcmp(a.raw_data_ptr(), e.raw_data_ptr(), n) != 0) {
    const std::vector<double> av = a.to_vector<double>(), ev = e.to_vector<double>();
    for (size_t i = 0; i < av.size(); ++i)
      if (std::memcmp(&av[i], &ev[i], sizeof(double)) != 0)
        return ::testing::AssertionFailure() << actual.str() << " differs at flat index " << i << ": " << av[i]
                                             << " vs expected " << ev[i];
    return ::testing::AssertionFailure() << actual.str() << ": bytes differ";
  }
  return ::testing::AssertionSuccess();
}

// Runs f, which must throw hmer::Error whose message names `path` and contains `what`.
template <class F>
::testing::AssertionResult throws_naming(F&& f, const std::string& path, const std::string& what) {
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.find(path) == std::string::npos)
      return ::testing::AssertionFailure() << "error does not name the file " << path << ": " << m;
    if (m.find(what) == std::string::npos)
      return ::testing::AssertionFailure() << "error does not mention '" << what << "': " << m;
    return ::testing::AssertionSuccess() << m;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-hmer exception (" << typeid(e).name() << "): " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw (expected an error naming " << path << ")";
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A safetensors file from a header string and a data section.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// A .npy v1.0 file from a header dict and a data section.
std::string npy_bytes(const std::string& dict, const std::string& data) {
  std::string h = dict + "\n";
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(h.size() & 0xff);
  out += static_cast<char>(h.size() >> 8);
  return out + h + data;
}

std::string ref_file(const std::string& name) {
  const std::string p = std::string(HMER_REF_DIR) + "/serialization/" + name;
  if (!fs::exists(p))
    fail("reference file ", p, " is missing; regenerate with: ", HMER_TORCH_PYTHON, " ", HMER_SOURCE_DIR,
         "/tools/reference/generate.py --out ", HMER_REF_DIR, " --only serialization");
  return p;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Every test writes into its own fresh directory, removed afterwards.
class Serialization : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("hmer_test_serialization_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // No leftover temporaries: every file in the directory is one the test meant to create.
  void expect_no_tmp() const {
    for (const std::string& f : files_in(dir_))
      EXPECT_FALSE(f.size() >= 4 && f.compare(f.size() - 4, 4, ".tmp") == 0) << "left behind: " << f;
  }
  fs::path dir_;
};

struct Case {
  Shape shape;
  DType dtype;
};

const Case kCases[] = {
    {{}, DType::Float32},         {{}, DType::Float64},        {{}, DType::Int64},
    {{7}, DType::Float32},        {{7}, DType::Float64},       {{7}, DType::Int64},
    {{2, 3, 4, 5}, DType::Float32}, {{2, 3, 4, 5}, DType::Float64}, {{2, 3, 4, 5}, DType::Int64},
    {{0}, DType::Float32},        {{3, 0, 2}, DType::Float64}, {{0, 4}, DType::Int64},
};

Tensor case_tensor(const Case& c) {
  // int64 values span negative and positive; floats use fractions exact in float32.
  return c.dtype == DType::Int64 ? affine(c.shape, c.dtype, 7.0, -300.0) : affine(c.shape, c.dtype, 0.375, -11.0);
}

std::string case_name(const Case& c) { return std::string(dtype_name(c.dtype)) + shape_str(c.shape); }

// ---- C++ round trips --------------------------------------------------------------------------

TEST_F(Serialization, NpyRoundTripAllDtypesAndRanks) {
  for (const Case& c : kCases) {
    const Tensor t = case_tensor(c);
    const std::string p = path("t.npy");
    save_npy(p, t);
    EXPECT_TRUE(bit_equal(load_npy(p), t)) << case_name(c);
  }
  expect_no_tmp();
}

TEST_F(Serialization, NpySpecialValuesAreBitExact) {
  for (const Tensor& t : {f64_specials(), i64_big(), f64_specials().to(DType::Float32)}) {
    save_npy(path("s.npy"), t);
    EXPECT_TRUE(bit_equal(load_npy(path("s.npy")), t)) << t.str();
  }
}

TEST_F(Serialization, NpyHeaderIsPaddedTo64Bytes) {
  for (const Case& c : kCases) {
    save_npy(path("t.npy"), case_tensor(c));
    const std::string b = read_bytes(path("t.npy"));
    ASSERT_GE(b.size(), 10u);
    const size_t header_len =
        static_cast<unsigned char>(b[8]) | (static_cast<size_t>(static_cast<unsigned char>(b[9])) << 8);
    EXPECT_EQ((10 + header_len) % 64, 0u) << case_name(c);
    EXPECT_EQ(b[10 + header_len - 1], '\n') << case_name(c);
    EXPECT_EQ(b.size(), 10 + header_len + static_cast<size_t>(case_tensor(c).numel()) * dtype_size(c.dtype))
        << case_name(c);
  }
}

TEST_F(Serialization, SafetensorsRoundTripKeepsOrderDtypesAndMetadata) {
  NamedTensors in;
  int k = 0;
  for (const Case& c : kCases) in.emplace_back("t" + std::to_string(k++) + "." + case_name(c), case_tensor(c));
  in.emplace_back("specials", f64_specials());
  in.emplace_back("big", i64_big());
  const std::map<std::string, std::string> md = {{"epoch", "12"}, {"config", "{\"lr\": 1.0}"}, {"empty", ""}};
  save_safetensors(path("m.safetensors"), in, md);
  std::map<std::string, std::string> md_out;
  const NamedTensors out = load_safetensors(path("m.safetensors"), &md_out);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].first, in[i].first) << i;
    EXPECT_TRUE(bit_equal(out[i].second, in[i].second)) << in[i].first;
  }
  EXPECT_EQ(md_out, md);
  // Header padded so the data section starts 8-byte aligned.
  const std::string b = read_bytes(path("m.safetensors"));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  expect_no_tmp();
}

TEST_F(Serialization, SafetensorsWithoutTensorsOrMetadata) {
  save_safetensors(path("e.safetensors"), {});
  std::map<std::string, std::string> md = {{"stale", "x"}};
  EXPECT_TRUE(load_safetensors(path("e.safetensors"), &md).empty());
  save_safetensors(path("e.safetensors"), {{"x", Tensor::scalar(1.5)}});
  const NamedTensors out = load_safetensors(path("e.safetensors"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(bit_equal(out[0].second, Tensor::scalar(1.5)));
}

// Views with strides, offsets and broadcasting are written as their logical (row-major) contents.
TEST_F(Serialization, NonContiguousInputsAreWrittenInLogicalOrder) {
  const Tensor base = affine({4, 6}, DType::Float32, 1.0, 0.0);
  const Tensor base64 = affine({4, 6}, DType::Int64, 1.0, 0.0);
  const std::vector<std::pair<std::string, Tensor>> views = {
      {"transposed", base.t()},
      {"narrowed_offset", base.narrow(1, 2, 3)},
      {"stepped", base.slice(1, 1, 6, 2)},
      {"expanded", affine({1, 3}, DType::Float64, 1.0, 0.0).expand({4, 3})},
      {"permuted_4d", affine({2, 3, 4, 5}, DType::Float32, 0.5, 0.0).permute({3, 1, 0, 2})},
      {"selected_row", base.select(0, 2)},
      {"int_transposed", base64.t()},
  };
  NamedTensors named;
  for (const auto& [name, v] : views) {
    ASSERT_TRUE(!v.is_contiguous() || v.offset() != 0) << name << " should exercise the non-trivial path";
    const Tensor expected = contiguous_copy(v);
    save_npy(path(name + ".npy"), v);
    EXPECT_TRUE(bit_equal(load_npy(path(name + ".npy")), expected)) << name;
    named.emplace_back(name, v);
  }
  save_safetensors(path("views.safetensors"), named);
  const NamedTensors out = load_safetensors(path("views.safetensors"));
  ASSERT_EQ(out.size(), views.size());
  for (size_t i = 0; i < views.size(); ++i) {
    EXPECT_EQ(out[i].first, views[i].first);
    EXPECT_TRUE(bit_equal(out[i].second, contiguous_copy(views[i].second))) << views[i].first;
  }
  // The inputs are untouched (no in-place conversion of the caller's storage).
  EXPECT_TRUE(bit_equal(base, affine({4, 6}, DType::Float32, 1.0, 0.0)));
}

TEST_F(Serialization, OverwriteReplacesTheFileAndLeavesNoTemporary) {
  save_npy(path("w.npy"), affine({100}, DType::Float64, 1.0, 0.0));
  save_npy(path("w.npy"), affine({2}, DType::Float32, 1.0, 5.0));
  EXPECT_TRUE(bit_equal(load_npy(path("w.npy")), affine({2}, DType::Float32, 1.0, 5.0)));
  save_safetensors(path("w.safetensors"), {{"a", affine({50}, DType::Float64, 1.0, 0.0)}});
  save_safetensors(path("w.safetensors"), {{"b", affine({3}, DType::Int64, 1.0, 0.0)}});
  const NamedTensors out = load_safetensors(path("w.safetensors"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, "b");
  EXPECT_EQ(files_in(dir_), (std::vector<std::string>{"w.npy", "w.safetensors"}));
}

// ---- files written by numpy and by the Python safetensors writer --------------------------------

TEST(SerializationPython, NumpyCOrder) {
  EXPECT_TRUE(bit_equal(load_npy(ref_file("npy_c_f32.npy")), affine({2, 3, 4}, DType::Float32, 0.5, -3.0)));
}

TEST(SerializationPython, NumpyFortranOrder) {
  const Tensor f2 = load_npy(ref_file("npy_fortran_f64.npy"));
  EXPECT_TRUE(bit_equal(f2, affine({3, 5}, DType::Float64, 1.5, -2.0)));
  EXPECT_TRUE(f2.is_contiguous());
  const Tensor f4 = load_npy(ref_file("npy_fortran_4d_f32.npy"));
  EXPECT_TRUE(bit_equal(f4, affine({2, 3, 4, 5}, DType::Float32, 0.25, 1.0)));
  EXPECT_TRUE(f4.is_contiguous());
}

TEST(SerializationPython, NumpyZeroDimOneDimEmpty) {
  const Tensor a = load_npy(ref_file("npy_0d_i64.npy"));
  EXPECT_TRUE(bit_equal(a, Tensor::full({}, -42, DType::Int64)));
  EXPECT_EQ(a.dim(), 0);
  EXPECT_TRUE(bit_equal(load_npy(ref_file("npy_0d_f64.npy")), Tensor::full({}, 3.25, DType::Float64)));
  EXPECT_TRUE(bit_equal(load_npy(ref_file("npy_1d_i64.npy")), i64_big()));
  const Tensor e = load_npy(ref_file("npy_empty_f32.npy"));
  EXPECT_EQ(e.shape(), (Shape{0, 3}));
  EXPECT_EQ(e.dtype(), DType::Float32);
}

TEST(SerializationPython, NumpySpecialValuesAndVersion2) {
  EXPECT_TRUE(bit_equal(load_npy(ref_file("npy_specials_f64.npy")), f64_specials()));
  EXPECT_TRUE(bit_equal(load_npy(ref_file("npy_v2_f64.npy")), affine({4, 2}, DType::Float64, -0.75, 10.0)));
}

TEST(SerializationPython, SafetensorsMixedInDataOrderWithMetadata) {
  std::map<std::string, std::string> md;
  const NamedTensors t = load_safetensors(ref_file("st_mixed.safetensors"), &md);
  // The JSON keys are sorted by name; the tensors come back in data order.
  const std::vector<std::string> names = {"weight", "bias", "step", "ids", "conv.w", "empty"};
  ASSERT_EQ(t.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(t[i].first, names[i]) << i;
  EXPECT_TRUE(bit_equal(t[0].second, affine({2, 3}, DType::Float32, 0.5, -1.0)));
  EXPECT_TRUE(bit_equal(t[1].second, Tensor::from_vector<double>({0.1, -0.2, 1e300}, {3})));
  EXPECT_TRUE(bit_equal(t[2].second, Tensor::full({}, 123456789012.0, DType::Int64)));
  EXPECT_TRUE(bit_equal(t[3].second, i64_big()));
  EXPECT_TRUE(bit_equal(t[4].second, affine({4, 3, 2, 2}, DType::Float32, -0.125, 2.0)));
  EXPECT_EQ(t[5].second.shape(), (Shape{0, 4}));
  EXPECT_EQ(md, (std::map<std::string, std::string>{{"format", "pt"}, {"epoch", "7"}}));
}

TEST(SerializationPython, SafetensorsUnpaddedAndWithoutMetadata) {
  std::map<std::string, std::string> md;
  const NamedTensors u = load_safetensors(ref_file("st_unpadded.safetensors"), &md);
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[0].first, "weight");
  EXPECT_TRUE(bit_equal(u[0].second, affine({2, 3}, DType::Float32, 0.5, -1.0)));
  EXPECT_TRUE(bit_equal(u[1].second, Tensor::from_vector<double>({0.1, -0.2, 1e300}, {3})));
  md.clear();
  const NamedTensors n = load_safetensors(ref_file("st_nometa.safetensors"), &md);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_TRUE(bit_equal(n[0].second, affine({5}, DType::Float64, 1.0, 0.0)));
  EXPECT_TRUE(md.empty());
}

// The other direction: numpy and a strict safetensors reader (holes, overlaps, trailing bytes,
// string-only metadata) accept what hmer writes.
TEST_F(Serialization, PythonReadsFilesWrittenHere) {
  save_npy(path("cpp_f32_2x3.npy"), affine({2, 3}, DType::Float32, 0.5, -1.0));
  save_npy(path("cpp_transposed_f64.npy"), affine({3, 4}, DType::Float64, 1.0, 0.0).t());
  save_npy(path("cpp_0d_f64.npy"), Tensor::full({}, 2.5, DType::Float64));
  save_npy(path("cpp_1d_i64.npy"), i64_big());
  save_npy(path("cpp_empty_f32.npy"), Tensor::empty({0, 3}));
  save_npy(path("cpp_specials_f64.npy"), f64_specials());
  save_safetensors(path("cpp_mixed.safetensors"),
                   {{"weight", affine({2, 3}, DType::Float32, 0.5, -1.0)},
                    {"step", Tensor::full({}, 42, DType::Int64)},
                    {"empty", Tensor::empty({0, 4})},
                    {"bias", Tensor::from_vector<double>({0.1, -0.2, 1e300}, {3})}},
                   {{"epoch", "7"}, {"note", "written by hmer"}});
  const std::string cmd = std::string(HMER_TORCH_PYTHON) + " " + HMER_SOURCE_DIR +
                          "/tools/reference/ref_serialization.py --verify-cpp " + dir_.string();
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd;
}

// ---- malformed input: every error names the file -----------------------------------------------

TEST_F(Serialization, MissingFile) {
  const std::string p = path("does_not_exist.npy");
  EXPECT_TRUE(throws_naming([&] { load_npy(p); }, p, "cannot open"));
  const std::string q = path("does_not_exist.safetensors");
  EXPECT_TRUE(throws_naming([&] { load_safetensors(q); }, q, "cannot open"));
}

TEST_F(Serialization, DirectoryInsteadOfFile) {
  fs::create_directories(path("a_dir"));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("a_dir")); }, path("a_dir"), ""));
  EXPECT_TRUE(throws_naming([&] { load_safetensors(path("a_dir")); }, path("a_dir"), ""));
}

TEST_F(Serialization, NpyBadMagicAndShortFiles) {
  write_bytes(path("magic.npy"), "NOTNUMPY" + std::string(100, ' '));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("magic.npy")); }, path("magic.npy"), "bad magic"));
  write_bytes(path("short.npy"), "\x93NUM");
  EXPECT_TRUE(throws_naming([&] { load_npy(path("short.npy")); }, path("short.npy"), "not a .npy"));
  write_bytes(path("empty.npy"), "");
  EXPECT_TRUE(throws_naming([&] { load_npy(path("empty.npy")); }, path("empty.npy"), "not a .npy"));
  // A safetensors file handed to load_npy.
  save_safetensors(path("x.safetensors"), {{"x", Tensor::zeros({3})}});
  EXPECT_TRUE(throws_naming([&] { load_npy(path("x.safetensors")); }, path("x.safetensors"), "bad magic"));
}

TEST_F(Serialization, NpyTruncatedHeaderAndData) {
  save_npy(path("good.npy"), affine({4, 5}, DType::Float64, 1.0, 0.0));
  const std::string good = read_bytes(path("good.npy"));
  write_bytes(path("cut_data.npy"), good.substr(0, good.size() - 8));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("cut_data.npy")); }, path("cut_data.npy"), "truncated"));
  write_bytes(path("no_data.npy"), good.substr(0, 128));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("no_data.npy")); }, path("no_data.npy"), "truncated"));
  write_bytes(path("cut_header.npy"), good.substr(0, 40));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("cut_header.npy")); }, path("cut_header.npy"), "truncated"));
  std::string v2 = good.substr(0, 11);  // version 2 needs a 4-byte length: 12 bytes minimum
  v2[6] = '\x02';
  write_bytes(path("cut_v2.npy"), v2);
  EXPECT_TRUE(throws_naming([&] { load_npy(path("cut_v2.npy")); }, path("cut_v2.npy"), "truncated"));
}

TEST_F(Serialization, NpyUnsupportedVersionDtypeAndBadHeader) {
  const std::string four(4, '\0');
  std::string bad_version = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", four);
  bad_version[6] = '\x09';
  write_bytes(path("v9.npy"), bad_version);
  EXPECT_TRUE(throws_naming([&] { load_npy(path("v9.npy")); }, path("v9.npy"), "version"));
  EXPECT_TRUE(throws_naming([&] { load_npy(ref_file("npy_f16.npy")); }, ref_file("npy_f16.npy"), "<f2"));
  write_bytes(path("be.npy"), npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", four));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("be.npy")); }, path("be.npy"), "'>f4'"));
  write_bytes(path("i32.npy"), npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", four));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("i32.npy")); }, path("i32.npy"), "unsupported"));
  write_bytes(path("noshape.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, }", four));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("noshape.npy")); }, path("noshape.npy"), "shape"));
  write_bytes(path("nodescr.npy"), npy_bytes("{'fortran_order': False, 'shape': (1,), }", four));
  EXPECT_TRUE(throws_naming([&] { load_npy(path("nodescr.npy")); }, path("nodescr.npy"), "descr"));
}

TEST_F(Serialization, SafetensorsShortFileAndHeaderPastTheEnd) {
  write_bytes(path("short.safetensors"), "\x10\x00\x00");
  EXPECT_TRUE(throws_naming([&] { load_safetensors(path("short.safetensors")); }, path("short.safetensors"),
                            "not a safetensors file"));
  write_bytes(path("empty.safetensors"), "");
  EXPECT_TRUE(throws_naming([&] { load_safetensors(path("empty.safetensors")); }, path("empty.safetensors"),
                            "not a safetensors file"));
  std::string big = safetensors_bytes("{}", "");
  big[0] = '\xff';
  big[7] = '\x7f';  // header length ~ 2^63
  write_bytes(path("huge_header.safetensors"), big);
  EXPECT_TRUE(throws_naming([&] { load_safetensors(path("huge_header.safetensors")); },
                            path("huge_header.safetensors"), "exceeds the file size"));
  // A .npy handed to load_safetensors: its first 8 bytes read as a huge header length.
  save_npy(path("x.npy"), Tensor::zeros({3}));
  EXPECT_TRUE(throws_naming([&] { load_safetensors(path("x.npy")); }, path("x.npy"), "header length"));
}

TEST_F(Serialization, SafetensorsTruncatedData) {
  save_safetensors(path("good.safetensors"), {{"a", affine({3}, DType::Float64, 1.0, 0.0)},
                                              {"b", affine({4}, DType::Float32, 1.0, 0.0)}});
  const std::string good = read_bytes(path("good.safetensors"));
  write_bytes(path("cut.safetensors"), good.substr(0, good.size() - 1));
  EXPECT_TRUE(throws_naming([&] { load_safetensors(path("cut.safetensors")); }, path("cut.safetensors"),
                            "past the end"));
  write_bytes(path("cut_header.safetensors"), good.substr(0, 20));
  EXPECT_TRUE(throws_naming([&] { load_safetensors(path("cut_header.safetensors")); },
                            path("cut_header.safetensors"), "exceeds the file size"));
}

TEST_F(Serialization, SafetensorsMalformedJson) {
  const std::vector<std::string> headers = {
      "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]",  // unterminated
      "not json at all",
      "{\"w\": {\"dtype\": \"F32\",, }}",
  };
  int k = 0;
  for (const std::string& h : headers) {
    const std::string p = path("bad" + std::to_string(k++) + ".safetensors");
    write_bytes(p, safetensors_bytes(h, std::string(4, '\0')));
    EXPECT_TRUE(throws_naming([&] { load_safetensors(p); }, p, "malformed JSON")) << h;
  }
  const std::string arr = path("array.safetensors");
  write_bytes(arr, safetensors_bytes("[1, 2]", ""));
  EXPECT_TRUE(throws_naming([&] { load_safetensors(arr); }, arr, "not a JSON object"));
}

TEST_F(Serialization, SafetensorsMalformedEntries) {
  struct Bad {
    const char* name;
    std::string header;
    const char* what;
  };
  const std::string data(16, '\0');
  const std::vector<Bad> bads = {
      {"past_end", R"({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}})", "past the end"},
      {"past_end_2", R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [12, 20]}})", "past the end"},
      {"size_mismatch", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", "data_offsets"},
      {"reversed", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", "data_offsets"},
      {"bf16", R"({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}})", "BF16"},
      {"i32", R"({"w": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}})", "unsupported dtype"},
      {"no_offsets", R"({"w": {"dtype": "F32", "shape": [2]}})", "'w'"},
      {"no_dtype", R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", "'w'"},
      {"shape_not_list", R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", "'w'"},
      {"entry_not_object", R"({"w": 5})", "'w'"},
      {"offsets_not_numbers", R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}})", "'w'"},
  };
  for (const Bad& b : bads) {
    const std::string p = path(std::string(b.name) + ".safetensors");
    write_bytes(p, safetensors_bytes(b.header, data));
    EXPECT_TRUE(throws_naming([&] { load_safetensors(p); }, p, b.what)) << b.name;
  }
}

// safetensors defines __metadata__ as a map of strings; anything else is a malformed file and must
// be reported like one, not escape as a JSON library exception.
TEST_F(Serialization, SafetensorsMalformedMetadata) {
  for (const std::string& md : {std::string("\"oops\""), std::string("[1, 2]"), std::string("7")}) {
    const std::string p = path("md.safetensors");
    write_bytes(p, safetensors_bytes("{\"__metadata__\": " + md + "}", ""));
    std::map<std::string, std::string> out;
    EXPECT_TRUE(throws_naming([&] { load_safetensors(p, &out); }, p, "__metadata__")) << md;
  }
}

// ---- atomic writes ------------------------------------------------------------------------------

TEST_F(Serialization, FailedWriteLeavesNoTemporaryAndKeepsTheOldFile) {
  // Destination directory missing: nothing can be created.
  const std::string missing = path("no_such_dir/x.npy");
  EXPECT_TRUE(throws_naming([&] { save_npy(missing, Tensor::zeros({2})); }, missing, "cannot open"));
  EXPECT_TRUE(throws_naming([&] { save_safetensors(missing, {{"x", Tensor::zeros({2})}}); }, missing, "cannot open"));

  // Validation errors are raised before anything is written: the previous file survives intact.
  const std::string p = path("model.safetensors");
  save_safetensors(p, {{"w", affine({3}, DType::Float32, 1.0, 0.0)}});
  const std::string before = read_bytes(p);
  EXPECT_TRUE(throws_naming([&] { save_safetensors(p, {{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}); }, p,
                            "duplicate"));
  EXPECT_TRUE(throws_naming([&] { save_safetensors(p, {{"a", Tensor()}}); }, p, "undefined"));
  EXPECT_EQ(read_bytes(p), before);

  // The final rename fails (the destination is a non-empty directory): the temporary must go too.
  fs::create_directories(path("occupied.npy/inner"));
  EXPECT_TRUE(throws_naming([&] { save_npy(path("occupied.npy"), Tensor::zeros({2})); }, path("occupied.npy"),
                            "rename"));
  fs::create_directories(path("occupied.safetensors/inner"));
  EXPECT_TRUE(throws_naming([&] { save_safetensors(path("occupied.safetensors"), {{"x", Tensor::zeros({2})}}); },
                            path("occupied.safetensors"), "rename"));
  expect_no_tmp();
  EXPECT_EQ(files_in(dir_), (std::vector<std::string>{"model.safetensors", "occupied.npy", "occupied.safetensors"}));
}

}  // namespace
