#include "data/dataset.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

#include <opencv2/imgcodecs.hpp>

#include "core/error.h"

namespace fs = std::filesystem;

namespace hmer::data {

namespace {

std::string read_text_file(const std::string& path, const char* what) {
  std::error_code ec;
  HMER_CHECK(fs::exists(path, ec), path, ": the ", what, " does not exist");
  HMER_CHECK(!fs::is_directory(path, ec), path, ": the ", what, " is a directory, expected a file");
  std::ifstream f(path, std::ios::binary);
  HMER_CHECK(f.good(), path, ": cannot open the ", what);
  std::ostringstream ss;
  ss << f.rdbuf();
  HMER_CHECK(!f.bad(), path, ": read error");
  std::string s = ss.str();
  if (s.size() >= 3 && static_cast<unsigned char>(s[0]) == 0xEF && static_cast<unsigned char>(s[1]) == 0xBB &&
      static_cast<unsigned char>(s[2]) == 0xBF)
    s.erase(0, 3);
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find('\n', b);
    if (e == std::string::npos) e = s.size();
    std::string l = s.substr(b, e - b);
    if (!l.empty() && l.back() == '\r') l.pop_back();
    lines.push_back(std::move(l));
    b = e + 1;
  }
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_image_ext(const std::string& ext) {
  static const char* kExt[] = {".bmp", ".png", ".jpg", ".jpeg", ".pgm", ".tif", ".tiff", ".webp"};
  const std::string e = lower(ext);
  return std::any_of(std::begin(kExt), std::end(kExt), [&](const char* k) { return e == k; });
}

// name (file stem) -> path for every image file directly inside `dir`.
std::unordered_map<std::string, std::string> list_images(const std::string& dir) {
  std::error_code ec;
  HMER_CHECK(fs::is_directory(dir, ec), dir, ": the image directory does not exist");
  std::unordered_map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const fs::path& p = e.path();
    if (!is_image_ext(p.extension().string())) continue;
    const std::string stem = p.stem().string();
    const auto [it, inserted] = out.emplace(stem, p.string());
    HMER_CHECK(inserted, "two images for the name '", stem, "': ", it->second, " and ", p.string());
  }
  HMER_CHECK(!ec, dir, ": cannot list the directory: ", ec.message());
  return out;
}

struct CaptionLine {
  std::string name;
  std::vector<std::string> tokens;
  size_t line;
};

std::vector<CaptionLine> parse_captions(const std::string& path, bool require_tab, bool strip_jpg) {
  const std::string text = read_text_file(path, "caption file");
  const std::vector<std::string> lines = split_lines(text);
  std::vector<CaptionLine> out;
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (blank(l)) continue;
    const size_t ln = i + 1;
    std::string name, rest;
    const size_t tab = l.find('\t');
    if (tab != std::string::npos) {
      name = trim(l.substr(0, tab));
      rest = l.substr(tab + 1);
    } else {
      HMER_CHECK(!require_tab, path, ":", ln, ": expected 'name<TAB>tokens', found no tab in '", l.substr(0, 80), "'");
      const std::string t = trim(l);
      const size_t sp = t.find_first_of(" \t");
      name = t.substr(0, sp);
      rest = sp == std::string::npos ? "" : t.substr(sp);
    }
    HMER_CHECK(!name.empty(), path, ":", ln, ": the line has no sample name");
    HMER_CHECK(name.find_first_of(" \t") == std::string::npos, path, ":", ln,
               ": the sample name '", name, "' contains whitespace");
    // CAN's dataset.py: a key ending in "jpg" loses everything from its first '.'.
    if (strip_jpg && name.size() >= 3 && name.compare(name.size() - 3, 3, "jpg") == 0) name = name.substr(0, name.find('.'));
    std::vector<std::string> tokens = split_tokens(rest);
    HMER_CHECK(!tokens.empty(), path, ":", ln, ": the caption of '", name, "' has no tokens");
    const auto [it, inserted] = seen.emplace(name, ln);
    HMER_CHECK(inserted, path, ":", ln, ": the name '", name, "' was already used on line ", it->second);
    out.push_back({std::move(name), std::move(tokens), ln});
  }
  HMER_CHECK(!out.empty(), path, ": no captions");
  return out;
}

std::vector<SampleInfo> pair_with_images(const std::vector<CaptionLine>& caps, const std::string& caption_path,
                                         const std::string& image_dir, bool allow_extra) {
  auto images = list_images(image_dir);
  std::vector<SampleInfo> out;
  out.reserve(caps.size());
  for (const auto& c : caps) {
    const auto it = images.find(c.name);
    HMER_CHECK(it != images.end(), caption_path, ":", c.line, ": no image for '", c.name, "' in ", image_dir,
               " (looked for .bmp .png .jpg .jpeg .pgm .tif .webp)");
    SampleInfo s;
    s.name = c.name;
    s.tokens = c.tokens;
    s.where = caption_path + ":" + std::to_string(c.line);
    s.image_path = it->second;
    out.push_back(std::move(s));
    images.erase(it);
  }
  if (!allow_extra && !images.empty()) {
    std::vector<std::string> extra;
    for (const auto& [k, v] : images) extra.push_back(v);
    std::sort(extra.begin(), extra.end());
    std::ostringstream os;
    for (size_t i = 0; i < extra.size() && i < 5; ++i) os << (i ? ", " : "") << extra[i];
    if (extra.size() > 5) os << ", ...";
    fail(caption_path, ": ", extra.size(), " image(s) in ", image_dir, " have no caption line: ", os.str(),
         " (set allow_extra_images to ignore them)");
  }
  return out;
}

uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
int32_t le32(const unsigned char* p) {
  return static_cast<int32_t>(uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24));
}

}  // namespace

DatasetConfig DatasetConfig::from_yaml(const YAML::Node& node) {
  DatasetConfig c;
  HMER_CHECK(node && node.IsMap(), "dataset config: expected a map");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "layout") {
      const std::string s = v.as<std::string>();
      if (s == "comer" || s == "bttr") c.layout = DatasetLayout::Comer;
      else if (s == "can") c.layout = DatasetLayout::Can;
      else if (s == "inkml") c.layout = DatasetLayout::Inkml;
      else fail("dataset config: unknown layout '", s, "' (expected comer, can or inkml)");
    } else if (key == "root") c.root = v.as<std::string>();
    else if (key == "labels") c.labels_path = v.as<std::string>();
    else if (key == "images") c.image_dir = v.as<std::string>();
    else if (key == "require_tab") c.require_tab = v.as<bool>();
    else if (key == "allow_extra_images") c.allow_extra_images = v.as<bool>();
    else if (key == "skip_bad_samples") c.skip_bad_samples = v.as<bool>();
    else if (key == "latex") c.latex = LatexTokenizerOptions::from_yaml(v);
    else if (key == "render") c.render = RenderOptions::from_yaml(v);
    else fail("dataset config: unknown key '", key, "'");
  }
  return c;
}

Dataset Dataset::load(const DatasetConfig& cfg) {
  switch (cfg.layout) {
    case DatasetLayout::Comer: return load_comer(cfg.root, cfg);
    case DatasetLayout::Can: return load_can(cfg.labels_path, cfg.image_dir, cfg);
    case DatasetLayout::Inkml: return load_inkml_dir(cfg.root, cfg);
  }
  fail("dataset: unknown layout");
}

Dataset Dataset::load_comer(const std::string& split_dir, const DatasetConfig& cfg) {
  HMER_CHECK(!split_dir.empty(), "dataset (comer layout): no split directory given");
  const std::string cap = (fs::path(split_dir) / "caption.txt").string();
  const std::string img = (fs::path(split_dir) / "img").string();
  Dataset d;
  d.samples_ = pair_with_images(parse_captions(cap, cfg.require_tab, false), cap, img, cfg.allow_extra_images);
  d.source_ = split_dir;
  d.render_ = cfg.render;
  return d;
}

Dataset Dataset::load_can(const std::string& labels_path, const std::string& image_dir, const DatasetConfig& cfg) {
  HMER_CHECK(!labels_path.empty() && !image_dir.empty(), "dataset (can layout): labels and images must both be given");
  Dataset d;
  // CAN's dataset.py splits label lines on any whitespace.
  d.samples_ = pair_with_images(parse_captions(labels_path, false, true), labels_path, image_dir, cfg.allow_extra_images);
  d.source_ = labels_path;
  d.render_ = cfg.render;
  return d;
}

Dataset Dataset::load_inkml_dir(const std::string& dir, const DatasetConfig& cfg) {
  std::error_code ec;
  HMER_CHECK(fs::is_directory(dir, ec), dir, ": the InkML directory does not exist");
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec) && lower(it->path().extension().string()) == ".inkml") files.push_back(it->path().string());
  }
  HMER_CHECK(!ec, dir, ": cannot list the directory: ", ec.message());
  std::sort(files.begin(), files.end());
  HMER_CHECK(!files.empty(), dir, ": no .inkml files");
  Dataset d;
  d.source_ = dir;
  d.render_ = cfg.render;
  std::unordered_map<std::string, std::string> seen;
  for (const auto& f : files) {
    SampleInfo s;
    s.name = fs::path(f).stem().string();
    s.where = f;
    try {
      InkDocument doc = read_inkml(f);
      const std::string truth = doc.truth();
      HMER_CHECK(!trim(truth).empty(), f, ": no <annotation type=\"truth\"> with the LaTeX of the expression");
      s.tokens = tokenize_latex(truth, cfg.latex, f + ":" + std::to_string(doc.truth_line));
      HMER_CHECK(!s.tokens.empty(), f, ":", doc.truth_line, ": the truth '", truth, "' has no tokens");
      HMER_CHECK(!ink_box(doc.strokes).empty, f, ": no trace has a point");
      s.strokes = std::make_shared<const std::vector<Stroke>>(std::move(doc.strokes));
    } catch (const Error& e) {
      if (!cfg.skip_bad_samples) throw;
      d.skipped_.push_back(e.what());
      continue;
    }
    const auto [it, inserted] = seen.emplace(s.name, f);
    HMER_CHECK(inserted, "two InkML files with the name '", s.name, "': ", it->second, " and ", f);
    d.samples_.push_back(std::move(s));
  }
  return d;
}

Dataset Dataset::from_memory(const std::vector<std::string>& names, const std::vector<cv::Mat>& images,
                             const std::vector<std::vector<std::string>>& tokens) {
  HMER_CHECK(names.size() == images.size() && names.size() == tokens.size(), "Dataset::from_memory: ", names.size(),
             " names, ", images.size(), " images and ", tokens.size(), " captions");
  Dataset d;
  d.source_ = "memory";
  for (size_t i = 0; i < names.size(); ++i) {
    HMER_CHECK(!images[i].empty() && images[i].type() == CV_8UC1, "Dataset::from_memory: image ", i, " ('", names[i],
               "') must be a non-empty CV_8UC1 matrix");
    HMER_CHECK(!tokens[i].empty(), "Dataset::from_memory: sample ", i, " ('", names[i], "') has no tokens");
    SampleInfo s;
    s.name = names[i];
    s.tokens = tokens[i];
    s.where = "memory:" + std::to_string(i);
    s.image = images[i];
    s.height = images[i].rows;
    s.width = images[i].cols;
    d.samples_.push_back(std::move(s));
  }
  d.sizes_known_ = true;
  return d;
}

const SampleInfo& Dataset::info(size_t i) const {
  HMER_CHECK(i < samples_.size(), "dataset: index ", i, " is out of range (", samples_.size(), " samples)");
  return samples_[i];
}

cv::Mat Dataset::image(size_t i) const {
  const SampleInfo& s = info(i);
  if (!s.image.empty()) return s.image;
  if (s.strokes) {
    try {
      return render_strokes(*s.strokes, render_);
    } catch (const Error& e) {
      fail(s.where, ": ", e.what());
    }
  }
  HMER_CHECK(!s.image_path.empty(), s.where, ": sample '", s.name, "' has no image");
  return read_gray_image(s.image_path);
}

void Dataset::compute_sizes() {
  if (sizes_known_) return;
  for (size_t i = 0; i < samples_.size(); ++i) {
    SampleInfo& s = samples_[i];
    if (s.height >= 0) continue;
    if (!s.image_path.empty()) {
      const auto [h, w] = read_image_header_size(s.image_path);
      if (h > 0 && w > 0) {
        s.height = h;
        s.width = w;
        continue;
      }
    }
    const cv::Mat m = image(i);
    s.height = m.rows;
    s.width = m.cols;
  }
  sizes_known_ = true;
}

UnknownTokenReport Dataset::encode(const Vocabulary& vocab, const VocabConfig& cfg) {
  UnknownTokenReport report;
  std::vector<SampleInfo> kept;
  kept.reserve(samples_.size());
  for (auto& s : samples_) {
    auto ids = vocab.encode(s.tokens, cfg.token_map, cfg.on_unknown, &report, s.where);
    if (!ids) {
      skipped_.push_back(s.where + ": '" + s.name + "' skipped (unknown token)");
      continue;
    }
    HMER_CHECK(!ids->empty() || cfg.on_unknown == UnknownTokenPolicy::SkipToken, s.where, ": '", s.name,
               "' has no tokens left after the token_map");
    s.ids = std::move(*ids);
    kept.push_back(std::move(s));
  }
  samples_ = std::move(kept);
  encoded_ = true;
  return report;
}

void Dataset::validate_images() const {
  for (size_t i = 0; i < samples_.size(); ++i) {
    const cv::Mat m = image(i);
    const SampleInfo& s = samples_[i];
    if (s.height >= 0)
      HMER_CHECK(m.rows == s.height && m.cols == s.width, s.where, ": image of '", s.name, "' is ", m.rows, "x", m.cols,
                 " but its header said ", s.height, "x", s.width);
  }
}

cv::Mat read_gray_image(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  HMER_CHECK(f.good(), path, ": cannot open the image file");
  std::vector<unsigned char> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  HMER_CHECK(!f.bad(), path, ": read error");
  HMER_CHECK(!buf.empty(), path, ": the image file is empty");
  cv::Mat m;
  try {
    m = cv::imdecode(buf, cv::IMREAD_GRAYSCALE);
  } catch (const cv::Exception& e) {
    fail(path, ": cannot decode the image: ", e.what());
  }
  HMER_CHECK(!m.empty(), path, ": cannot decode the image (corrupt, truncated or not an image format OpenCV reads)");
  HMER_CHECK(m.type() == CV_8UC1, path, ": decoded to an unexpected pixel type ", m.type());
  return m;
}

std::pair<int, int> read_image_header_size(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f.good()) return {-1, -1};
  unsigned char h[32] = {0};
  f.read(reinterpret_cast<char*>(h), sizeof(h));
  const std::streamsize n = f.gcount();
  // PNG: signature, then the IHDR chunk with big-endian width and height.
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 24 && std::equal(kPng, kPng + 8, h) && std::equal(h + 12, h + 16, reinterpret_cast<const unsigned char*>("IHDR"))) {
    const uint32_t w = be32(h + 16), hh = be32(h + 20);
    if (w > 0 && hh > 0 && w < (1u << 30) && hh < (1u << 30)) return {static_cast<int>(hh), static_cast<int>(w)};
    return {-1, -1};
  }
  // BMP with a BITMAPINFOHEADER (or later): little-endian width, height (negative = top-down).
  if (n >= 26 && h[0] == 'B' && h[1] == 'M') {
    const int32_t hdr = le32(h + 14);
    if (hdr >= 40) {
      const int32_t w = le32(h + 18), hh = le32(h + 22);
      const int64_t ah = hh < 0 ? -static_cast<int64_t>(hh) : hh;
      if (w > 0 && ah > 0 && w < (1 << 30) && ah < (1 << 30)) return {static_cast<int>(ah), w};
    }
    return {-1, -1};
  }
  // JPEG: walk the segments to the first start-of-frame marker.
  if (n >= 4 && h[0] == 0xFF && h[1] == 0xD8) {
    f.clear();
    f.seekg(2);
    for (int guard = 0; guard < 1000; ++guard) {
      unsigned char m[4];
      if (!f.read(reinterpret_cast<char*>(m), 2)) break;
      if (m[0] != 0xFF) break;
      const unsigned char marker = m[1];
      if (marker == 0xFF) { f.seekg(-1, std::ios::cur); continue; }  // fill byte
      if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) continue;
      if (!f.read(reinterpret_cast<char*>(m), 2)) break;
      const int len = (m[0] << 8) | m[1];
      if (len < 2) break;
      const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        unsigned char s[5];
        if (!f.read(reinterpret_cast<char*>(s), 5)) break;
        const int hh = (s[1] << 8) | s[2], w = (s[3] << 8) | s[4];
        if (hh > 0 && w > 0) return {hh, w};
        break;
      }
      f.seekg(len - 2, std::ios::cur);
    }
  }
  return {-1, -1};
}

}  // namespace hmer::data
