#pragma once
// Line charts drawn with OpenCV (no plotting library on the machine): panels with axes, "nice" tick
// values (1/2/5 × 10^k on a linear axis, decades on a log axis), grid, axis labels, a legend, solid
// or dashed lines and optional point markers, stacked vertically into one figure. Used for the
// divergence experiment's curves.png; good enough for a person to read, not for print.
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace hmer::train::plot {

struct Series {
  std::string label;
  std::vector<double> x, y;  // same length; non-finite points (and y <= 0 on a log axis) are gaps
  cv::Scalar color{0, 0, 0};  // BGR
  bool dashed = false;
  bool markers = false;       // a small circle at every point (sparse data such as eval points)
  int thickness = 2;
};

struct Panel {
  std::string title, x_label, y_label;
  bool log_y = false;
  std::vector<Series> series;
  std::optional<double> y_min, y_max;  // fixed range; otherwise from the data with a margin
  std::optional<double> x_min, x_max;  // fixed range (e.g. shared by stacked panels)
  std::vector<double> x_marks;         // thin vertical lines (e.g. schedule phase boundaries)
  std::vector<std::string> x_mark_labels;  // optional, one per mark, written at the top
};

// "Nice" tick values covering [lo, hi]: about `target` of them, at 1/2/5 × 10^k.
std::vector<double> linear_ticks(double lo, double hi, int target = 6);
// Powers of ten from floor(log10 lo) to ceil(log10 hi) (lo, hi > 0).
std::vector<double> log_ticks(double lo, double hi);
// Short tick text: "0.25", "1e-04", "1200".
std::string tick_label(double v, bool log_axis);

// One panel as a CV_8UC3 image of width x height.
cv::Mat render_panel(const Panel& panel, int width, int height);
// Panels stacked vertically under an optional title line.
cv::Mat render_figure(const std::vector<Panel>& panels, int width, int panel_height, const std::string& title = "");
// Writes a PNG, throwing hmer::Error naming the path on failure.
void write_png(const std::string& path, const cv::Mat& image);

}  // namespace hmer::train::plot
