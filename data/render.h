#pragma once
// Renders online ink (strokes) to an 8-bit offline image like the WAP/CoMER CROHME release: white
// ink (255) on black (0), binary, strokes about 2.75 px wide, a fixed background margin, native size.
//
// Scale: coordinate units differ by orders of magnitude between collections (HAMEX ~10, KAIST ~1e4),
// so the raw units are never used directly. The default (StrokeRms) scales so that the root mean
// square of the per-stroke heights becomes `stroke_rms_height` pixels; measured on CROHME 2014 this is
// how the official images were sized: log(official scale) against log(RMS stroke height) has slope
// -0.97; with 27.5 px the median rendered/official height ratio is 1.00 and >99% of the files are
// within ±30% (docs/data.md). A 2.75 px stroke gives the official images' amount of ink.
// FitHeight fits the ink box to a height; Fixed uses a given px/unit.
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "data/inkml.h"

namespace YAML {
class Node;
}

namespace hmer::data {

enum class RenderScale { StrokeRms, FitHeight, Fixed };

struct RenderOptions {
  RenderScale scale = RenderScale::StrokeRms;
  double stroke_rms_height = 27.5;  // px (StrokeRms)
  double target_height = 100.0;     // px of the ink box (FitHeight)
  double fixed_scale = 1.0;         // px per unit (Fixed)
  double stroke_width = 2.75;       // px; fractional widths are drawn 4x supersampled
  int margin = 12;                  // px of background around the ink box, each side
  bool white_on_black = true;       // false: black ink on white
  bool antialias = false;           // the official images are binary
  int max_side = 4096;              // the scale shrinks so no side exceeds this
  int min_height = 0;               // shorter images get background rows (split above and below)
  int min_width = 0;

  // Keys: scale (stroke_rms | fit_height | fixed), stroke_rms_height, target_height, fixed_scale,
  // stroke_width, margin, white_on_black, antialias, max_side, min_height, min_width.
  static RenderOptions from_yaml(const YAML::Node& node);
};

struct InkBox {
  double min_x = 0, min_y = 0, max_x = 0, max_y = 0;
  bool empty = true;
  double width() const { return max_x - min_x; }
  double height() const { return max_y - min_y; }
};
InkBox ink_box(const std::vector<Stroke>& strokes);

// The pixels-per-unit factor the options give for these strokes (after the max_side clamp).
double render_scale(const std::vector<Stroke>& strokes, const RenderOptions& options);

// CV_8UC1 image. Throws hmer::Error when there is no point at all or a coordinate is not finite.
// Single-point strokes are drawn as dots.
cv::Mat render_strokes(const std::vector<Stroke>& strokes, const RenderOptions& options = {});

}  // namespace hmer::data
