#pragma once
// What a training run prints and appends while it runs:
//   CsvLogger / JsonlLogger  metrics rows, appended and flushed line by line (a killed run loses at
//                            most the line being written; reopening drops such a partial line, and
//                            rewind() drops the rows a killed run logged after its last checkpoint)
//   ProgressBar              a bar with ETA and images/s, redrawn in place on a terminal, or one
//                            plain line every N seconds when stdout is not a TTY (CI, a log file)
//   TextLog                  info/warning lines to the console and to RUN/train.log
//   format_config            the resolved config as aligned "dotted.key  value" lines
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace YAML {
class Node;
}

namespace hmer::train {

// "MM:SS" below an hour, "H:MM:SS" above, "--:--" for a negative or non-finite duration.
std::string format_duration(double seconds);

// A metrics row: a JSON object whose values are numbers, strings, booleans or null.
using LogRow = nlohmann::ordered_json;

class CsvLogger {
 public:
  // Appends to `path` (created with a header if new or empty). `columns` fixes the header; when
  // the file already has one it must be identical. With no columns, the existing header or else the
  // first row's keys (in their order) define them.
  explicit CsvLogger(std::string path, std::vector<std::string> columns = {});
  ~CsvLogger();
  CsvLogger(const CsvLogger&) = delete;
  CsvLogger& operator=(const CsvLogger&) = delete;

  // One line; a column missing from the row is left empty, a key that is not a column is an error.
  // Numbers are written with the shortest text that reads back to the same double.
  void write(const LogRow& row);
  // Keeps only the rows whose `key` column is <= max_value (for a resume from a checkpoint at step
  // max_value); rows without a number there are dropped too. Rewrites the file atomically.
  void rewind(const std::string& key, double max_value);
  const std::vector<std::string>& columns() const { return columns_; }
  const std::string& path() const { return path_; }

 private:
  void open_append();
  void write_header();

  std::string path_;
  std::vector<std::string> columns_;
  bool header_written_ = false;
  std::FILE* file_ = nullptr;
};

class JsonlLogger {
 public:
  explicit JsonlLogger(std::string path);
  ~JsonlLogger();
  JsonlLogger(const JsonlLogger&) = delete;
  JsonlLogger& operator=(const JsonlLogger&) = delete;

  void write(const LogRow& row);  // one JSON object per line (NaN/inf become null)
  // As CsvLogger::rewind: keeps the lines whose numeric `key` is <= max_value.
  void rewind(const std::string& key, double max_value);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

struct ProgressOptions {
  std::string label;        // e.g. "epoch 3/240"
  int64_t total = 0;        // steps in this bar; 0 = unknown (no percentage, no ETA)
  int64_t initial = 0;      // steps already done (a resumed epoch); not counted in the rates
  std::string unit = "img"; // what step()'s `items` counts
  std::FILE* out = stdout;
  int tty = -1;             // -1: auto (isatty(out) and $CI unset); 0: plain lines; 1: redraw in place
  double redraw_secs = 0.1;  // terminal: at most this often
  double plain_secs = 30.0;  // plain: one line this often, plus the first step and finish()
  int bar_width = 24;
  std::function<double()> clock;  // seconds; default: steady clock (tests inject a fake one)
};

class ProgressBar {
 public:
  explicit ProgressBar(ProgressOptions options);
  // One more step that processed `items` images; `postfix` is appended (e.g. "loss 1.234").
  void step(int64_t items, const std::string& postfix = "");
  // Prints a line above the bar (on a terminal the bar is cleared first and redrawn after).
  void message(const std::string& line);
  // Draws the final state and ends the line. Idempotent.
  void finish(const std::string& postfix = "");

  int64_t done() const { return done_; }
  double items_per_sec() const;  // since construction
  double steps_per_sec() const;
  double eta_secs() const;       // -1 when unknown
  bool is_tty() const { return tty_; }
  // The current line without control characters, e.g.
  //   "epoch 3/240 |##########--------------| 512/1105  46% | 12.3 img/s | 00:41<00:48 | loss 1.234"
  // plain lines (non-TTY) are "epoch 3/240 512/1105 (46%) 12.3 img/s elapsed 00:41 eta 00:48 loss 1.234".
  std::string render() const;

 private:
  void draw(bool force);
  double now() const;

  ProgressOptions o_;
  bool tty_;
  int64_t done_;
  int64_t items_ = 0;
  double start_, last_draw_ = -1e300;
  std::string postfix_;
  bool finished_ = false;
  bool drawn_ = false;  // a bar is on the terminal's current line
};

// Info and warning lines, echoed to the console (stdout / stderr) and appended to a file with a
// timestamp. With a ProgressBar attached, console lines go through ProgressBar::message.
class TextLog {
 public:
  explicit TextLog(std::string path = "", bool echo = true);
  ~TextLog();
  TextLog(const TextLog&) = delete;
  TextLog& operator=(const TextLog&) = delete;

  void info(const std::string& line);
  void warn(const std::string& line);  // "warning: <line>"
  void attach(ProgressBar* bar) { bar_ = bar; }

 private:
  void emit(const std::string& line, bool warning);

  std::FILE* file_ = nullptr;
  bool echo_;
  ProgressBar* bar_ = nullptr;
};

// The config as (dotted key, value) pairs in document order: maps recurse ("optim.lr"), sequences
// of scalars become "[a, b]", other sequences recurse with indices ("data.sets.0.path").
std::vector<std::pair<std::string, std::string>> flatten_config(const YAML::Node& node);
// Aligned "key  value" lines under a "resolved config:" heading, ready to print.
std::string format_config(const YAML::Node& node);
// The config as YAML text (for RUN/config.yaml).
std::string config_to_yaml(const YAML::Node& node);

}  // namespace hmer::train
