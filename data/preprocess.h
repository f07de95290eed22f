#pragma once
// Per-sample image preprocessing and the size rules of each model family, all from config:
//   pixel transform   CAN: x = (255 - p) / 255 (ink -> 0, background -> 1); CoMER: x = p / 255
//   pad value         CAN pads with 0 after the inversion (the ink value: only the mask hides it)
//   collate skip      CAN: inside a batch, skip an item when h * maxW or w * maxH > 1600 * 320
//                     (maxima of the items accepted before it)
//   pixel budget      CoMER: samples above max_image_pixels are dropped; batches are packed while
//                     (largest area in the batch) * count <= batch_pixel_budget
//   scaling           optional, aspect kept: CoMER's ScaleToLimitRange (H in [16,256], W in
//                     [16,1024]) or a fixed height (HME100K: 120)
#include <cstdint>
#include <string>

#include <opencv2/core.hpp>

namespace YAML {
class Node;
}

namespace hmer::data {

enum class PixelTransform { InvertUnit, Unit };

struct PreprocessConfig {
  PixelTransform transform = PixelTransform::InvertUnit;
  float pad_value = 0.0f;
  int64_t collate_skip_product = 1600 * 320;  // 0 = no skipping
  int64_t max_image_pixels = 0;               // 0 = no limit
  int64_t batch_pixel_budget = 0;             // 0 = fixed batch_size only
  // ScaleToLimitRange: shrink to fit (max_h, max_w), else grow to reach (min_h, min_w); aspect kept.
  bool scale_to_range = false;
  int min_h = 16, max_h = 256, min_w = 16, max_w = 1024;
  int fixed_height = 0;  // > 0: resize every image to this height, aspect kept

  static PreprocessConfig can();    // the official CAN pipeline
  static PreprocessConfig comer();  // CoMER: p/255, pad 0, 320k pixel budget, ScaleToLimitRange
  // Keys: transform (invert | unit), pad_value, collate_skip_product, max_image_pixels,
  // batch_pixel_budget, scale_to_range, min_h, max_h, min_w, max_w, fixed_height; or preset: can | comer.
  static PreprocessConfig from_yaml(const YAML::Node& node);
  void validate() const;
};

// Resizes per the scaling options (bilinear); returns the input unchanged when none applies.
cv::Mat scale_image(const cv::Mat& img, const PreprocessConfig& cfg);

// The float value of one 8-bit pixel under the transform.
inline float transform_pixel(uint8_t p, PixelTransform t) {
  // Division (not multiplication by 1/255) so the values equal torch's (255 - p) / 255 in float32.
  return t == PixelTransform::InvertUnit ? static_cast<float>(255 - p) / 255.0f : static_cast<float>(p) / 255.0f;
}

// Writes img (CV_8UC1, h x w) transformed into dst, row r at dst + r * row_stride.
void write_transformed(const cv::Mat& img, PixelTransform t, float* dst, int64_t row_stride);

// CAN's collate rule: is an item of h x w accepted given the maxima of the items accepted so far?
inline bool collate_accepts(int64_t h, int64_t w, int64_t max_h, int64_t max_w, int64_t product) {
  return product <= 0 || (h * max_w <= product && w * max_h <= product);
}

}  // namespace hmer::data
