#pragma once
// Datasets in the three shapes users have (docs/data.md):
//   CoMER/BTTR  <split>/caption.txt (`name<TAB>tok tok ...`) + <split>/img/<name>.{bmp,png,jpg}
//   CAN         a labels file (`name<whitespace>tok tok ...`, a trailing ".jpg" on the name is dropped)
//               + an image directory (CAN's pickles are converted by tools/can_pickle_to_files.py)
//   InkML       a directory of .inkml files: the truth is tokenised, the strokes rendered on demand
// A Dataset holds names, tokens, ids and where each sample came from; images are decoded (or
// rendered) when asked for, so the loader's background thread does the work. Every problem is an
// hmer::Error naming the file and line: a caption line without a tab or without tokens, duplicate
// names, a caption without an image, an image without a caption, an unreadable or corrupt image.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "data/inkml.h"
#include "data/latex_tokenizer.h"
#include "data/render.h"
#include "data/vocab.h"

namespace YAML {
class Node;
}

namespace hmer::data {

enum class DatasetLayout { Comer, Can, Inkml };

struct DatasetConfig {
  DatasetLayout layout = DatasetLayout::Comer;
  std::string root;         // Comer: the split directory; Inkml: the directory (searched recursively)
  std::string labels_path;  // Can: the labels file
  std::string image_dir;    // Can: the image directory
  // Comer captions must be `name<TAB>tokens` (false: any whitespace); Can labels always split on whitespace.
  bool require_tab = true;
  // Image files that no caption names are an error unless allowed.
  bool allow_extra_images = false;
  // InkML: files whose truth is missing or does not tokenise are an error unless skipped (and listed).
  bool skip_bad_samples = false;
  LatexTokenizerOptions latex;
  RenderOptions render;

  // Keys: layout (comer | can | inkml), root, labels, images, require_tab, allow_extra_images,
  // skip_bad_samples, latex {...}, render {...}.
  static DatasetConfig from_yaml(const YAML::Node& node);
};

struct SampleInfo {
  std::string name;
  std::vector<std::string> tokens;
  std::vector<int64_t> ids;  // filled by Dataset::encode
  std::string where;         // "caption.txt:12" or the InkML path: the origin, for messages
  std::string image_path;    // an image file, or
  std::shared_ptr<const std::vector<Stroke>> strokes;  // InkML ink to render, or
  cv::Mat image;             // an in-memory image (CV_8UC1)
  int height = -1, width = -1;  // known size, -1 = not yet read
};

class Dataset {
 public:
  Dataset() = default;

  static Dataset load(const DatasetConfig& cfg);
  static Dataset load_comer(const std::string& split_dir, const DatasetConfig& cfg = {});
  static Dataset load_can(const std::string& labels_path, const std::string& image_dir, const DatasetConfig& cfg = {});
  static Dataset load_inkml_dir(const std::string& dir, const DatasetConfig& cfg = {});
  // In-memory samples (tests, synthetic data). Images must be non-empty CV_8UC1.
  static Dataset from_memory(const std::vector<std::string>& names, const std::vector<cv::Mat>& images,
                             const std::vector<std::vector<std::string>>& tokens);

  size_t size() const { return samples_.size(); }
  const SampleInfo& info(size_t i) const;
  const std::string& name(size_t i) const { return info(i).name; }

  // The sample's image as CV_8UC1 (decoded from file, rendered from ink, or the in-memory one).
  // Thread-safe. Throws naming the file when it cannot be read or decoded.
  cv::Mat image(size_t i) const;
  // (height, width) of every sample, read from file headers where possible (PNG, BMP, JPEG) and
  // decoded otherwise; cached. Needed for bucketing and pixel budgets.
  void compute_sizes();
  bool has_sizes() const { return sizes_known_; }

  // Maps every caption to ids (mapping rules, unknown-token policy from cfg). Under SkipSample the
  // samples with unknown tokens are removed; the report lists them.
  UnknownTokenReport encode(const Vocabulary& vocab, const VocabConfig& cfg);
  bool encoded() const { return encoded_; }

  // Decodes every image, throwing on the first failure (a full integrity check).
  void validate_images() const;

  // Samples left out while loading (skip_bad_samples), "where: why".
  const std::vector<std::string>& skipped() const { return skipped_; }
  const std::string& source() const { return source_; }

 private:
  std::vector<SampleInfo> samples_;
  std::vector<std::string> skipped_;
  std::string source_;
  RenderOptions render_;
  bool encoded_ = false;
  bool sizes_known_ = false;
};

// Reads an image file as 8-bit grayscale (any of BMP/PNG/JPEG/PGM...). Errors name the file.
cv::Mat read_gray_image(const std::string& path);
// (height, width) from the file header for PNG, BMP and JPEG; {-1, -1} when the format is not one
// of those or the header is damaged (the caller then decodes).
std::pair<int, int> read_image_header_size(const std::string& path);

}  // namespace hmer::data
