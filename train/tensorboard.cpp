#include "train/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace hmer::train {

namespace {

// table[k][b]: the CRC of byte b followed by k zero bytes, for slicing by 8.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

CrcTables make_crc_tables() {
  CrcTables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; ++b)
    for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  return t;
}

const CrcTables& crc_tables() {
  static const CrcTables t = make_crc_tables();
  return t;
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double mono_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- protobuf wire format (only what Event needs) ----------------------------------------------

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_key(std::string& out, uint32_t field, uint32_t wire_type) { put_varint(out, (field << 3) | wire_type); }

void put_fixed64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_fixed32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

void put_double(std::string& out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  put_key(out, field, 1);
  put_fixed64(out, bits);
}

// Event header fields shared by every event: wall_time (1) and step (2, int64 as a varint of its
// two's-complement bits, as protobuf encodes negative int64).
std::string event_head(double wall_time, int64_t step) {
  std::string e;
  put_double(e, 1, wall_time);
  put_key(e, 2, 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  const CrcTables& t = crc_tables();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  while (n >= 8) {
    // Little-endian load of the first four bytes folded into the running CRC.
    const uint32_t lo = c ^ (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                             static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
        t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
  return ~c;
}

uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::string tfrecord_frame(const std::string& data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_fixed64(out, data.size());
  put_fixed32(out, mask_crc32c(crc32c(out.data(), 8)));
  out += data;
  put_fixed32(out, mask_crc32c(crc32c(data.data(), data.size())));
  return out;
}

std::string encode_file_version_event(double wall_time, const std::string& version) {
  std::string e = event_head(wall_time, 0);
  put_bytes(e, 3, version);
  return e;
}

std::string encode_scalars_event(double wall_time, int64_t step,
                                 const std::vector<std::pair<std::string, float>>& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    put_bytes(value, 1, tag);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    put_key(value, 2, 5);
    put_fixed32(value, bits);
    put_bytes(summary, 1, value);
  }
  std::string e = event_head(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

std::string encode_session_start_event(double wall_time, int64_t step) {
  std::string log;
  put_key(log, 1, 0);
  put_varint(log, 1);  // SessionLog.START
  std::string e = event_head(wall_time, step);
  put_bytes(e, 7, log);
  return e;
}

// ---- EventWriter ---------------------------------------------------------------------------------

EventWriter::EventWriter(const std::string& log_dir, double flush_secs) : flush_secs_(flush_secs) {
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  if (ec) fail("EventWriter: cannot create directory ", log_dir, ": ", ec.message());
  const std::string base = log_dir + "/events.out.tfevents." +
                           std::to_string(static_cast<int64_t>(wall_seconds())) + "." + hostname();
  // O_EXCL: two writers started in the same second must not share (and interleave) one file.
  int fd = -1;
  for (int n = 0; n < 1000 && fd < 0; ++n) {
    path_ = n == 0 ? base : base + "." + std::to_string(n);
    fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) fail("EventWriter: cannot create ", path_, ": ", std::strerror(errno));
  }
  if (fd < 0) fail("EventWriter: no free event file name under ", base);
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    ::close(fd);
    fail("EventWriter: fdopen failed for ", path_);
  }
  last_flush_ = mono_seconds();
  write_record(encode_file_version_event(wall_seconds(), "brain.Event:2"));
  flush();
}

EventWriter::~EventWriter() {
  if (file_) {
    std::fflush(file_);
    std::fclose(file_);
  }
}

void EventWriter::write_record(const std::string& event) {
  const std::string rec = tfrecord_frame(event);
  if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size()) fail("EventWriter: write error on ", path_);
  if (mono_seconds() - last_flush_ >= flush_secs_) flush();
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  add_scalars({{tag, value}}, step);
}

void EventWriter::add_scalars(const std::vector<std::pair<std::string, double>>& values, int64_t step) {
  std::vector<std::pair<std::string, float>> v;
  v.reserve(values.size());
  for (const auto& [tag, x] : values) {
    HMER_CHECK(!tag.empty(), "EventWriter::add_scalars: empty tag");
    v.emplace_back(tag, static_cast<float>(x));
  }
  write_record(encode_scalars_event(wall_seconds(), step, v));
}

void EventWriter::add_session_start(int64_t step) { write_record(encode_session_start_event(wall_seconds(), step)); }

void EventWriter::flush() {
  if (std::fflush(file_) != 0) fail("EventWriter: flush failed on ", path_, ": ", std::strerror(errno));
  last_flush_ = mono_seconds();
}

}  // namespace hmer::train
