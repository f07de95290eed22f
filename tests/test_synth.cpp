// The built-in synthetic handwriting (data/hershey.h, data/synth.h, `hmer synth`): the .jhf reader,
// glyph coverage of CAN's dictionary, determinism (same seed -> identical samples and byte-identical
// files, different seeds -> different), generated tokens all in CAN's dictionary and the caption-length
// distribution near CROHME's, every token drawable, the images white-on-black with CROHME-like sizes,
// the InkML of a sample re-reading to the same strokes, truth and image, malformed token sequences
// rejected with a message (never a crash), and the generation speed (printed).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "data/hershey.h"
#include "data/inkml.h"
#include "data/latex_tokenizer.h"
#include "data/render.h"
#include "data/synth.h"
#include "data/vocab.h"

using namespace hmer;
using namespace hmer::data;

namespace {

bool fonts_available() {
  return std::filesystem::exists(std::filesystem::path(GlyphLibrary::default_font_dir()) / "cursive.jhf");
}

#define REQUIRE_FONTS()                                                                                      \
  do {                                                                                                       \
    if (!fonts_available())                                                                                  \
      GTEST_SKIP() << "Hershey fonts not found in " << GlyphLibrary::default_font_dir()                      \
                   << " (install Debian's hershey-fonts-data or set HMER_HERSHEY_DIR)";                     \
  } while (0)

const GlyphLibrary& lib() { return GlyphLibrary::shared(); }

std::string join(const std::vector<std::string>& t) { return join_tokens(t); }

std::vector<std::string> visible_can_tokens() {
  std::vector<std::string> out;
  const Vocabulary can = Vocabulary::can_builtin();
  for (const auto& t : can.tokens())
    if (!is_structure_token(t)) out.push_back(t);
  return out;
}

// Quantile with the "index floor(q * n)" rule used for the CROHME numbers (docs/synth.md).
int quantile(std::vector<int> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

std::vector<uchar> png_bytes(const cv::Mat& m) {
  std::vector<uchar> buf;
  cv::imencode(".png", m, buf);
  return buf;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::filesystem::path temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("hmer_test_synth_" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace

// ---- the .jhf reader ---------------------------------------------------------------------------

TEST(Hershey, ParsesGlyphsPenUpsAndWrappedLines) {
  // Glyph 32 ("space"): only bounds. Glyph 33: two strokes separated by " R". Glyph 34 is wrapped
  // over two lines, as some distributions store long glyphs.
  const std::string text =
      "12345  1JZ\n"
      "  501  6MWRFRT RRYQZR[\n"
      "  502  5I[NFN\n"
      "MVFVM\n";
  const HersheyFont f = HersheyFont::parse(text, "mem.jhf");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f.glyph(' ').left, 'J' - 'R');
  EXPECT_EQ(f.glyph(' ').right, 'Z' - 'R');
  EXPECT_TRUE(f.glyph(' ').strokes.empty());
  const HersheyGlyph& g = f.glyph('!');
  EXPECT_EQ(g.left, -5);
  EXPECT_EQ(g.right, 5);
  ASSERT_EQ(g.strokes.size(), 2u);
  ASSERT_EQ(g.strokes[0].size(), 2u);
  EXPECT_EQ(g.strokes[0][0].x, 0);
  EXPECT_EQ(g.strokes[0][0].y, 'F' - 'R');
  EXPECT_EQ(g.strokes[0][1].y, 'T' - 'R');
  ASSERT_EQ(g.strokes[1].size(), 2u);
  const HersheyGlyph& w = f.glyph('"');
  ASSERT_EQ(w.strokes.size(), 1u);
  EXPECT_EQ(w.strokes[0].size(), 4u);
  EXPECT_THROW(f.glyph('#'), Error);
}

TEST(Hershey, MalformedFilesNameFileAndLine) {
  const auto expect_error = [](const std::string& text, const std::string& what) {
    try {
      HersheyFont::parse(text, "bad.jhf");
      ADD_FAILURE() << "no error for: " << text;
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("bad.jhf"), std::string::npos) << m;
      EXPECT_NE(m.find(what), std::string::npos) << m;
    }
  };
  expect_error("12345  1JZ\n  501  9MWRFRT\n", "bad.jhf:2");      // too few pairs for the count
  expect_error("12345 x1JZ\n", "not a number");                   // count not numeric
  expect_error("123\n", "too short");                             // short record
  expect_error("", "no glyphs");
  expect_error(std::string("12345  2JZR") + '\x01' + "\n", "not printable");
  EXPECT_THROW(HersheyFont::load("/nonexistent/font.jhf"), Error);
}

TEST(Hershey, ResampleKeepsVerticesAndBoundsStep) {
  const std::vector<Point> p = {{0, 0}, {1, 0}, {1, 0.25}};
  const std::vector<Point> r = resample_polyline(p, 0.1);
  ASSERT_GE(r.size(), 14u);
  EXPECT_EQ(r.front().x, 0);
  EXPECT_EQ(r.back().y, 0.25);
  bool has_corner = false;
  for (size_t i = 1; i < r.size(); ++i) {
    EXPECT_LE(std::hypot(r[i].x - r[i - 1].x, r[i].y - r[i - 1].y), 0.1 + 1e-12);
    if (r[i].x == 1 && r[i].y == 0) has_corner = true;
  }
  EXPECT_TRUE(has_corner);
}

// ---- glyph coverage ----------------------------------------------------------------------------

TEST(Hershey, EveryVisibleCanTokenHasAGlyph) {
  REQUIRE_FONTS();
  const auto toks = visible_can_tokens();
  EXPECT_EQ(toks.size(), 105u);  // 111 minus eos sos { } ^ _
  EXPECT_NO_THROW(lib().require_coverage(Vocabulary::can_builtin().tokens()));
  for (const auto& t : toks) {
    const bool drawn = is_drawn_token(t), word = !word_letters(t).empty();
    EXPECT_TRUE(drawn || word || lib().has(t)) << t;
    if (lib().has(t)) {
      const SymbolGlyph& g = lib().glyph(t);
      EXPECT_FALSE(g.strokes.empty()) << t;
      EXPECT_GE(g.bottom, g.top) << t;
    }
  }
  // Letters come in the script and the printed hand.
  EXPECT_EQ(lib().variants("x"), 2u);
  EXPECT_EQ(lib().variants("A"), 2u);
  try {
    lib().require_coverage({"x", "\\foo"});
    ADD_FAILURE() << "no error for \\foo";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\\foo"), std::string::npos) << e.what();
  }
  EXPECT_THROW(lib().glyph("\\foo"), Error);
}

TEST(Synth, EveryTokenRenders) {
  REQUIRE_FONTS();
  Generator g(5);
  SynthRandom r(g);
  for (const auto& t : visible_can_tokens()) {
    std::vector<std::string> seq;
    if (t == "\\frac") seq = {"\\frac", "{", "a", "}", "{", "b", "}"};
    else if (t == "\\sqrt") seq = {"\\sqrt", "{", "x", "}"};
    else seq = {t};
    const WriterStyle style = WriterStyle::sample(r);
    SynthSample s;
    ASSERT_NO_THROW(s = render_tokens(seq, style, r, lib())) << t;
    ASSERT_FALSE(s.image.empty()) << t;
    EXPECT_GT(cv::countNonZero(s.image), 0) << t;
    bool labelled = false;
    for (const auto& sym : s.symbols) labelled |= sym.label == t;
    EXPECT_TRUE(labelled) << t << " is not a symbol of its own rendering";
  }
  // Scripts on every kind of base, roots with an index, limits, stretched delimiters.
  for (const std::string cap :
       {"\\sum _ { i = 1 } ^ { n } a _ { i }", "\\int _ { 0 } ^ { \\infty } e ^ { - x } d x",
        "\\int \\limits _ { 0 } ^ { 1 } x d x", "\\lim _ { x \\rightarrow 0 } \\frac { \\sin x } { x } = 1",
        "\\sqrt [ 3 ] { \\frac { a } { b } }", "( \\frac { 1 } { 2 } ) ^ { n }", "\\{ x | x > 0 \\}",
        "x _ { i } ^ { 2 }", "f ^ { \\prime } ( x )", "e ^ { x ^ { 2 } }", "^ { 2 }", "{ }"}) {
    const WriterStyle style = WriterStyle::sample(r);
    if (cap == "{ }") {
      EXPECT_THROW(render_tokens(split_tokens(cap), style, r, lib()), Error);
      continue;
    }
    EXPECT_NO_THROW(render_tokens(split_tokens(cap), style, r, lib())) << cap;
  }
}

TEST(Synth, MalformedSequencesAreRejectedWithAMessage) {
  REQUIRE_FONTS();
  Generator g(6);
  SynthRandom r(g);
  const WriterStyle style = WriterStyle::sample(r);
  const std::pair<const char*, const char*> bad[] = {
      {"\\frac { a } { b", "unmatched '{'"},
      {"a } b", "unmatched '}'"},
      {"\\frac { a }", "missing argument"},
      {"x ^ { 2 } ^ { 3 }", "double superscript"},
      {"x _ 1 _ 2", "double subscript"},
      {"x + \\foo", "\\foo"},
      {"\\sqrt [ 3 { x }", "without ']'"},
  };
  for (const auto& [cap, what] : bad) {
    try {
      render_tokens(split_tokens(cap), style, r, lib());
      ADD_FAILURE() << "no error for '" << cap << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << cap << ": " << e.what();
    }
  }
  EXPECT_THROW(render_tokens({}, style, r, lib()), Error);
}

// Random token soup from the dictionary: an error or an image, never a crash.
TEST(Synth, RandomSequencesNeverCrash) {
  REQUIRE_FONTS();
  const Vocabulary can = Vocabulary::can_builtin();
  const auto& vocab = can.tokens();
  Generator g(99);
  SynthRandom r(g);
  int ok = 0, rejected = 0;
  for (int it = 0; it < 400; ++it) {
    std::vector<std::string> seq(static_cast<size_t>(r.integer(1, 25)));
    for (auto& t : seq) t = vocab[static_cast<size_t>(r.integer(2, static_cast<int>(vocab.size()) - 1))];
    const WriterStyle style = WriterStyle::sample(r);
    try {
      const SynthSample s = render_tokens(seq, style, r, lib());
      EXPECT_FALSE(s.image.empty());
      ++ok;
    } catch (const Error&) {
      ++rejected;
    }
  }
  std::printf("random sequences: %d rendered, %d rejected with an error\n", ok, rejected);
  EXPECT_GT(ok, 0);
}

// ---- determinism -------------------------------------------------------------------------------

TEST(Synth, SameSeedSameSampleDifferentSeedDifferent) {
  REQUIRE_FONTS();
  for (uint64_t i : {0ull, 1ull, 17ull, 123456ull}) {
    const SynthSample a = synth_sample(7, i, lib()), b = synth_sample(7, i, lib());
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.tokens, b.tokens);
    ASSERT_EQ(a.strokes.size(), b.strokes.size());
    for (size_t k = 0; k < a.strokes.size(); ++k) {
      ASSERT_EQ(a.strokes[k].points.size(), b.strokes[k].points.size());
      for (size_t p = 0; p < a.strokes[k].points.size(); ++p) {
        EXPECT_EQ(a.strokes[k].points[p].x, b.strokes[k].points[p].x);
        EXPECT_EQ(a.strokes[k].points[p].y, b.strokes[k].points[p].y);
      }
    }
    EXPECT_EQ(png_bytes(a.image), png_bytes(b.image));
    EXPECT_EQ(write_inkml(synth_inkml(a)), write_inkml(synth_inkml(b)));
  }
  // Different seeds (and different indices) give different sets.
  int same_tokens = 0, same_images = 0;
  for (uint64_t i = 0; i < 20; ++i) {
    const SynthSample a = synth_sample(7, i, lib()), b = synth_sample(8, i, lib());
    same_tokens += a.tokens == b.tokens;
    same_images += png_bytes(a.image) == png_bytes(b.image);
  }
  EXPECT_LE(same_tokens, 3);  // a few one-symbol captions may coincide
  EXPECT_EQ(same_images, 0);
  EXPECT_NE(synth_sample(7, 0, lib()).strokes.size() + 1000 * synth_sample(7, 0, lib()).tokens.size(),
            synth_sample(7, 1, lib()).strokes.size() + 1000 * synth_sample(7, 1, lib()).tokens.size());
  EXPECT_EQ(synth_name("synth", 42), "synth_000042");
  EXPECT_EQ(synth_name("x", 1234567), "x_1234567");
}

// The CLI: two runs with one seed (and different thread counts) write byte-identical files; another
// seed writes different ones.
TEST(Synth, CliRunsAreByteIdentical) {
  REQUIRE_FONTS();
  const std::filesystem::path bin = std::filesystem::path(HMER_REF_DIR).parent_path() / "bin" / "hmer";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << bin << " is not built (ninja bin/hmer)";
  const auto d = temp_dir("cli");
  const auto run = [&](const std::string& sub, int seed, int threads) {
    const std::string cmd = "OMP_NUM_THREADS=" + std::to_string(threads) + " " + bin.string() + " synth --out " +
                            (d / sub).string() + " --count 12 --seed " + std::to_string(seed) + " > /dev/null";
    return std::system(cmd.c_str());
  };
  ASSERT_EQ(run("a", 3, 1), 0);
  ASSERT_EQ(run("b", 3, 2), 0);
  ASSERT_EQ(run("c", 4, 1), 0);
  const std::string cap_a = read_file(d / "a" / "caption.txt");
  EXPECT_EQ(cap_a, read_file(d / "b" / "caption.txt"));
  EXPECT_NE(cap_a, read_file(d / "c" / "caption.txt"));
  int lines = 0, differ = 0;
  std::istringstream is(cap_a);
  for (std::string line; std::getline(is, line); ++lines) {
    const std::string name = line.substr(0, line.find('\t'));
    ASSERT_NE(line.find('\t'), std::string::npos) << line;
    for (const std::string& sub : {std::string("img/") + name + ".png", std::string("inkml/") + name + ".inkml"}) {
      const std::string fa = read_file(d / "a" / sub);
      EXPECT_FALSE(fa.empty()) << sub;
      EXPECT_EQ(fa, read_file(d / "b" / sub)) << sub;
      differ += fa != read_file(d / "c" / sub);
    }
  }
  EXPECT_EQ(lines, 12);
  EXPECT_EQ(differ, 24);
  // Bad options are errors, --help is not.
  EXPECT_NE(std::system((bin.string() + " synth --out " + (d / "x").string() + " --seed 1 2> /dev/null").c_str()), 0);
  EXPECT_NE(std::system((bin.string() + " synth --out " + (d / "x").string() + " --count 0 --seed 1 2> /dev/null").c_str()), 0);
  EXPECT_EQ(std::system((bin.string() + " synth --help > /dev/null").c_str()), 0);
  std::filesystem::remove_all(d);
}

// ---- tokens: dictionary, coverage, lengths -----------------------------------------------------

TEST(Synth, TokensInCanDictionaryAndLengthsLikeCrohme) {
  const Vocabulary can = Vocabulary::can_builtin();
  std::vector<int> lengths;
  std::map<std::string, int64_t> counts;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    Generator g;
    g.set_state(2024, static_cast<uint64_t>(i) << 32);
    SynthRandom r(g);
    const auto toks = generate_expression(r, sample_target_length(r));
    ASSERT_FALSE(toks.empty());
    for (const auto& t : toks) {
      ASSERT_TRUE(can.contains(t)) << "token '" << t << "' of '" << join(toks) << "' is not in CAN's dictionary";
      ASSERT_FALSE(t == "eos" || t == "sos") << join(toks);
      ++counts[t];
    }
    EXPECT_NO_THROW(can.encode(toks));
    lengths.push_back(static_cast<int>(toks.size()));
  }
  const int p10 = quantile(lengths, 0.1), p50 = quantile(lengths, 0.5), p90 = quantile(lengths, 0.9),
            p99 = quantile(lengths, 0.99);
  std::printf("SYNTH token length: p10 %d median %d p90 %d p99 %d max %d (CROHME train: 3 / 13 / 32 / 56 / 96)\n",
              p10, p50, p90, p99, *std::max_element(lengths.begin(), lengths.end()));
  EXPECT_GE(p50, 12);
  EXPECT_LE(p50, 14);
  EXPECT_GE(p90, 29);
  EXPECT_LE(p90, 35);
  EXPECT_GE(p10, 2);
  EXPECT_LE(p10, 4);
  EXPECT_GE(p99, 48);
  EXPECT_LE(p99, 64);
  // Every symbol of the dictionary is generated (eos/sos never).
  for (const auto& t : can.tokens()) {
    if (t == "eos" || t == "sos") continue;
    EXPECT_GT(counts[t], 0) << "token '" << t << "' never generated in " << n << " captions";
  }
  // Structure appears at CROHME-like rates (per caption; CROHME train: \frac 0.41, ^ 0.69, _ 0.55, \sqrt 0.20).
  EXPECT_GT(counts["\\frac"], n / 5);
  EXPECT_GT(counts["^"], n / 3);
  EXPECT_GT(counts["_"], n / 4);
  EXPECT_GT(counts["\\sqrt"], n / 10);

  // The real caption lengths, when the data is here, for the record.
  const std::string real = std::string(HMER_SOURCE_DIR) + "/../shared/data/crohme/train/caption.txt";
  std::ifstream f(real);
  if (f.good()) {
    std::vector<int> rl;
    for (std::string line; std::getline(f, line);)
      if (line.find('\t') != std::string::npos)
        rl.push_back(static_cast<int>(split_tokens(line.substr(line.find('\t') + 1)).size()));
    std::printf("CROHME train token length (measured, %zu captions): p10 %d median %d p90 %d p99 %d\n", rl.size(),
                quantile(rl, 0.1), quantile(rl, 0.5), quantile(rl, 0.9), quantile(rl, 0.99));
  }
}

// ---- images and InkML --------------------------------------------------------------------------

TEST(Synth, ImagesWhiteOnBlackWithCrohmeLikeSizes) {
  REQUIRE_FONTS();
  std::vector<int> heights, widths;
  for (uint64_t i = 0; i < 300; ++i) {
    const SynthSample s = synth_sample(31, i, lib());
    const cv::Mat& m = s.image;
    ASSERT_EQ(m.type(), CV_8UC1);
    heights.push_back(m.rows);
    widths.push_back(m.cols);
    EXPECT_GE(m.rows, 54);
    EXPECT_LE(m.rows, 481 + 1);
    EXPECT_LE(m.cols, 2116 + 1);
    // Binary, white ink on a black background with an empty margin.
    int other = 0;
    for (int y = 0; y < m.rows; ++y)
      for (int x = 0; x < m.cols; ++x) other += m.at<uchar>(y, x) != 0 && m.at<uchar>(y, x) != 255;
    EXPECT_EQ(other, 0);
    const double ink = static_cast<double>(cv::countNonZero(m)) / (m.rows * m.cols);
    EXPECT_GT(ink, 0.005) << s.name;
    EXPECT_LT(ink, 0.45) << s.name;
    EXPECT_EQ(cv::countNonZero(m.row(0)) + cv::countNonZero(m.row(m.rows - 1)), 0) << s.name;
    EXPECT_EQ(cv::countNonZero(m.col(0)) + cv::countNonZero(m.col(m.cols - 1)), 0) << s.name;
    EXPECT_EQ(cv::countNonZero(m.colRange(0, 8)), 0) << s.name;
  }
  const int hmed = quantile(heights, 0.5), h90 = quantile(heights, 0.9), wmed = quantile(widths, 0.5);
  std::printf("SYNTH image size: height median %d p90 %d, width median %d (CROHME train: 93 / 156, 268)\n", hmed,
              h90, wmed);
  EXPECT_GE(hmed, 75);
  EXPECT_LE(hmed, 120);
  EXPECT_GE(h90, 120);
  EXPECT_LE(h90, 200);
  EXPECT_GE(wmed, 180);
  EXPECT_LE(wmed, 420);
}

TEST(Synth, InkmlRoundTripsStrokesTruthAndImage) {
  REQUIRE_FONTS();
  LatexTokenizerOptions tok;
  tok.prime_to_command = false;  // the generator writes both ' and \prime, like the train captions
  const auto d = temp_dir("inkml");
  for (uint64_t i = 0; i < 40; ++i) {
    const SynthSample s = synth_sample(77, i, lib());
    const std::string path = (d / (s.name + ".inkml")).string();
    save_inkml(synth_inkml(s), path);
    const InkDocument doc = read_inkml(path);
    EXPECT_EQ(tokenize_latex(doc.truth(), tok, path), s.tokens) << doc.truth();
    ASSERT_EQ(doc.strokes.size(), s.strokes.size());
    for (size_t k = 0; k < s.strokes.size(); ++k) {
      ASSERT_EQ(doc.strokes[k].points.size(), s.strokes[k].points.size());
      for (size_t p = 0; p < s.strokes[k].points.size(); ++p) {
        ASSERT_EQ(doc.strokes[k].points[p].x, s.strokes[k].points[p].x);
        ASSERT_EQ(doc.strokes[k].points[p].y, s.strokes[k].points[p].y);
      }
    }
    // Segmentation: every stroke in exactly one symbol group.
    ASSERT_EQ(doc.groups.size(), 1u);
    std::multiset<std::string> refs;
    for (const auto& g : doc.groups[0].groups) refs.insert(g.trace_refs.begin(), g.trace_refs.end());
    EXPECT_EQ(refs.size(), s.strokes.size());
    EXPECT_EQ(std::set<std::string>(refs.begin(), refs.end()).size(), refs.size());
    // The file renders to the stored image (pixels, scale 1, the same pen and margin).
    RenderOptions ro;
    ro.scale = RenderScale::Fixed;
    ro.fixed_scale = 1.0;
    ro.stroke_width = s.style.stroke_width;
    ro.margin = 12;
    ro.min_height = 54;
    ro.max_side = 4096;
    const cv::Mat again = render_strokes(doc.strokes, ro);
    ASSERT_EQ(again.size(), s.image.size());
    EXPECT_EQ(cv::countNonZero(again != s.image), 0) << s.name;
  }
  std::filesystem::remove_all(d);
}

// Real CROHME captions (with `\limits`) can be drawn too (`hmer synth --from-captions`).
TEST(Synth, DrawsRealCaptions) {
  REQUIRE_FONTS();
  const std::string real = std::string(HMER_SOURCE_DIR) + "/../shared/data/crohme/train/caption.txt";
  std::ifstream f(real);
  if (!f.good()) GTEST_SKIP() << real << " is absent";
  int n = 0;
  for (std::string line; std::getline(f, line) && n < 300; ++n) {
    const auto toks = split_tokens(line.substr(line.find('\t') + 1));
    EXPECT_NO_THROW(synth_sample_for(1, static_cast<uint64_t>(n), toks, lib())) << line;
  }
}

// ---- speed (printed; the machine is shared, so only a sanity bound) ----------------------------

TEST(Synth, GenerationSpeed) {
  REQUIRE_FONTS();
  const int n = 150;
  const auto t0 = std::chrono::steady_clock::now();
  size_t bytes = 0;
  for (int i = 0; i < n; ++i) {
    const SynthSample s = synth_sample(3, static_cast<uint64_t>(i), lib());
    bytes += png_bytes(s.image).size() + write_inkml(synth_inkml(s)).size();
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("SYNTH speed: %.0f samples/s (generate + render + PNG encode + InkML text, one thread, %d samples, "
              "%.1f KiB each)\n",
              n / sec, n, bytes / 1024.0 / n);
  EXPECT_GT(n / sec, 10.0);
}
