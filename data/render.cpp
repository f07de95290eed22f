#include "data/render.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace hmer::data {

RenderOptions RenderOptions::from_yaml(const YAML::Node& node) {
  RenderOptions o;
  if (!node || node.IsNull()) return o;
  HMER_CHECK(node.IsMap(), "render config: expected a map");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "scale") {
      const std::string s = v.as<std::string>();
      if (s == "stroke_rms") o.scale = RenderScale::StrokeRms;
      else if (s == "fit_height") o.scale = RenderScale::FitHeight;
      else if (s == "fixed") o.scale = RenderScale::Fixed;
      else fail("render config: unknown scale '", s, "' (expected stroke_rms, fit_height or fixed)");
    } else if (key == "stroke_rms_height") o.stroke_rms_height = v.as<double>();
    else if (key == "target_height") o.target_height = v.as<double>();
    else if (key == "fixed_scale") o.fixed_scale = v.as<double>();
    else if (key == "stroke_width") o.stroke_width = v.as<double>();
    else if (key == "margin") o.margin = v.as<int>();
    else if (key == "white_on_black") o.white_on_black = v.as<bool>();
    else if (key == "antialias") o.antialias = v.as<bool>();
    else if (key == "max_side") o.max_side = v.as<int>();
    else if (key == "min_height") o.min_height = v.as<int>();
    else if (key == "min_width") o.min_width = v.as<int>();
    else fail("render config: unknown key '", key, "'");
  }
  return o;
}

InkBox ink_box(const std::vector<Stroke>& strokes) {
  InkBox b;
  for (const auto& s : strokes)
    for (const auto& p : s.points) {
      HMER_CHECK(std::isfinite(p.x) && std::isfinite(p.y), "render: stroke '", s.id, "' has a non-finite point (",
                 p.x, ", ", p.y, ")");
      if (b.empty) {
        b.min_x = b.max_x = p.x;
        b.min_y = b.max_y = p.y;
        b.empty = false;
      } else {
        b.min_x = std::min(b.min_x, p.x);
        b.max_x = std::max(b.max_x, p.x);
        b.min_y = std::min(b.min_y, p.y);
        b.max_y = std::max(b.max_y, p.y);
      }
    }
  return b;
}

namespace {

// Root mean square of the per-stroke heights (or, when every stroke is flat, of the per-stroke
// extents): a writing-size estimate that ignores how many symbols the expression has.
double stroke_rms(const std::vector<Stroke>& strokes, bool use_extent) {
  double sum = 0;
  int64_t n = 0;
  for (const auto& s : strokes) {
    if (s.points.empty()) continue;
    double lo_y = s.points[0].y, hi_y = lo_y, lo_x = s.points[0].x, hi_x = lo_x;
    for (const auto& p : s.points) {
      lo_y = std::min(lo_y, p.y);
      hi_y = std::max(hi_y, p.y);
      lo_x = std::min(lo_x, p.x);
      hi_x = std::max(hi_x, p.x);
    }
    const double h = use_extent ? std::max(hi_y - lo_y, hi_x - lo_x) : hi_y - lo_y;
    sum += h * h;
    ++n;
  }
  return n ? std::sqrt(sum / static_cast<double>(n)) : 0.0;
}

void check_options(const RenderOptions& o) {
  HMER_CHECK(o.stroke_width > 0 && o.stroke_width <= 64, "render: stroke_width ", o.stroke_width, " is outside (0, 64]");
  HMER_CHECK(o.margin >= 0 && o.margin <= 4096, "render: margin ", o.margin, " is outside [0, 4096]");
  HMER_CHECK(o.max_side >= 8 && o.max_side <= 65536, "render: max_side ", o.max_side, " is outside [8, 65536]");
  HMER_CHECK(o.min_height >= 0 && o.min_height <= 65536 && o.min_width >= 0 && o.min_width <= 65536,
             "render: min_height/min_width must be in [0, 65536]");
  switch (o.scale) {
    case RenderScale::StrokeRms:
      HMER_CHECK(o.stroke_rms_height > 0 && std::isfinite(o.stroke_rms_height), "render: stroke_rms_height ",
                 o.stroke_rms_height, " must be positive");
      break;
    case RenderScale::FitHeight:
      HMER_CHECK(o.target_height > 0 && std::isfinite(o.target_height), "render: target_height ", o.target_height,
                 " must be positive");
      break;
    case RenderScale::Fixed:
      HMER_CHECK(o.fixed_scale > 0 && std::isfinite(o.fixed_scale), "render: fixed_scale ", o.fixed_scale,
                 " must be positive");
      break;
  }
}

constexpr int kSuper = 4;

double pad_px(const RenderOptions& o) { return o.margin + o.stroke_width * 0.5; }

}  // namespace

double render_scale(const std::vector<Stroke>& strokes, const RenderOptions& o) {
  check_options(o);
  const InkBox box = ink_box(strokes);
  HMER_CHECK(!box.empty, "render: no ink (", strokes.size(), " strokes, no points)");
  double s = 1.0;
  switch (o.scale) {
    case RenderScale::StrokeRms: {
      double r = stroke_rms(strokes, false);
      if (r <= 0) r = stroke_rms(strokes, true);
      s = r > 0 ? o.stroke_rms_height / r : 1.0;
      break;
    }
    case RenderScale::FitHeight: {
      const double h = box.height() > 0 ? box.height() : box.width();
      s = h > 0 ? o.target_height / h : 1.0;
      break;
    }
    case RenderScale::Fixed:
      s = o.fixed_scale;
      break;
  }
  // Keep the canvas within max_side whatever the units.
  const double room = o.max_side - 2.0 * pad_px(o) - 1.0;  // one pixel of slack for rounding
  const double ext = std::max(box.width(), box.height());
  if (ext * s > room) s = std::max(room, 1.0) / ext;
  return s;
}

cv::Mat render_strokes(const std::vector<Stroke>& strokes, const RenderOptions& o) {
  const double s = render_scale(strokes, o);
  const InkBox box = ink_box(strokes);
  const double pad = pad_px(o);
  // The ink (a stroke_width band around the scaled polyline) spans [margin, size - margin).
  int w = std::max(1, static_cast<int>(std::lround(box.width() * s + 2.0 * pad)));
  int h = std::max(1, static_cast<int>(std::lround(box.height() * s + 2.0 * pad)));
  const int extra_w = std::max(0, o.min_width - w), extra_h = std::max(0, o.min_height - h);
  const double off_x = pad + extra_w / 2, off_y = pad + extra_h / 2;
  w += extra_w;
  h += extra_h;
  // OpenCV draws whole-pixel thicknesses; a fractional width (or anti-aliasing of a thin stroke) is
  // drawn on a canvas kSuper times larger and area-averaged down, then thresholded unless antialias.
  const double frac = std::fabs(o.stroke_width - std::round(o.stroke_width));
  const int k = frac > 1e-6 ? kSuper : 1;
  cv::Mat canvas(h * k, w * k, CV_8UC1, cv::Scalar(0));
  constexpr int kShift = 4;  // sub-pixel endpoints so the scaled polyline does not snap to pixels
  constexpr double kOne = 1 << kShift;
  const int thickness = std::max(1, static_cast<int>(std::lround(o.stroke_width * k)));
  const int line_type = o.antialias && k == 1 ? cv::LINE_AA : cv::LINE_8;
  std::vector<cv::Point> pts;
  for (const auto& st : strokes) {
    if (st.points.empty()) continue;
    pts.clear();
    for (const auto& p : st.points) {
      // Pixel centres: pixel (i, j) covers [i, i+1) at scale 1, so the centre maps to k*(x+0.5)-0.5.
      const double x = ((p.x - box.min_x) * s + off_x + 0.5) * k - 0.5;
      const double y = ((p.y - box.min_y) * s + off_y + 0.5) * k - 0.5;
      const cv::Point q(static_cast<int>(std::lround(x * kOne)), static_cast<int>(std::lround(y * kOne)));
      if (pts.empty() || pts.back() != q) pts.push_back(q);
    }
    if (pts.size() == 1) {
      // A dot: a disc of the stroke's width.
      cv::circle(canvas, pts[0], static_cast<int>(std::lround(o.stroke_width * k * 0.5 * kOne)), cv::Scalar(255),
                 cv::FILLED, line_type, kShift);
    } else {
      cv::polylines(canvas, pts, false, cv::Scalar(255), thickness, line_type, kShift);
    }
  }
  cv::Mat img;
  if (k == 1) {
    img = canvas;
  } else {
    cv::resize(canvas, img, cv::Size(w, h), 0, 0, cv::INTER_AREA);
    if (!o.antialias) cv::threshold(img, img, 127, 255, cv::THRESH_BINARY);
  }
  if (!o.white_on_black) img = 255 - img;
  return img;
}

}  // namespace hmer::data
