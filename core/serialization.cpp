#include "core/serialization.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/ops.h"

namespace hmer {

namespace {

std::vector<char> read_file(const std::string& path) {
  // A directory opens as a stream on Linux but has no size (tellg() == -1, then a 2^64-byte
  // allocation): reject anything that is not a regular file up front.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(path, ": cannot open file for reading (missing or not a regular file)");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open file for reading");
  f.seekg(0, std::ios::end);
  const std::streamoff n = f.tellg();
  if (n < 0) fail(path, ": cannot determine the file size");
  f.seekg(0);
  std::vector<char> buf(static_cast<size_t>(n));
  if (n > 0 && !f.read(buf.data(), n)) fail(path, ": read error");
  return buf;
}

// Writes through a temporary file and a rename, so readers never see a half-written file.
void write_atomically(const std::string& path, const std::string& head, const std::vector<const Tensor*>& bodies) {
  const std::string tmp = path + ".tmp";
  // On any failure after the temporary exists, remove it: a failed save leaves the directory as it was.
  auto discard = [&tmp] {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
  };
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail(path, ": cannot open ", tmp, " for writing");
    f.write(head.data(), static_cast<std::streamsize>(head.size()));
    for (const Tensor* t : bodies) {
      const size_t n = static_cast<size_t>(t->numel()) * dtype_size(t->dtype());
      if (n) f.write(static_cast<const char*>(t->raw_data_ptr()), static_cast<std::streamsize>(n));
    }
    f.flush();
    f.close();
    if (!f) {
      discard();
      fail(path, ": write error (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    discard();
    fail(path, ": cannot rename ", tmp, ": ", ec.message());
  }
}

Tensor host_contiguous(const Tensor& t) {
  Tensor c = t.detach();
  if (!c.device().is_cpu()) c = c.to(Device::cpu());
  if (!c.is_contiguous()) c = contiguous_copy(c);
  return c;
}

const char* npy_descr(DType t) {
  switch (t) {
    case DType::Float32: return "<f4";
    case DType::Float64: return "<f8";
    case DType::Int64: return "<i8";
  }
  return "?";
}

const char* st_dtype(DType t) {
  switch (t) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::Int64: return "I64";
  }
  return "?";
}

static_assert(std::endian::native == std::endian::little, "hmer's file formats assume a little-endian host");

}  // namespace

// ---- .npy -------------------------------------------------------------------------------------

void save_npy(const std::string& path, const Tensor& t_in) {
  Tensor t = host_contiguous(t_in);
  std::string dims;
  for (size_t i = 0; i < t.shape().size(); ++i) dims += (i ? ", " : "") + std::to_string(t.shape()[i]);
  if (t.shape().size() == 1) dims += ",";
  std::string dict = std::string("{'descr': '") + npy_descr(t.dtype()) + "', 'fortran_order': False, 'shape': (" +
                     dims + "), }";
  // magic(6) + version(2) + header_len(2) + dict + padding + '\n' is a multiple of 64
  size_t total = 10 + dict.size() + 1;
  const size_t pad = (64 - total % 64) % 64;
  dict += std::string(pad, ' ') + "\n";
  std::string head = "\x93NUMPY";
  head += '\x01';
  head += '\x00';
  const uint16_t hl = static_cast<uint16_t>(dict.size());
  head += static_cast<char>(hl & 0xff);
  head += static_cast<char>(hl >> 8);
  head += dict;
  write_atomically(path, head, {&t});
}

Tensor load_npy(const std::string& path) {
  const std::vector<char> buf = read_file(path);
  if (buf.size() < 10 || std::memcmp(buf.data(), "\x93NUMPY", 6) != 0) fail(path, ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(buf[6]);
  size_t header_len, start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(buf[8]) | (static_cast<size_t>(static_cast<unsigned char>(buf[9])) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (buf.size() < 12) fail(path, ": truncated .npy header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(buf[8 + i])) << (8 * i);
    start = 12;
  } else {
    fail(path, ": unsupported .npy version ", major);
  }
  if (start + header_len > buf.size()) fail(path, ": truncated .npy header");
  const std::string h(buf.data() + start, header_len);
  std::smatch m;
  if (!std::regex_search(h, m, std::regex("'descr'\\s*:\\s*'([^']*)'"))) fail(path, ": .npy header has no descr");
  const std::string descr = m[1];
  DType dtype;
  if (descr == "<f4") dtype = DType::Float32;
  else if (descr == "<f8") dtype = DType::Float64;
  else if (descr == "<i8") dtype = DType::Int64;
  else fail(path, ": unsupported .npy dtype '", descr, "' (supported: <f4, <f8, <i8)");
  bool fortran = false;
  if (std::regex_search(h, m, std::regex("'fortran_order'\\s*:\\s*(True|False)"))) fortran = m[1] == "True";
  if (!std::regex_search(h, m, std::regex("'shape'\\s*:\\s*\\(([^)]*)\\)"))) fail(path, ": .npy header has no shape");
  Shape shape;
  const std::string dims = m[1];
  std::regex num("(\\d+)");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll((*it)[1]));
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  const size_t data_start = start + header_len;
  if (buf.size() - data_start < nbytes)
    fail(path, ": data is truncated: header says ", shape_str(shape), " ", dtype_name(dtype), " (", nbytes,
         " bytes) but the file has ", buf.size() - data_start);
  if (!fortran) {
    Tensor t = Tensor::empty(shape, dtype);
    if (nbytes) std::memcpy(t.raw_data_ptr(), buf.data() + data_start, nbytes);
    return t;
  }
  Shape rev(shape.rbegin(), shape.rend());
  Tensor t = Tensor::empty(rev, dtype);
  if (nbytes) std::memcpy(t.raw_data_ptr(), buf.data() + data_start, nbytes);
  std::vector<int64_t> perm(shape.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(perm.size() - 1 - i);
  return contiguous_copy(t.permute(perm));
}

// ---- safetensors -------------------------------------------------------------------------------

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header["__metadata__"] = md;
  }
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  std::vector<const Tensor*> bodies;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    HMER_CHECK(t.defined(), path, ": tensor '", name, "' is undefined");
    HMER_CHECK(!header.contains(name), path, ": duplicate tensor name '", name, "'");
    host.push_back(host_contiguous(t));
    const size_t n = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
    header[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  for (const Tensor& t : host) bodies.push_back(&t);
  std::string js = header.dump();
  js.append((8 - js.size() % 8) % 8, ' ');  // keep the data 8-byte aligned, as the reference writer does
  std::string head(8, '\0');
  const uint64_t n = js.size();
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  head += js;
  write_atomically(path, head, bodies);
}

NamedTensors load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  const std::vector<char> buf = read_file(path);
  if (buf.size() < 8) fail(path, ": not a safetensors file (shorter than its 8-byte header length)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(buf[i])) << (8 * i);
  if (n > buf.size() - 8) fail(path, ": header length ", n, " exceeds the file size ", buf.size());
  // ordered_json keeps the header's key order, which breaks ties between tensors that start at the
  // same offset (empty tensors) the way the writer listed them.
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(buf.begin() + 8, buf.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const std::exception& e) {
    fail(path, ": malformed JSON header: ", e.what());
  }
  if (!header.is_object()) fail(path, ": header is not a JSON object");
  const size_t data_start = 8 + n, data_size = buf.size() - data_start;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    size_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object())
        fail(path, ": __metadata__ must be a JSON object of strings, got ", it.value().type_name());
      if (metadata)
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          (*metadata)[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const auto& v = it.value();
    try {
      Entry e;
      e.name = it.key();
      const std::string dt = v.at("dtype").get<std::string>();
      if (dt == "F32") e.dtype = DType::Float32;
      else if (dt == "F64") e.dtype = DType::Float64;
      else if (dt == "I64") e.dtype = DType::Int64;
      else fail(path, ": tensor '", e.name, "' has unsupported dtype ", dt, " (supported: F32, F64, I64)");
      e.shape = v.at("shape").get<Shape>();
      const auto off = v.at("data_offsets");
      e.begin = off.at(0).get<size_t>();
      e.end = off.at(1).get<size_t>();
      const size_t want = static_cast<size_t>(shape_numel(e.shape)) * dtype_size(e.dtype);
      if (e.end < e.begin || e.end - e.begin != want)
        fail(path, ": tensor '", e.name, "' data_offsets [", e.begin, ", ", e.end, ") do not hold ", shape_str(e.shape),
             " ", dtype_name(e.dtype));
      if (e.end > data_size)
        fail(path, ": tensor '", e.name, "' data [", e.begin, ", ", e.end, ") runs past the end of the file (",
             data_size, " data bytes): truncated?");
      entries.push_back(std::move(e));
    } catch (const nlohmann::json::exception& ex) {
      fail(path, ": malformed entry for tensor '", it.key(), "': ", ex.what());
    }
  }
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  NamedTensors out;
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.end > e.begin) std::memcpy(t.raw_data_ptr(), buf.data() + data_start + e.begin, e.end - e.begin);
    out.emplace_back(e.name, t);
  }
  return out;
}

}  // namespace hmer
