#include "train/logging.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "optim/optimizer.h"
#include "train/checkpoint.h"

namespace hmer::train {

namespace fs = std::filesystem;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    if (nl == std::string::npos) break;  // a partial last line is not a line
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

// A killed writer can leave a last line without its newline: cut it so the next row starts clean.
void drop_partial_last_line(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  const std::string text = read_all(path);
  if (text.empty() || text.back() == '\n') return;
  const size_t nl = text.rfind('\n');
  fs::resize_file(path, nl == std::string::npos ? 0 : nl + 1, ec);
  if (ec) fail(path, ": cannot drop a partial last line: ", ec.message());
}

std::FILE* open_append_or_fail(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (!f) fail(path, ": cannot open for appending");
  return f;
}

void write_line(std::FILE* f, const std::string& line, const std::string& path) {
  if (std::fwrite(line.data(), 1, line.size(), f) != line.size() || std::fputc('\n', f) == EOF || std::fflush(f) != 0)
    fail(path, ": write error");
}

std::string csv_quote(const std::string& s) {
  std::string v = s;
  std::replace(v.begin(), v.end(), '\n', ' ');  // one row = one line, so rewind() can read rows back
  std::replace(v.begin(), v.end(), '\r', ' ');
  if (v.find_first_of(",\"") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

std::string cell(const LogRow& v) {
  switch (v.type()) {
    case LogRow::value_t::null: return "";
    case LogRow::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case LogRow::value_t::number_integer: return std::to_string(v.get<int64_t>());
    case LogRow::value_t::number_unsigned: return std::to_string(v.get<uint64_t>());
    case LogRow::value_t::number_float: return optim::format_double(v.get<double>());
    case LogRow::value_t::string: return csv_quote(v.get<std::string>());
    default: return csv_quote(v.dump());
  }
}

std::string join_csv(const std::vector<std::string>& cells) {
  std::string out;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i) out += ',';
    out += cells[i];
  }
  return out;
}

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[48];
  if (s < 3600)
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

// ---- CsvLogger -------------------------------------------------------------------------------------

CsvLogger::CsvLogger(std::string path, std::vector<std::string> columns)
    : path_(std::move(path)), columns_(std::move(columns)) {
  drop_partial_last_line(path_);
  const std::vector<std::string> lines = split_lines(read_all(path_));
  if (!lines.empty()) {
    const std::vector<std::string> existing = csv_fields(lines[0]);
    if (!columns_.empty() && existing != columns_)
      fail(path_, ": existing header '", lines[0], "' differs from the columns '", join_csv(columns_),
           "' (a different run or config in the same folder?)");
    columns_ = existing;
    header_written_ = true;
  }
  for (size_t i = 0; i < columns_.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      HMER_CHECK(columns_[i] != columns_[j], path_, ": duplicate column '", columns_[i], "'");
  open_append();
}

CsvLogger::~CsvLogger() {
  if (file_) std::fclose(file_);
}

void CsvLogger::open_append() { file_ = open_append_or_fail(path_); }

void CsvLogger::write_header() {
  std::vector<std::string> cells;
  for (const auto& c : columns_) cells.push_back(csv_quote(c));
  write_line(file_, join_csv(cells), path_);
  header_written_ = true;
}

void CsvLogger::write(const LogRow& row) {
  HMER_CHECK(row.is_object(), path_, ": a metrics row must be a JSON object, got ", row.dump());
  if (columns_.empty())
    for (auto it = row.begin(); it != row.end(); ++it) columns_.push_back(it.key());
  for (auto it = row.begin(); it != row.end(); ++it)
    HMER_CHECK(std::find(columns_.begin(), columns_.end(), it.key()) != columns_.end(), path_, ": key '", it.key(),
               "' is not one of the columns '", join_csv(columns_), "'");
  if (!header_written_) write_header();
  std::vector<std::string> cells;
  for (const auto& c : columns_) cells.push_back(row.contains(c) ? cell(row[c]) : "");
  write_line(file_, join_csv(cells), path_);
}

void CsvLogger::rewind(const std::string& key, double max_value) {
  const auto col = std::find(columns_.begin(), columns_.end(), key);
  HMER_CHECK(col != columns_.end(), path_, ": rewind key '", key, "' is not a column");
  const size_t k = static_cast<size_t>(col - columns_.begin());
  const std::vector<std::string> lines = split_lines(read_all(path_));
  std::string kept;
  for (size_t i = 0; i < lines.size(); ++i) {
    bool keep = i == 0;
    if (!keep) {
      const std::vector<std::string> f = csv_fields(lines[i]);
      char* end = nullptr;
      if (f.size() == columns_.size() && !f[k].empty()) {
        const double v = std::strtod(f[k].c_str(), &end);
        keep = end && *end == '\0' && v <= max_value;
      }
    }
    if (keep) kept += lines[i] + "\n";
  }
  std::fclose(file_);
  file_ = nullptr;
  write_file_atomic(path_, kept);
  open_append();
}

// ---- JsonlLogger -----------------------------------------------------------------------------------

JsonlLogger::JsonlLogger(std::string path) : path_(std::move(path)) {
  drop_partial_last_line(path_);
  file_ = open_append_or_fail(path_);
}

JsonlLogger::~JsonlLogger() {
  if (file_) std::fclose(file_);
}

void JsonlLogger::write(const LogRow& row) {
  HMER_CHECK(row.is_object(), path_, ": a metrics row must be a JSON object, got ", row.dump());
  write_line(file_, row.dump(), path_);
}

void JsonlLogger::rewind(const std::string& key, double max_value) {
  std::string kept;
  for (const std::string& line : split_lines(read_all(path_))) {
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.is_object() && j.contains(key) && j[key].is_number() && j[key].get<double>() <= max_value)
        kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a damaged line is dropped with the rest of what cannot be trusted
    }
  }
  std::fclose(file_);
  file_ = nullptr;
  write_file_atomic(path_, kept);
  file_ = open_append_or_fail(path_);
}

// ---- ProgressBar -----------------------------------------------------------------------------------

ProgressBar::ProgressBar(ProgressOptions options) : o_(std::move(options)) {
  HMER_CHECK(o_.out != nullptr, "ProgressBar: no output stream");
  HMER_CHECK(o_.total >= 0 && o_.initial >= 0, "ProgressBar: total and initial must be >= 0");
  if (o_.tty < 0) {
    const char* ci = std::getenv("CI");
    tty_ = ::isatty(::fileno(o_.out)) && !(ci && *ci);
  } else {
    tty_ = o_.tty != 0;
  }
  done_ = o_.initial;
  start_ = now();
}

double ProgressBar::now() const { return o_.clock ? o_.clock() : steady_seconds(); }

double ProgressBar::items_per_sec() const {
  const double dt = now() - start_;
  return dt > 0 ? static_cast<double>(items_) / dt : 0.0;
}

double ProgressBar::steps_per_sec() const {
  const double dt = now() - start_;
  return dt > 0 ? static_cast<double>(done_ - o_.initial) / dt : 0.0;
}

double ProgressBar::eta_secs() const {
  if (o_.total <= 0) return -1;
  const double rate = steps_per_sec();
  if (done_ >= o_.total) return 0;
  return rate > 0 ? static_cast<double>(o_.total - done_) / rate : -1;
}

std::string ProgressBar::render() const {
  const double elapsed = now() - start_;
  const double ips = items_per_sec();
  const int pct = o_.total > 0 ? static_cast<int>(std::min<int64_t>(100, done_ * 100 / o_.total)) : 0;
  char buf[160];
  std::string s = o_.label;
  if (!s.empty()) s += ' ';
  if (tty_) {
    if (o_.total > 0) {
      const int w = std::max(1, o_.bar_width);
      const int fill = static_cast<int>(std::min<int64_t>(w, done_ * w / o_.total));
      s += '|';
      s.append(static_cast<size_t>(fill), '#');
      s.append(static_cast<size_t>(w - fill), '-');
      std::snprintf(buf, sizeof(buf), "| %lld/%lld %3d%%", static_cast<long long>(done_),
                    static_cast<long long>(o_.total), pct);
    } else {
      std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(done_));
    }
    s += buf;
    std::snprintf(buf, sizeof(buf), ips >= 100 ? " | %.0f %s/s | %s" : " | %.1f %s/s | %s", ips, o_.unit.c_str(),
                  format_duration(elapsed).c_str());
    s += buf;
    if (o_.total > 0) {
      s += '<';
      s += format_duration(eta_secs());
    }
  } else {
    if (o_.total > 0)
      std::snprintf(buf, sizeof(buf), "%lld/%lld (%d%%)", static_cast<long long>(done_),
                    static_cast<long long>(o_.total), pct);
    else
      std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(done_));
    s += buf;
    std::snprintf(buf, sizeof(buf), ips >= 100 ? " %.0f %s/s elapsed %s" : " %.1f %s/s elapsed %s", ips,
                  o_.unit.c_str(), format_duration(elapsed).c_str());
    s += buf;
    if (o_.total > 0) {
      s += " eta ";
      s += format_duration(eta_secs());
    }
  }
  if (!postfix_.empty()) {
    s += tty_ ? " | " : " ";
    s += postfix_;
  }
  return s;
}

void ProgressBar::draw(bool force) {
  const double t = now();
  if (tty_) {
    if (!force && t - last_draw_ < o_.redraw_secs) return;
    // \r + erase-to-end-of-line: the bar is redrawn in place and a shorter line leaves no debris.
    std::fprintf(o_.out, "\r%s\033[K", render().c_str());
    drawn_ = true;
  } else {
    const bool first = done_ - o_.initial == 1;
    if (!force && !first && t - last_draw_ < o_.plain_secs) return;
    std::fprintf(o_.out, "%s\n", render().c_str());
  }
  std::fflush(o_.out);
  last_draw_ = t;
}

void ProgressBar::step(int64_t items, const std::string& postfix) {
  ++done_;
  items_ += items;
  if (!postfix.empty()) postfix_ = postfix;
  draw(false);
}

void ProgressBar::message(const std::string& line) {
  if (tty_ && drawn_) {
    std::fprintf(o_.out, "\r\033[K%s\n", line.c_str());
    drawn_ = false;
    if (!finished_) draw(true);
  } else {
    std::fprintf(o_.out, "%s\n", line.c_str());
  }
  std::fflush(o_.out);
}

void ProgressBar::finish(const std::string& postfix) {
  if (finished_) return;
  if (!postfix.empty()) postfix_ = postfix;
  draw(true);
  if (tty_) std::fputc('\n', o_.out);
  std::fflush(o_.out);
  drawn_ = false;
  finished_ = true;
}

// ---- TextLog -----------------------------------------------------------------------------------------

TextLog::TextLog(std::string path, bool echo) : echo_(echo) {
  if (!path.empty()) file_ = open_append_or_fail(path);
}

TextLog::~TextLog() {
  if (file_) std::fclose(file_);
}

void TextLog::emit(const std::string& line, bool warning) {
  const std::string text = warning ? "warning: " + line : line;
  if (file_) {
    std::fprintf(file_, "%s %s\n", timestamp().c_str(), text.c_str());
    std::fflush(file_);
  }
  if (!echo_) return;
  if (bar_ && bar_->is_tty()) {
    bar_->message(text);  // above the bar, which is then redrawn
  } else {
    std::fprintf(warning ? stderr : stdout, "%s\n", text.c_str());
    std::fflush(warning ? stderr : stdout);
  }
}

void TextLog::info(const std::string& line) { emit(line, false); }
void TextLog::warn(const std::string& line) { emit(line, true); }

// ---- config printing ------------------------------------------------------------------------------------

namespace {

void flatten_into(const YAML::Node& n, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& out) {
  if (n.IsMap()) {
    if (n.size() == 0) out.emplace_back(prefix, "{}");
    for (const auto& kv : n) {
      const std::string k = kv.first.as<std::string>();
      flatten_into(kv.second, prefix.empty() ? k : prefix + "." + k, out);
    }
  } else if (n.IsSequence()) {
    bool scalars = true;
    for (const auto& e : n) scalars = scalars && (e.IsScalar() || e.IsNull());
    if (scalars) {
      std::string v = "[";
      for (size_t i = 0; i < n.size(); ++i) v += (i ? ", " : "") + (n[i].IsNull() ? std::string("null") : n[i].Scalar());
      out.emplace_back(prefix, v + "]");
    } else {
      for (size_t i = 0; i < n.size(); ++i) flatten_into(n[i], prefix + "." + std::to_string(i), out);
    }
  } else if (n.IsNull() || !n.IsDefined()) {
    out.emplace_back(prefix, "null");
  } else {
    out.emplace_back(prefix, n.Scalar());
  }
}

}  // namespace

std::vector<std::pair<std::string, std::string>> flatten_config(const YAML::Node& node) {
  std::vector<std::pair<std::string, std::string>> out;
  flatten_into(node, "", out);
  return out;
}

std::string format_config(const YAML::Node& node) {
  const auto rows = flatten_config(node);
  size_t w = 0;
  for (const auto& [k, v] : rows) w = std::max(w, k.size());
  std::string out = "resolved config:\n";
  for (const auto& [k, v] : rows) out += "  " + k + std::string(w - k.size() + 2, ' ') + v + "\n";
  return out;
}

std::string config_to_yaml(const YAML::Node& node) {
  YAML::Emitter e;
  e << node;
  std::string s = e.c_str();
  if (s.empty() || s.back() != '\n') s += '\n';
  return s;
}

}  // namespace hmer::train
