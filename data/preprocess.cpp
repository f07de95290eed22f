#include "data/preprocess.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace hmer::data {

PreprocessConfig PreprocessConfig::can() { return PreprocessConfig{}; }

PreprocessConfig PreprocessConfig::comer() {
  PreprocessConfig c;
  c.transform = PixelTransform::Unit;
  c.pad_value = 0.0f;
  c.collate_skip_product = 0;
  c.max_image_pixels = 320000;
  c.batch_pixel_budget = 320000;
  c.scale_to_range = true;
  return c;
}

PreprocessConfig PreprocessConfig::from_yaml(const YAML::Node& node) {
  if (!node || node.IsNull()) return can();
  if (node.IsScalar()) {
    const std::string s = node.as<std::string>();
    if (s == "can") return can();
    if (s == "comer") return comer();
    fail("preprocess config: unknown preset '", s, "' (expected can or comer)");
  }
  HMER_CHECK(node.IsMap(), "preprocess config: expected a map or a preset name");
  PreprocessConfig c;
  if (node["preset"]) c = from_yaml(node["preset"]);
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "preset") continue;
    if (key == "transform") {
      const std::string s = v.as<std::string>();
      if (s == "invert") c.transform = PixelTransform::InvertUnit;
      else if (s == "unit") c.transform = PixelTransform::Unit;
      else fail("preprocess config: unknown transform '", s, "' (expected invert or unit)");
    } else if (key == "pad_value") c.pad_value = v.as<float>();
    else if (key == "collate_skip_product") c.collate_skip_product = v.as<int64_t>();
    else if (key == "max_image_pixels") c.max_image_pixels = v.as<int64_t>();
    else if (key == "batch_pixel_budget") c.batch_pixel_budget = v.as<int64_t>();
    else if (key == "scale_to_range") c.scale_to_range = v.as<bool>();
    else if (key == "min_h") c.min_h = v.as<int>();
    else if (key == "max_h") c.max_h = v.as<int>();
    else if (key == "min_w") c.min_w = v.as<int>();
    else if (key == "max_w") c.max_w = v.as<int>();
    else if (key == "fixed_height") c.fixed_height = v.as<int>();
    else fail("preprocess config: unknown key '", key, "'");
  }
  c.validate();
  return c;
}

void PreprocessConfig::validate() const {
  HMER_CHECK(std::isfinite(pad_value), "preprocess: pad_value must be finite");
  HMER_CHECK(collate_skip_product >= 0 && max_image_pixels >= 0 && batch_pixel_budget >= 0,
             "preprocess: collate_skip_product, max_image_pixels and batch_pixel_budget must be >= 0");
  if (scale_to_range)
    HMER_CHECK(min_h > 0 && min_w > 0 && min_h <= max_h && min_w <= max_w, "preprocess: scale_to_range needs 0 < min_h <= max_h (",
               min_h, ", ", max_h, ") and 0 < min_w <= max_w (", min_w, ", ", max_w, ")");
  HMER_CHECK(fixed_height >= 0 && fixed_height <= 16384, "preprocess: fixed_height ", fixed_height, " is outside [0, 16384]");
}

cv::Mat scale_image(const cv::Mat& img, const PreprocessConfig& cfg) {
  HMER_CHECK(!img.empty(), "scale_image: empty image");
  const double h = img.rows, w = img.cols;
  double f = 1.0;
  if (cfg.fixed_height > 0) {
    f = cfg.fixed_height / h;
  } else if (cfg.scale_to_range) {
    // CoMER's ScaleToLimitRange: shrink into the upper limits first, else grow to the lower ones.
    const double down = std::min(cfg.max_h / h, cfg.max_w / w);
    const double up = std::max(cfg.min_h / h, cfg.min_w / w);
    if (down < 1.0) f = down;
    else if (up > 1.0) f = up;
  }
  if (f == 1.0) return img;
  cv::Mat out;
  if (cfg.fixed_height > 0) {
    const int nw = std::max(1, static_cast<int>(std::lround(w * f)));
    cv::resize(img, out, cv::Size(nw, cfg.fixed_height), 0, 0, cv::INTER_LINEAR);
  } else {
    cv::resize(img, out, cv::Size(), f, f, cv::INTER_LINEAR);
    if (out.empty() || out.rows < 1 || out.cols < 1) {
      const int nh = std::max(1, static_cast<int>(std::lround(h * f)));
      const int nw = std::max(1, static_cast<int>(std::lround(w * f)));
      cv::resize(img, out, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
    }
  }
  return out;
}

void write_transformed(const cv::Mat& img, PixelTransform t, float* dst, int64_t row_stride) {
  HMER_CHECK(img.type() == CV_8UC1, "write_transformed: expected a CV_8UC1 image");
  // A 256-entry table: the same float for a pixel value wherever it occurs, one lookup per pixel.
  float lut[256];
  for (int p = 0; p < 256; ++p) lut[p] = transform_pixel(static_cast<uint8_t>(p), t);
  for (int r = 0; r < img.rows; ++r) {
    const uint8_t* src = img.ptr<uint8_t>(r);
    float* d = dst + r * row_stride;
    for (int c = 0; c < img.cols; ++c) d[c] = lut[src[c]];
  }
}

}  // namespace hmer::data
