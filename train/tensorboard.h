#pragma once
// TensorBoard event files written without TensorFlow or protobuf: what the training loop needs is
// scalars, and their on-disk format is small enough to write by hand.
//
// A file is a sequence of TFRecords:
//   u64 length (little-endian) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
// where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 and CRC32C is the Castagnoli polynomial.
// Each record's data is a serialized tensorflow.Event protobuf:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//             SessionLog session_log = 7; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
// The first record carries file_version "brain.Event:2". tools/read_tfevents.py is an independent
// reader (CRC checks included) used by the tests.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace hmer::train {

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven, slicing by 8. `crc` continues
// a previous call: crc32c(ab) == crc32c(b, crc32c(a)). crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// TFRecord's masking, so that a CRC stored inside CRC'd data does not weaken the check.
uint32_t mask_crc32c(uint32_t crc);
// One TFRecord around `data` (framing + both CRCs).
std::string tfrecord_frame(const std::string& data);

// Hand-encoded Event protobufs (exposed for tests).
std::string encode_file_version_event(double wall_time, const std::string& version);
std::string encode_scalars_event(double wall_time, int64_t step,
                                 const std::vector<std::pair<std::string, float>>& values);
// SessionLog{status: START}: TensorBoard then discards events of this run with a step >= `step`,
// which is what a resumed run needs (the killed run may have logged past its last checkpoint).
std::string encode_session_start_event(double wall_time, int64_t step);

// Appends events to LOG_DIR/events.out.tfevents.<unix seconds>.<hostname> (a ".<n>" suffix is added
// if that name already exists, e.g. two writers in one second). Not thread-safe.
class EventWriter {
 public:
  // Creates log_dir (and parents) and writes the file_version record. flush_secs: buffered events
  // are flushed to the OS once this long has passed since the last flush (0 = after every event);
  // flush() and the destructor always flush.
  explicit EventWriter(const std::string& log_dir, double flush_secs = 2.0);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  // One event with one scalar (stored as float32, as TensorBoard does).
  void add_scalar(const std::string& tag, double value, int64_t step);
  // One event holding several scalars of the same step.
  void add_scalars(const std::vector<std::pair<std::string, double>>& values, int64_t step);
  // Marks a (re)start: TensorBoard discards this run's earlier events with a step >= `step`. After a
  // resume, pass the first step the resumed run will log (the checkpoint's step + 1 when steps are
  // logged by the number of steps completed).
  void add_session_start(int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);

  std::string path_;
  std::FILE* file_ = nullptr;
  double flush_secs_;
  double last_flush_;
};

}  // namespace hmer::train
