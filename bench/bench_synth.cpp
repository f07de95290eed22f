// Throughput of the built-in synthetic handwriting on one core: samples per second for generate +
// lay out + render, and for the whole `hmer synth` work per sample except the disk writes (PNG
// encoding and InkML text). Prints JSON. Usage: OMP_NUM_THREADS=1 bench_synth [samples=300] [seed=1]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "data/hershey.h"
#include "data/inkml.h"
#include "data/synth.h"
#include "kernels/cpu/parallel.h"

using namespace hmer;
using namespace hmer::data;

namespace {

double sec_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::max(1, std::atoi(argv[1])) : 300;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  const auto t_load = std::chrono::steady_clock::now();
  const GlyphLibrary lib;
  const double load_s = sec_since(t_load);

  // Warm-up (page faults, allocator).
  for (int i = 0; i < 10; ++i) (void)synth_sample(seed + 1, static_cast<uint64_t>(i), lib);

  auto t0 = std::chrono::steady_clock::now();
  size_t points = 0, pixels = 0;
  for (int i = 0; i < n; ++i) {
    const SynthSample s = synth_sample(seed, static_cast<uint64_t>(i), lib);
    for (const auto& st : s.strokes) points += st.points.size();
    pixels += static_cast<size_t>(s.image.total());
  }
  const double render_s = sec_since(t0);

  t0 = std::chrono::steady_clock::now();
  size_t png_bytes = 0, inkml_bytes = 0;
  std::vector<uchar> buf;
  const std::vector<int> params = {cv::IMWRITE_PNG_COMPRESSION, 3};
  for (int i = 0; i < n; ++i) {
    const SynthSample s = synth_sample(seed, static_cast<uint64_t>(i), lib);
    cv::imencode(".png", s.image, buf, params);
    png_bytes += buf.size();
    inkml_bytes += write_inkml(synth_inkml(s)).size();
  }
  const double full_s = sec_since(t0);

  std::printf(
      "{\"bench\": \"synth\", \"threads\": %d, \"samples\": %d, \"font_load_ms\": %.1f, "
      "\"render_per_s\": %.1f, \"render_png_inkml_per_s\": %.1f, \"mean_points\": %.0f, \"mean_pixels\": %.0f, "
      "\"mean_png_kib\": %.2f, \"mean_inkml_kib\": %.2f}\n",
      cpu::num_threads(), n, load_s * 1e3, n / render_s, n / full_s, static_cast<double>(points) / n,
      static_cast<double>(pixels) / n, png_bytes / 1024.0 / n, inkml_bytes / 1024.0 / n);
  return 0;
}
