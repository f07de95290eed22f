// `hmer synth`: the built-in synthetic handwriting set (data/synth.h) written in the CoMER layout
// (DIR/caption.txt, DIR/img/<name>.png) plus the InkML of the same strokes (DIR/inkml/<name>.inkml).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "data/hershey.h"
#include "data/inkml.h"
#include "data/synth.h"
#include "kernels/cpu/parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hmer::app {

namespace {

const char* kUsage =
    "usage: hmer synth --out DIR --count N --seed S [options]\n"
    "\n"
    "Generates N synthetic handwritten expressions over CAN's 111-token dictionary (fractions, scripts,\n"
    "roots, sums/integrals/limits, Greek letters, functions, brackets, relations; caption lengths like\n"
    "CROHME's) drawn with Hershey stroke glyphs in a random writer style per sample, and writes them in\n"
    "the CoMER/BTTR layout:\n"
    "  DIR/caption.txt            name<TAB>space-separated tokens, one line per sample\n"
    "  DIR/img/<name>.png         8-bit, white ink on black, like the official offline images\n"
    "  DIR/inkml/<name>.inkml     the same strokes as InkML, with the truth and the symbol segmentation\n"
    "Sample i is a pure function of (seed, i): the same seed gives byte-identical files whatever the\n"
    "thread count, and --start lets a set be generated in pieces.\n"
    "\n"
    "options:\n"
    "  --out DIR              output directory (created)\n"
    "  --count N              number of samples\n"
    "  --seed S               seed (unsigned 64-bit)\n"
    "  --split-name NAME      sample name prefix: NAME_000000, NAME_000001, ... (default: synth)\n"
    "  --start I              index of the first sample (default 0)\n"
    "  --fonts DIR            directory of the Hershey .jhf fonts (default: $HMER_HERSHEY_DIR or\n"
    "                         /usr/share/hershey-fonts, Debian's hershey-fonts-data)\n"
    "  --no-inkml             do not write DIR/inkml\n"
    "  --sheet FILE           also write a 4x4 sheet of the first 16 samples (PNG) to judge them by eye\n"
    "  --from-captions FILE   draw the expressions of a caption file (name<TAB>tokens, e.g. real CROHME\n"
    "                         captions) instead of generating them; names are kept, --count (optional)\n"
    "                         takes the first N lines\n"
    "  --threads T            worker threads (default: OMP_NUM_THREADS / all cores)\n";

uint64_t parse_u64(const std::string& flag, const std::string& v, bool allow_zero) {
  size_t used = 0;
  unsigned long long n = 0;
  bool ok = !v.empty() && v[0] != '-';
  if (ok) {
    try {
      n = std::stoull(v, &used, 10);
    } catch (const std::exception&) {
      ok = false;
    }
  }
  HMER_CHECK(ok && used == v.size() && (allow_zero || n > 0), flag, ": expected a ",
             allow_zero ? "non-negative" : "positive", " integer, got '", v, "'");
  return n;
}

}  // namespace

int cmd_synth(const std::vector<std::string>& args) {
  std::string out, prefix = "synth", fonts = data::GlyphLibrary::default_font_dir(), sheet, captions;
  uint64_t count = 0, seed = 0, start = 0, threads = 0;
  bool have_count = false, have_seed = false, inkml = true;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    const auto value = [&]() -> const std::string& {
      return option_value(args, i, kUsage);
    };
    if (a == "--out") out = value();
    else if (a == "--count") { count = parse_u64(a, value(), false); have_count = true; }
    else if (a == "--seed") { seed = parse_u64(a, value(), true); have_seed = true; }
    else if (a == "--split-name") prefix = value();
    else if (a == "--start") start = parse_u64(a, value(), true);
    else if (a == "--fonts") fonts = value();
    else if (a == "--no-inkml") inkml = false;
    else if (a == "--sheet") sheet = value();
    else if (a == "--from-captions") captions = value();
    else if (a == "--threads") threads = parse_u64(a, value(), false);
    else fail("unknown option '", a, "'\n\n", kUsage);
  }
  HMER_CHECK(!out.empty(), "--out is required\n\n", kUsage);
  // --from-captions: the expressions (and names) come from a file.
  std::vector<std::pair<std::string, std::vector<std::string>>> given;
  if (!captions.empty()) {
    std::ifstream f(captions);
    HMER_CHECK(f.good(), captions, ": cannot open");
    std::string line;
    size_t line_no = 0;
    while (std::getline(f, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      const size_t tab = line.find_first_of("\t ");
      HMER_CHECK(tab != std::string::npos, captions, ":", line_no, ": expected name<TAB>tokens");
      std::vector<std::string> toks;
      std::istringstream ts(line.substr(tab + 1));
      for (std::string t; ts >> t;) toks.push_back(t);
      HMER_CHECK(!toks.empty(), captions, ":", line_no, ": no tokens");
      given.emplace_back(line.substr(0, tab), std::move(toks));
      if (have_count && given.size() >= count) break;
    }
    count = given.size();
    have_count = true;
    HMER_CHECK(count > 0, captions, ": no captions");
  }
  HMER_CHECK(have_count, "--count is required\n\n", kUsage);
  HMER_CHECK(have_seed, "--seed is required\n\n", kUsage);
  HMER_CHECK(!prefix.empty() && prefix.find_first_of("/\\\t\n ") == std::string::npos,
             "--split-name: '", prefix, "' must be non-empty without spaces or slashes");
  HMER_CHECK(start + count >= start && start + count <= (1ull << 32), "--start + --count exceeds 2^32 samples");

  const data::GlyphLibrary lib(fonts);
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(out) / "img", ec);
  HMER_CHECK(!ec, out, "/img: cannot create: ", ec.message());
  if (inkml) {
    fs::create_directories(fs::path(out) / "inkml", ec);
    HMER_CHECK(!ec, out, "/inkml: cannot create: ", ec.message());
  }
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
#endif

  data::SynthOptions opt;
  opt.name_prefix = prefix;
  const int64_t n = static_cast<int64_t>(count);
  std::vector<std::string> lines(static_cast<size_t>(n));
  std::vector<std::string> errors(static_cast<size_t>(n));
  const size_t n_sheet = sheet.empty() ? 0 : std::min<size_t>(16, static_cast<size_t>(n));
  std::vector<data::SynthSample> sheet_samples(n_sheet);
  const std::vector<int> png_params = {cv::IMWRITE_PNG_COMPRESSION, 3};
  // Each worker writes its own samples; the caption file is assembled in index order afterwards.
  cpu::parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        const uint64_t index = start + static_cast<uint64_t>(i);
        data::SynthSample s;
        if (given.empty()) {
          s = data::synth_sample(seed, index, lib, opt);
        } else {
          const auto& [name, toks] = given[static_cast<size_t>(i)];
          try {
            s = data::synth_sample_for(seed, index, toks, lib, opt);
          } catch (const Error& ex) {
            fail(captions, ": ", name, ": ", ex.what());
          }
          s.name = name;
        }
        const fs::path img = fs::path(out) / "img" / (s.name + ".png");
        HMER_CHECK(cv::imwrite(img.string(), s.image, png_params), img.string(), ": cannot write the image");
        if (inkml) data::save_inkml(data::synth_inkml(s), (fs::path(out) / "inkml" / (s.name + ".inkml")).string());
        std::string line = s.name + "\t";
        for (size_t t = 0; t < s.tokens.size(); ++t) line += (t ? " " : "") + s.tokens[t];
        lines[static_cast<size_t>(i)] = std::move(line);
        if (static_cast<size_t>(i) < n_sheet) sheet_samples[static_cast<size_t>(i)] = std::move(s);
      } catch (const std::exception& ex) {
        errors[static_cast<size_t>(i)] = ex.what();
      }
    }
  });
  for (int64_t i = 0; i < n; ++i)
    HMER_CHECK(errors[static_cast<size_t>(i)].empty(), "sample ", start + static_cast<uint64_t>(i), ": ",
               errors[static_cast<size_t>(i)]);

  const fs::path cap = fs::path(out) / "caption.txt";
  {
    std::ofstream f(cap, std::ios::binary | std::ios::trunc);
    HMER_CHECK(f.good(), cap.string(), ": cannot open for writing");
    for (const auto& l : lines) f << l << "\n";
    HMER_CHECK(f.good(), cap.string(), ": write failed");
  }
  if (!sheet.empty()) {
    const cv::Mat m = data::synth_sheet(sheet_samples, 4, 420, 150);
    HMER_CHECK(cv::imwrite(sheet, m, png_params), sheet, ": cannot write the sheet");
  }
  std::cout << "wrote " << n << " samples (seed " << seed << ", indices " << start << ".." << start + count - 1
            << ") to " << out << "\n";
  return 0;
}

}  // namespace hmer::app
