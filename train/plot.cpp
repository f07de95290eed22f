#include "train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <string>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace hmer::train::plot {

namespace {

constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
const cv::Scalar kBlack(0, 0, 0), kGrid(225, 225, 225), kAxis(60, 60, 60), kMark(170, 170, 170);

// Plot area inside a panel: room on the left for tick labels, on the right for the legend.
struct Frame {
  int left, top, right, bottom;  // pixel bounds of the plot area
  double x0, x1, y0, y1;         // data range (log10 of y on a log axis)
  bool log_y;
  double px(double x) const { return left + (x - x0) / (x1 - x0) * (right - left); }
  double py(double y) const {
    const double v = log_y ? std::log10(y) : y;
    return bottom - (v - y0) / (y1 - y0) * (bottom - top);
  }
};

bool usable(double x, double y, bool log_y) { return std::isfinite(x) && std::isfinite(y) && (!log_y || y > 0); }

void put_text(cv::Mat& img, const std::string& s, cv::Point at, double scale, const cv::Scalar& color,
              int thickness = 1) {
  cv::putText(img, s, at, kFont, scale, color, thickness, cv::LINE_AA);
}

cv::Size text_size(const std::string& s, double scale, int thickness = 1) {
  int base = 0;
  return cv::getTextSize(s, kFont, scale, thickness, &base);
}

// A dashed polyline segment: dashes of 9 px with 6 px gaps, phase carried across segments so
// a dense series still looks dashed.
void dashed_line(cv::Mat& img, cv::Point2d a, cv::Point2d b, const cv::Scalar& color, int thickness,
                 double& phase) {
  constexpr double kOn = 9, kOff = 6, kPeriod = kOn + kOff;
  const double len = std::hypot(b.x - a.x, b.y - a.y);
  if (len <= 0) return;
  double t = 0;
  while (t < len) {
    const double in_period = std::fmod(phase + t, kPeriod);
    const double seg = in_period < kOn ? std::min(kOn - in_period, len - t) : std::min(kPeriod - in_period, len - t);
    if (in_period < kOn) {
      const cv::Point2d p = a + (b - a) * (t / len), q = a + (b - a) * ((t + seg) / len);
      cv::line(img, cv::Point(cvRound(p.x), cvRound(p.y)), cv::Point(cvRound(q.x), cvRound(q.y)), color, thickness,
               cv::LINE_AA);
    }
    t += seg;
  }
  phase = std::fmod(phase + len, kPeriod);
}

std::string tick_snap(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.12g", v);
  return buf;
}

}  // namespace

std::vector<double> linear_ticks(double lo, double hi, int target) {
  std::vector<double> out;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag * 1.0000001) {
      step = m * mag;
      break;
    }
  // Multiples k·step computed from k (no accumulated rounding), snapped to 12 significant digits.
  const auto k0 = static_cast<int64_t>(std::ceil(lo / step - 1e-9));
  for (int64_t k = k0; static_cast<double>(k) * step <= hi + step * 1e-9; ++k) {
    const double v = static_cast<double>(k) * step;
    out.push_back(k == 0 ? 0.0 : std::stod(tick_snap(v)));
  }
  return out;
}

std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> out;
  if (!(lo > 0) || !(hi > 0)) return out;
  const int a = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  const int b = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  for (int k = a; k <= b; ++k) out.push_back(std::pow(10.0, k));
  return out;
}

std::string tick_label(double v, bool log_axis) {
  char buf[32];
  if (log_axis) {
    std::snprintf(buf, sizeof buf, "1e%d", static_cast<int>(std::lround(std::log10(v))));
    return buf;
  }
  const double a = std::abs(v);
  if (a == 0) return "0";
  if (a >= 1e5 || a < 1e-3) std::snprintf(buf, sizeof buf, "%.0e", v);
  else if (a >= 100) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

cv::Mat render_panel(const Panel& panel, int width, int height) {
  HMER_CHECK(width >= 200 && height >= 120, "plot::render_panel: size ", width, "x", height, " too small");
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));

  // Data ranges over the usable points.
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const Series& s : panel.series) {
    HMER_CHECK(s.x.size() == s.y.size(), "plot: series '", s.label, "' has ", s.x.size(), " x and ", s.y.size(),
               " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.x[i], s.y[i], panel.log_y)) continue;
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  }
  const bool empty = !std::isfinite(xmin);
  if (empty) {
    xmin = 0, xmax = 1;
    ymin = panel.log_y ? 1e-3 : 0, ymax = 1;
  }
  if (panel.x_min) xmin = *panel.x_min;
  if (panel.x_max) xmax = *panel.x_max;
  if (panel.y_min) ymin = *panel.y_min;
  if (panel.y_max) ymax = *panel.y_max;
  if (xmax <= xmin) xmax = xmin + 1;

  Frame f{};
  f.log_y = panel.log_y;
  f.x0 = xmin;
  f.x1 = xmax;
  std::vector<double> yt;
  if (panel.log_y) {
    if (ymax <= ymin) ymax = ymin * 10;
    yt = log_ticks(ymin, ymax);
    f.y0 = std::log10(yt.front());
    f.y1 = std::log10(yt.back());
    if (f.y1 <= f.y0) f.y1 = f.y0 + 1;
  } else {
    if (ymax <= ymin) ymax = ymin + (ymin == 0 ? 1 : std::abs(ymin) * 0.1);
    const double pad = panel.y_min && panel.y_max ? 0 : 0.04 * (ymax - ymin);
    f.y0 = panel.y_min ? ymin : ymin - pad;
    f.y1 = panel.y_max ? ymax : ymax + pad;
    yt = linear_ticks(f.y0, f.y1, 6);
  }
  const std::vector<double> xt = linear_ticks(f.x0, f.x1, 8);

  // Frame geometry: the widest y tick label decides the left margin.
  int label_w = 0;
  for (double v : yt) label_w = std::max(label_w, text_size(tick_label(v, panel.log_y), 0.45).width);
  int legend_w = 0;
  for (const Series& s : panel.series) legend_w = std::max(legend_w, text_size(s.label, 0.5).width);
  f.left = 30 + label_w + 10;
  f.right = width - (legend_w + 60);
  f.top = 34;
  f.bottom = height - 46;
  HMER_CHECK(f.right - f.left > 50 && f.bottom - f.top > 30, "plot::render_panel: ", width, "x", height,
             " leaves no room for the plot area");

  // Grid and ticks.
  for (double v : yt) {
    const int y = cvRound(f.py(v));
    if (y < f.top - 1 || y > f.bottom + 1) continue;
    cv::line(img, {f.left, y}, {f.right, y}, kGrid, 1);
    cv::line(img, {f.left - 5, y}, {f.left, y}, kAxis, 1);
    const std::string t = tick_label(v, panel.log_y);
    const cv::Size ts = text_size(t, 0.45);
    put_text(img, t, {f.left - 8 - ts.width, y + ts.height / 2}, 0.45, kBlack);
  }
  if (panel.log_y) {  // minor ticks 2..9 inside each decade
    for (size_t k = 0; k + 1 < yt.size(); ++k)
      for (int m = 2; m <= 9; ++m) {
        const int y = cvRound(f.py(yt[k] * m));
        cv::line(img, {f.left - 3, y}, {f.left, y}, kAxis, 1);
      }
  }
  for (double v : xt) {
    const int x = cvRound(f.px(v));
    if (x < f.left - 1 || x > f.right + 1) continue;
    cv::line(img, {x, f.top}, {x, f.bottom}, kGrid, 1);
    cv::line(img, {x, f.bottom}, {x, f.bottom + 5}, kAxis, 1);
    const std::string t = tick_label(v, false);
    const cv::Size ts = text_size(t, 0.45);
    put_text(img, t, {x - ts.width / 2, f.bottom + 8 + ts.height}, 0.45, kBlack);
  }
  for (size_t i = 0; i < panel.x_marks.size(); ++i) {
    const int x = cvRound(f.px(panel.x_marks[i]));
    if (x < f.left || x > f.right) continue;
    cv::line(img, {x, f.top}, {x, f.bottom}, kMark, 1);
    if (i < panel.x_mark_labels.size()) put_text(img, panel.x_mark_labels[i], {x + 3, f.top + 12}, 0.38, kAxis);
  }
  cv::rectangle(img, {f.left, f.top}, {f.right, f.bottom}, kAxis, 1);

  // Series, clipped to the plot area.
  cv::Mat area = img(cv::Rect(f.left, f.top, f.right - f.left + 1, f.bottom - f.top + 1));
  auto local = [&](double x, double y) { return cv::Point2d(f.px(x) - f.left, f.py(y) - f.top); };
  for (const Series& s : panel.series) {
    double phase = 0;
    bool have_prev = false;
    cv::Point2d prev;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.x[i], s.y[i], panel.log_y)) {
        have_prev = false;
        continue;
      }
      const cv::Point2d p = local(s.x[i], s.y[i]);
      if (have_prev) {
        if (s.dashed) dashed_line(area, prev, p, s.color, s.thickness, phase);
        else
          cv::line(area, cv::Point(cvRound(prev.x), cvRound(prev.y)), cv::Point(cvRound(p.x), cvRound(p.y)), s.color,
                   s.thickness, cv::LINE_AA);
      }
      if (s.markers) cv::circle(area, cv::Point(cvRound(p.x), cvRound(p.y)), 4, s.color, -1, cv::LINE_AA);
      prev = p;
      have_prev = true;
    }
  }

  // Titles and legend.
  put_text(img, panel.title, {f.left, 22}, 0.6, kBlack, 1);
  if (!panel.x_label.empty()) {
    const cv::Size ts = text_size(panel.x_label, 0.5);
    put_text(img, panel.x_label, {(f.left + f.right - ts.width) / 2, height - 8}, 0.5, kBlack);
  }
  if (!panel.y_label.empty()) {
    // Rotated text: draw on a strip and rotate it 90 degrees counter-clockwise.
    const cv::Size ts = text_size(panel.y_label, 0.5);
    cv::Mat strip(ts.height + 10, ts.width + 4, CV_8UC3, cv::Scalar(255, 255, 255));
    put_text(strip, panel.y_label, {2, ts.height + 3}, 0.5, kBlack);
    cv::Mat rot;
    cv::rotate(strip, rot, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int y = std::max(0, (f.top + f.bottom - rot.rows) / 2);
    if (y + rot.rows <= height && rot.cols + 2 <= width) rot.copyTo(img(cv::Rect(2, y, rot.cols, rot.rows)));
  }
  int ly = f.top + 14;
  for (const Series& s : panel.series) {
    const int x = f.right + 12;
    double phase = 0;
    if (s.dashed) dashed_line(img, {double(x), double(ly - 4)}, {double(x + 30), double(ly - 4)}, s.color, s.thickness, phase);
    else cv::line(img, {x, ly - 4}, {x + 30, ly - 4}, s.color, s.thickness, cv::LINE_AA);
    if (s.markers) cv::circle(img, {x + 15, ly - 4}, 4, s.color, -1, cv::LINE_AA);
    put_text(img, s.label, {x + 36, ly}, 0.5, kBlack);
    ly += 22;
  }
  if (empty) put_text(img, "(no data)", {(f.left + f.right) / 2 - 40, (f.top + f.bottom) / 2}, 0.6, kAxis);
  return img;
}

cv::Mat render_figure(const std::vector<Panel>& panels, int width, int panel_height, const std::string& title) {
  HMER_CHECK(!panels.empty(), "plot::render_figure: no panels");
  const int title_h = title.empty() ? 0 : 36;
  cv::Mat fig(title_h + panel_height * static_cast<int>(panels.size()), width, CV_8UC3, cv::Scalar(255, 255, 255));
  if (!title.empty()) put_text(fig, title, {12, 25}, 0.7, kBlack, 2);
  for (size_t i = 0; i < panels.size(); ++i) {
    cv::Mat p = render_panel(panels[i], width, panel_height);
    p.copyTo(fig(cv::Rect(0, title_h + static_cast<int>(i) * panel_height, width, panel_height)));
  }
  return fig;
}

void write_png(const std::string& path, const cv::Mat& image) {
  bool ok = false;
  try {
    ok = cv::imwrite(path, image);
  } catch (const cv::Exception& e) {
    fail("plot: cannot write ", path, ": ", e.what());
  }
  HMER_CHECK(ok, "plot: cannot write ", path);
}

}  // namespace hmer::train::plot
