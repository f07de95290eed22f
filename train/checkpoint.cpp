#include "train/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "train/tensorboard.h"

namespace hmer::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFormat = "hmer-train-state/1";
constexpr const char* kPointerFormat = "hmer-checkpoint/1";

std::function<void(std::string_view)>& fault_hook() {
  static std::function<void(std::string_view)> hook;
  return hook;
}

void fault_point(std::string_view stage) {
  if (fault_hook()) fault_hook()(stage);
}

std::string parent_dir(const std::string& path) {
  const fs::path p = fs::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

// fsync on a read-only descriptor flushes the file's (or directory's) data and metadata on Linux.
void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) fail(path, ": cannot open for fsync: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some filesystems refuse fsync on directories (EINVAL); the rename is still atomic there.
  if (rc != 0 && !(directory && (err == EINVAL || err == EROFS))) fail(path, ": fsync failed: ", std::strerror(err));
}

void rename_or_fail(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) fail(to, ": cannot rename ", from, " over it: ", std::strerror(errno));
}

struct FileDigest {
  uint64_t size = 0;
  uint32_t crc = 0;
};

FileDigest digest_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open file for reading");
  FileDigest d;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = static_cast<size_t>(f.gcount());
    d.crc = crc32c(buf.data(), got, d.crc);
    d.size += got;
  }
  if (!f.eof()) fail(path, ": read error");
  return d;
}

int64_t parse_i64(const std::string& text, const std::string& what) {
  int64_t v = 0;
  int used = 0;
  if (std::sscanf(text.c_str(), "%" SCNd64 "%n", &v, &used) != 1 || used != static_cast<int>(text.size()))
    fail(what, ": expected an integer, got '", text, "'");
  return v;
}

uint64_t parse_u64(const std::string& text, const std::string& what) {
  uint64_t v = 0;
  int used = 0;
  if (text.empty() || text[0] == '-' || std::sscanf(text.c_str(), "%" SCNu64 "%n", &v, &used) != 1 ||
      used != static_cast<int>(text.size()))
    fail(what, ": expected an unsigned integer, got '", text, "'");
  return v;
}

const std::string& md_at(const std::map<std::string, std::string>& md, const std::string& key,
                         const std::string& path) {
  const auto it = md.find(key);
  if (it == md.end()) fail(path, ": metadata key '", key, "' is missing");
  return it->second;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// dst becomes another name of src, atomically (a copy where hard links are not supported).
void link_atomic(const std::string& src, const std::string& dst) {
  const std::string tmp = dst + ".tmp";
  ::unlink(tmp.c_str());
  if (::link(src.c_str(), tmp.c_str()) != 0) {
    std::error_code ec;
    fs::copy_file(src, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) fail(dst, ": cannot link or copy ", src, ": ", ec.message());
    fsync_path(tmp, false);
  }
  rename_or_fail(tmp, dst);
}

std::string gen_name(int64_t gen, const char* kind) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "gen-%06lld.%s.safetensors", static_cast<long long>(gen), kind);
  return buf;
}

}  // namespace

void set_checkpoint_fault_hook(std::function<void(std::string_view)> hook) { fault_hook() = std::move(hook); }

// ---- durable writes --------------------------------------------------------------------------------

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, ": cannot open ", tmp, " for writing: ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail(path, ": write error on ", tmp, ": ", std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, ": fsync failed on ", tmp, ": ", std::strerror(err));
  }
  ::close(fd);
  rename_or_fail(tmp, path);
  fsync_path(parent_dir(path), true);
}

void save_safetensors_durable(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // save_safetensors already goes through its own temp file and rename, but does not fsync: write
  // under a private name, make it durable, then publish it with our own rename.
  const std::string partial = path + ".partial";
  save_safetensors(partial, tensors, metadata);
  fsync_path(partial, false);
  rename_or_fail(partial, path);
  fsync_path(parent_dir(path), true);
}

// ---- training state ------------------------------------------------------------------------------

void save_training_state(const std::string& path, const TrainingState& state,
                         const std::map<std::string, std::string>& extra_metadata) {
  std::map<std::string, std::string> md = extra_metadata;
  md["format"] = kStateFormat;
  md["step"] = std::to_string(state.step);
  md["epoch"] = std::to_string(state.epoch);
  for (const auto& [k, v] : state.optimizer.scalars) md["optimizer/" + k] = v;
  for (const auto& [name, r] : state.rngs) md["rng/" + name] = std::to_string(r.seed) + " " + std::to_string(r.offset);
  for (const auto& [k, v] : state.scalars) md["scalar/" + k] = v;
  md["json"] = state.meta.dump();
  NamedTensors tensors;
  for (const auto& [k, t] : state.optimizer.tensors) tensors.emplace_back("optimizer/" + k, t);
  for (const auto& [k, t] : state.tensors) tensors.emplace_back("extra/" + k, t);
  save_safetensors_durable(path, tensors, md);
}

TrainingState load_training_state(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::map<std::string, std::string> md;
  NamedTensors tensors = load_safetensors(path, &md);
  const auto fmt = md.find("format");
  if (fmt == md.end() || fmt->second != kStateFormat)
    fail(path, ": not an hmer training state (metadata 'format' is '", fmt == md.end() ? "" : fmt->second,
         "', expected '", kStateFormat, "')");
  TrainingState s;
  s.step = parse_i64(md_at(md, "step", path), path + ": metadata 'step'");
  s.epoch = parse_i64(md_at(md, "epoch", path), path + ": metadata 'epoch'");
  for (const auto& [k, v] : md) {
    if (starts_with(k, "optimizer/")) {
      s.optimizer.scalars[k.substr(10)] = v;
    } else if (starts_with(k, "rng/")) {
      const size_t sp = v.find(' ');
      if (sp == std::string::npos) fail(path, ": metadata '", k, "' is '", v, "', expected '<seed> <offset>'");
      s.rngs[k.substr(4)] = {parse_u64(v.substr(0, sp), path + ": metadata '" + k + "' seed"),
                             parse_u64(v.substr(sp + 1), path + ": metadata '" + k + "' offset")};
    } else if (starts_with(k, "scalar/")) {
      s.scalars[k.substr(7)] = v;
    } else if (k == "json") {
      try {
        s.meta = nlohmann::json::parse(v);
      } catch (const std::exception& e) {
        fail(path, ": metadata 'json' is not valid JSON: ", e.what());
      }
    }
  }
  for (auto& [k, t] : tensors) {
    if (starts_with(k, "optimizer/")) s.optimizer.tensors.emplace_back(k.substr(10), t);
    else if (starts_with(k, "extra/")) s.tensors.emplace_back(k.substr(6), t);
    else fail(path, ": unexpected tensor '", k, "' (expected 'optimizer/...' or 'extra/...')");
  }
  if (metadata) *metadata = std::move(md);
  return s;
}

// ---- RunDir ----------------------------------------------------------------------------------------

RunDir::RunDir(std::string root) : root_(std::move(root)) {
  HMER_CHECK(!root_.empty(), "RunDir: empty run directory path");
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

void RunDir::create() const {
  std::error_code ec;
  fs::create_directories(root_ + "/checkpoints", ec);
  if (ec) fail(root_, ": cannot create the run directory: ", ec.message());
}

void RunDir::save_config(const std::string& yaml_text) const {
  create();
  write_file_atomic(config_path(), yaml_text);
}

bool RunDir::has_checkpoint() const { return fs::exists(latest_path()); }

nlohmann::json RunDir::read_latest() const {
  const std::string p = latest_path();
  std::ifstream f(p);
  if (!f) fail(root_, ": no checkpoint here (", p, " does not exist)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    fail(p, ": malformed checkpoint pointer: ", e.what());
  }
  if (!j.is_object() || j.value("format", "") != kPointerFormat)
    fail(p, ": not an hmer checkpoint pointer (expected \"format\": \"", kPointerFormat, "\")");
  for (const char* key : {"generation", "step", "epoch", "weights", "state"})
    if (!j.contains(key)) fail(p, ": key '", key, "' is missing");
  for (const char* key : {"weights", "state"})
    for (const char* sub : {"file", "bytes", "crc32c"})
      if (!j[key].is_object() || !j[key].contains(sub)) fail(p, ": key '", key, ".", sub, "' is missing");
  return j;
}

int64_t RunDir::save_last(const NamedTensors& weights, const TrainingState& state,
                          const std::map<std::string, std::string>& weights_metadata) const {
  create();
  const int64_t gen = has_checkpoint() ? read_latest()["generation"].get<int64_t>() + 1 : 1;
  const std::string gs = std::to_string(gen);
  const std::string wrel = "checkpoints/" + gen_name(gen, "weights");
  const std::string srel = "checkpoints/" + gen_name(gen, "state");
  const std::string wpath = root_ + "/" + wrel, spath = root_ + "/" + srel;

  // 1. Both files of the new generation, complete and durable. Nothing points at them yet, so a
  //    crash here leaves only orphans that the next save deletes.
  std::map<std::string, std::string> wmd = weights_metadata;
  wmd["format"] = "pt";
  wmd["hmer/generation"] = gs;
  wmd["hmer/step"] = std::to_string(state.step);
  wmd["hmer/epoch"] = std::to_string(state.epoch);
  save_safetensors(wpath, weights, wmd);
  fsync_path(wpath, false);
  fault_point("weights_written");
  save_training_state(spath, state, {{"generation", gs}});
  fault_point("state_written");
  fsync_path(root_ + "/checkpoints", true);

  // 2. The commit: latest.json is replaced in one rename.
  const FileDigest wd = digest_file(wpath), sd = digest_file(spath);
  nlohmann::ordered_json ptr;
  ptr["format"] = kPointerFormat;
  ptr["generation"] = gen;
  ptr["step"] = state.step;
  ptr["epoch"] = state.epoch;
  ptr["weights"] = {{"file", wrel}, {"bytes", wd.size}, {"crc32c", wd.crc}};
  ptr["state"] = {{"file", srel}, {"bytes", sd.size}, {"crc32c", sd.crc}};
  write_file_atomic(latest_path(), ptr.dump(2) + "\n");
  fault_point("pointer_written");

  // 3. Convenience names and clean-up; a crash here is harmless (the pointer is already committed).
  update_links_and_clean(wrel, srel);
  return gen;
}

void RunDir::update_links_and_clean(const std::string& wrel, const std::string& srel) const {
  link_atomic(root_ + "/" + wrel, weights_last_path());
  link_atomic(root_ + "/" + srel, state_last_path());
  fsync_path(root_, true);
  fault_point("links_updated");
  const std::string keep_w = fs::path(wrel).filename().string(), keep_s = fs::path(srel).filename().string();
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(root_ + "/checkpoints", ec)) {
    const std::string name = entry.path().filename().string();
    if (starts_with(name, "gen-") && name != keep_w && name != keep_s) stale.push_back(entry.path());
  }
  for (const fs::path& p : stale) fs::remove(p, ec);
  fault_point("cleaned");
}

void RunDir::recover() const {
  if (!has_checkpoint()) return;
  const nlohmann::json ptr = read_latest();
  update_links_and_clean(ptr["weights"]["file"].get<std::string>(), ptr["state"]["file"].get<std::string>());
}

Checkpoint RunDir::load_last() const {
  const nlohmann::json ptr = read_latest();
  Checkpoint c;
  c.generation = ptr["generation"].get<int64_t>();
  const std::string gs = std::to_string(c.generation);
  std::string paths[2];
  int i = 0;
  for (const char* key : {"weights", "state"}) {
    const auto& e = ptr[key];
    const std::string path = root_ + "/" + e["file"].get<std::string>();
    if (!fs::exists(path))
      fail(latest_path(), " names ", key, " file ", path, ", which does not exist (deleted by hand?)");
    const FileDigest d = digest_file(path);
    if (d.size != e["bytes"].get<uint64_t>())
      fail(path, ": ", d.size, " bytes but the checkpoint pointer recorded ", e["bytes"].get<uint64_t>(),
           ": the file is truncated or was modified after the checkpoint was written");
    if (d.crc != e["crc32c"].get<uint32_t>())
      fail(path, ": CRC32C mismatch with the checkpoint pointer: the file is damaged or was modified after the ",
           "checkpoint was written");
    paths[i++] = path;
  }
  c.weights = load_safetensors(paths[0], &c.weights_metadata);
  const auto wg = c.weights_metadata.find("hmer/generation");
  if (wg == c.weights_metadata.end() || wg->second != gs)
    fail(paths[0], ": belongs to checkpoint generation '", wg == c.weights_metadata.end() ? "?" : wg->second,
         "', the pointer says ", gs);
  std::map<std::string, std::string> smd;
  c.state = load_training_state(paths[1], &smd);
  if (md_at(smd, "generation", paths[1]) != gs)
    fail(paths[1], ": belongs to checkpoint generation '", smd["generation"], "', the pointer says ", gs);
  return c;
}

void RunDir::save_best(const NamedTensors& weights, const std::map<std::string, std::string>& metadata) const {
  create();
  std::map<std::string, std::string> md = metadata;
  md["format"] = "pt";
  save_safetensors_durable(weights_best_path(), weights, md);
}

NamedTensors RunDir::load_best(std::map<std::string, std::string>* metadata) const {
  if (!fs::exists(weights_best_path())) fail(root_, ": no best weights yet (", weights_best_path(), " does not exist)");
  return load_safetensors(weights_best_path(), metadata);
}

}  // namespace hmer::train
