// Data pipeline: vocabularies, LaTeX tokenisation, InkML read/write, rendering, datasets, preprocessing,
// CAN's collate (element for element against tools/reference/ref_data.py), the loader's shuffling,
// prefetching and exact resume, and randomized fuzzing of every parser (malformed input must end in a
// clear hmer::Error, never a crash or another exception type).
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include <unistd.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/inkml.h"
#include "data/latex_tokenizer.h"
#include "data/loader.h"
#include "data/preprocess.h"
#include "data/render.h"
#include "data/vocab.h"
#include "tests/testing.h"

using namespace hmer;
using namespace hmer::data;
using hmer::test::all_close;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with the object.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("hmer_test_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

void write_file(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << content;
}

// The message of the hmer::Error `f` throws; fails the test if it throws something else or nothing.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected hmer::Error, got std::exception: " << e.what();
    return "";
  } catch (...) {
    ADD_FAILURE() << "expected hmer::Error, got an unknown exception";
    return "";
  }
  ADD_FAILURE() << "expected hmer::Error, nothing was thrown";
  return "";
}

#define EXPECT_ERROR_HAS(stmt, text)                                        \
  do {                                                                      \
    const std::string msg_ = error_of([&] { stmt; });                       \
    EXPECT_NE(msg_.find(text), std::string::npos) << "message: " << msg_;  \
  } while (0)

cv::Mat random_image(Generator& g, int h, int w) {
  cv::Mat m(h, w, CV_8UC1);
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) m.at<uint8_t>(r, c) = g.uniform_double() < 0.8 ? 0 : static_cast<uint8_t>(200 + 55 * g.uniform_double());
  return m;
}

std::string tok(const std::string& latex, const LatexTokenizerOptions& o = {}) {
  return join_tokens(tokenize_latex(latex, o));
}

Stroke make_stroke(std::vector<Point> pts, const std::string& id = "") {
  Stroke s;
  s.id = id;
  s.points = std::move(pts);
  return s;
}

}  // namespace

// ---- vocabulary -----------------------------------------------------------------------------------

TEST(Vocab, CanBuiltinMatchesTheSpec) {
  const Vocabulary v = Vocabulary::can_builtin();
  EXPECT_EQ(v.size(), 111);
  EXPECT_EQ(v.eos_id(), 0);
  EXPECT_EQ(v.sos_id(), 1);
  EXPECT_EQ(v.pad_id(), 0);
  const std::vector<std::pair<std::string, int64_t>> ids = {
      {"eos", 0},   {"sos", 1},     {"!", 2},       {"'", 3},        {"0", 11},     {"9", 20},    {"<", 21},
      {"A", 24},    {"E", 27},      {"Y", 41},      {"[", 42},       {"\\Delta", 43}, {"\\frac", 52}, {"\\prime", 68},
      {"\\rightarrow", 69}, {"\\times", 76}, {"]", 77}, {"a", 78}, {"z", 103}, {"\\{", 104}, {"|", 105},
      {"\\}", 106}, {"{", 107},     {"}", 108},     {"^", 109},      {"_", 110}};
  for (const auto& [t, i] : ids) EXPECT_EQ(v.id(t), i) << t;
  EXPECT_FALSE(v.contains("\\limits"));
  EXPECT_FALSE(v.contains("<eol>"));
}

TEST(Vocab, CanFileRoundTripAndWapFormat) {
  const Vocabulary v = Vocabulary::can_builtin();
  const Vocabulary back = Vocabulary::from_text(v.to_text(VocabFormat::Can), VocabFormat::Can, {}, "mem");
  EXPECT_EQ(back.tokens(), v.tokens());
  EXPECT_EQ(back.eos_id(), 0);
  EXPECT_EQ(back.sos_id(), 1);
  // WAP: ids need not be in file order; <eol> is eos and pad, there is no sos.
  const Vocabulary w = Vocabulary::from_text("b\t2\n<eol>\t0\r\na\t1\n\n", VocabFormat::Wap, {}, "wap.txt");
  EXPECT_EQ(w.tokens(), (std::vector<std::string>{"<eol>", "a", "b"}));
  EXPECT_EQ(w.eos_id(), 0);
  EXPECT_EQ(w.pad_id(), 0);
  EXPECT_EQ(w.sos_id(), -1);
  const Vocabulary w2 = Vocabulary::from_text(w.to_text(VocabFormat::Wap), VocabFormat::Wap, {}, "mem");
  EXPECT_EQ(w2.tokens(), w.tokens());
}

TEST(Vocab, ComerSpecialsFromConfig) {
  VocabConfig c;
  c.format = VocabFormat::Comer;
  const Vocabulary v = Vocabulary::from_text("a\nb\n\\frac\n", VocabFormat::Comer, c, "dict");
  EXPECT_EQ(v.tokens(), (std::vector<std::string>{"<pad>", "<sos>", "<eos>", "a", "b", "\\frac"}));
  EXPECT_EQ(v.pad_id(), 0);
  EXPECT_EQ(v.sos_id(), 1);
  EXPECT_EQ(v.eos_id(), 2);
  VocabConfig c2 = VocabConfig::from_yaml(YAML::Load(
      "{format: comer, add_specials: [<eos>, <sos>], specials_first: false, eos: <eos>, sos: <sos>, pad: <eos>}"));
  const Vocabulary v2 = Vocabulary::from_text("a\nb\n", VocabFormat::Comer, c2, "dict");
  EXPECT_EQ(v2.tokens(), (std::vector<std::string>{"a", "b", "<eos>", "<sos>"}));
  EXPECT_EQ(v2.eos_id(), 2);
  EXPECT_EQ(v2.pad_id(), 2);
}

TEST(Vocab, MalformedDictionariesNameFileAndLine) {
  EXPECT_ERROR_HAS(Vocabulary::from_text("a\t0\nb 1\n", VocabFormat::Wap, {}, "d.txt"), "d.txt:2: expected 'token<TAB>id'");
  EXPECT_ERROR_HAS(Vocabulary::from_text("<eol>\t0\nb\tx\n", VocabFormat::Wap, {}, "d.txt"), "d.txt:2: id 'x'");
  EXPECT_ERROR_HAS(Vocabulary::from_text("<eol>\t0\nb\t0\n", VocabFormat::Wap, {}, "d.txt"), "d.txt:2: id 0 is used twice");
  EXPECT_ERROR_HAS(Vocabulary::from_text("<eol>\t0\nb\t5\n", VocabFormat::Wap, {}, "d.txt"), "d.txt:2: id 5 is out of range");
  EXPECT_ERROR_HAS(Vocabulary::from_text("a\t0\nb\t1\n", VocabFormat::Wap, {}, "d.txt"), "eos token '<eol>'");
  EXPECT_ERROR_HAS(Vocabulary::from_text("eos\nsos\na\n\nb\n", VocabFormat::Can, {}, "d.txt"), "d.txt:4: empty line");
  EXPECT_ERROR_HAS(Vocabulary::from_text("eos\nsos\na b\n", VocabFormat::Can, {}, "d.txt"), "d.txt:3: expected one token");
  EXPECT_ERROR_HAS(Vocabulary::from_text("eos\nsos\na\na\n", VocabFormat::Can, {}, "d.txt"), "'a' appears twice");
  EXPECT_ERROR_HAS(Vocabulary::from_text("", VocabFormat::Can, {}, "d.txt"), "d.txt: the dictionary is empty");
  EXPECT_ERROR_HAS(Vocabulary::from_file("/nonexistent/dict.txt", VocabFormat::Can), "/nonexistent/dict.txt: cannot open");
  EXPECT_ERROR_HAS(VocabConfig::from_yaml(YAML::Load("{formt: can}")), "unknown key 'formt'");
  EXPECT_ERROR_HAS(parse_unknown_policy("ignore"), "unknown policy 'ignore'");
}

TEST(Vocab, EncodeDecodeAndUnknownTokenPolicies) {
  const Vocabulary v = Vocabulary::can_builtin();
  const VocabConfig can = VocabConfig::can_default();
  const std::vector<std::string> toks = {"\\sum", "\\limits", "_", "{", "i", "}", "x"};
  const auto ids = v.encode(toks, can.token_map, UnknownTokenPolicy::Error, nullptr, "cap:1");
  ASSERT_TRUE(ids.has_value());
  EXPECT_EQ(*ids, (std::vector<int64_t>{73, 110, 107, 86, 108, 101}));
  EXPECT_EQ(v.decode_string(*ids), "\\sum _ { i } x");
  // Decoding stops at eos and leaves out sos.
  EXPECT_EQ(v.decode_string({1, 78, 79, 0, 80}), "a b");
  EXPECT_EQ(v.decode_string({78, 0, 80}, false), "a c");
  // Unknown tokens: error (naming where), skip the token, or skip the sample.
  const std::vector<std::string> bad = {"a", "\\Pi", "b", "\\Pi", "\\foo"};
  EXPECT_ERROR_HAS(v.encode(bad, {}, UnknownTokenPolicy::Error, nullptr, "caption.txt:7"),
                   "caption.txt:7: unknown token '\\Pi'");
  UnknownTokenReport r;
  const auto skipped = v.encode(bad, {}, UnknownTokenPolicy::SkipToken, &r, "caption.txt:7");
  ASSERT_TRUE(skipped.has_value());
  EXPECT_EQ(*skipped, (std::vector<int64_t>{78, 79}));
  EXPECT_EQ(r.tokens, 3);
  EXPECT_EQ(r.samples, 1);
  EXPECT_EQ(r.by_token.at("\\Pi"), 2);
  EXPECT_FALSE(v.encode(bad, {}, UnknownTokenPolicy::SkipSample, &r, "x").has_value());
  EXPECT_EQ(r.samples, 2);
  EXPECT_NE(r.str().find("'\\foo' x2"), std::string::npos) << r.str();
  // A mapping rule may also replace one token by several.
  const auto m = v.encode({"\\Pi"}, {{"\\Pi", {"\\pi"}}}, UnknownTokenPolicy::Error, nullptr, "x");
  EXPECT_EQ(*m, (std::vector<int64_t>{66}));
  EXPECT_ERROR_HAS(v.token(111), "id 111 is out of range");
}

TEST(VocabFuzz, RandomDictionariesNeverCrash) {
  Generator g(11);
  const std::string alphabet = "ab\\{}\t\n\r 0123456789-x<eol>eossos";
  int ok = 0, errors = 0;
  for (int it = 0; it < 3000; ++it) {
    std::string s;
    const int n = static_cast<int>(g.uniform_double() * 80);
    for (int i = 0; i < n; ++i) s += alphabet[static_cast<size_t>(g.uniform_double() * alphabet.size())];
    if (it % 3 == 0) s = "<eol>\t0\n" + s;
    if (it % 3 == 1) s = "eos\nsos\n" + s;
    for (VocabFormat f : {VocabFormat::Can, VocabFormat::Wap, VocabFormat::Comer}) {
      try {
        const Vocabulary v = Vocabulary::from_text(s, f, {}, "fuzz");
        EXPECT_GE(v.eos_id(), 0);
        ++ok;
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(errors, 0);
}

// ---- LaTeX tokeniser ------------------------------------------------------------------------------

TEST(LatexTokenizer, CrohmeCaptionConventions) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"$\\frac{a}{b}$", "\\frac { a } { b }"},
      {"$ \\frac {1} {3} + \\frac {2} {3} $", "\\frac { 1 } { 3 } + \\frac { 2 } { 3 }"},
      {"$x_k xx_k + y_k yx_k $", "x _ { k } x x _ { k } + y _ { k } y x _ { k }"},
      {"$26$", "2 6"},
      {"$Sup E$", "S u p E"},
      {"$\\mathrm{R^0_0}\\!$", "R _ { 0 } ^ { 0 }"},
      {"$a^{(1)}_0dt$", "a _ { 0 } ^ { ( 1 ) } d t"},
      {"$\\int^{\\pi}_{0}\\left(\\sin(t)-t\\right)dt$", "\\int _ { 0 } ^ { \\pi } ( \\sin ( t ) - t ) d t"},
      {"$-\\frac{1}{2}{t}^{2}$", "- \\frac { 1 } { 2 } t ^ { 2 }"},
      {"${(a - 2x)(a + 2x)}$", "( a - 2 x ) ( a + 2 x )"},
      {"$ \\lim \\limits _ {x \\rightarrow - \\infty} P _ {k + 1} (x) \\lt 0 $",
       "\\lim _ { x \\rightarrow - \\infty } P _ { k + 1 } ( x ) < 0"},
      {"$ y \\gt z $", "y > z"},
      {"$ \\sqrt {\\sqrt {x} ABOVE {n}} ABOVE {m} $", "\\sqrt [ m ] { \\sqrt [ n ] { x } }"},
      {"$\\sqrt[3]{x+1}$", "\\sqrt [ 3 ] { x + 1 }"},
      {"$a\\sqrt b$", "a \\sqrt { b }"},
      {"$\\mbox{ rot }$", "r o t"},
      {"$2 \\mbox{ m}$", "2 m"},
      {"$ m ^ {'} + N = \\lbrack m ^ {'} \\rbrack $", "m ^ { \\prime } + N = [ m ^ { \\prime } ]"},
      {"$ | x \\parallel y | $", "| x | | y |"},
      {"$ 0 \\leq x \\leq 2 \\Pi $", "0 \\leq x \\leq 2 \\pi"},
      {"$\\{a\\}$", "\\{ a \\}"},
      {"$\\left[ b \\right]$", "[ b ]"},
      {"$\\left|S\\right|$", "| S |"},
      {"$\\left. x \\right)$", "x )"},
      {"$S = \\Bigg( \\theta_i \\Bigg)r^2$", "S = ( \\theta _ { i } ) r ^ { 2 }"},
      {"$\\lim_{n \\to \\infty} {( 1 + \\frac{1}{n} )^{n}} = e$",
       "\\lim _ { n \\rightarrow \\infty } ( 1 + \\frac { 1 } { n } ) ^ { n } = e"},
      {"\\int_a^b \\frac {\\sqrt x} 2 d x", "\\int _ { a } ^ { b } \\frac { \\sqrt { x } } { 2 } d x"},
      {"A = \\sqrt {a + \\frac 1 {\\sqrt a}}", "A = \\sqrt { a + \\frac { 1 } { \\sqrt { a } } }"},
      {"$q+w\\;$", "q + w"},
      {"$(a_1\\ b_1)$", "( a _ { 1 } b _ { 1 } )"},
      {"$f'(x)$", "f ^ { \\prime } ( x )"},
      {"$y \\prime$", "y \\prime"},
      {"$x + x ^ {2} _ {}, x$", "x + x ^ { 2 } , x"},
      {"$\\frac{2}${\\beta}", "\\frac { 2 } { \\beta }"},
      {"$\\sum_{k=1}^n a_k^{\\frac{1}{2}}$", "\\sum _ { k = 1 } ^ { n } a _ { k } ^ { \\frac { 1 } { 2 } }"},
      {"$x \xE2\x88\x92 y \xC3\x97 2$", "x - y \\times 2"},
      {"", ""},
      {"$$", ""},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(tok(in), want) << in;
}

TEST(LatexTokenizer, Options) {
  LatexTokenizerOptions o;
  o.keep_limits = true;
  EXPECT_EQ(tok("\\sum\\limits_{i=1}^{n} i", o), "\\sum \\limits _ { i = 1 } ^ { n } i");
  o = {};
  o.prime_to_command = false;
  EXPECT_EQ(tok("f^{'}(x)", o), "f ^ { ' } ( x )");
  o = {};
  o.sub_before_sup = false;
  EXPECT_EQ(tok("T^{\\mu}_{\\mu} + a_1^2", o), "T ^ { \\mu } _ { \\mu } + a _ { 1 } ^ { 2 }");
  o = {};
  o.strict = false;
  EXPECT_EQ(tok("\\lim_{y \\to x}} f", o), "\\lim _ { y \\rightarrow x } f");
  o = LatexTokenizerOptions::from_yaml(YAML::Load("{keep_limits: true, command_map: {'\\Pi': '\\Pi', '\\cdot': ''}}"));
  EXPECT_TRUE(o.keep_limits);
  EXPECT_EQ(tok("\\Pi \\cdot \\lt", o), "\\Pi <");
  EXPECT_ERROR_HAS(LatexTokenizerOptions::from_yaml(YAML::Load("{keeplimits: true}")), "unknown key 'keeplimits'");
}

TEST(LatexTokenizer, MalformedInputIsAClearError) {
  EXPECT_ERROR_HAS(tokenize_latex("\\frac{a}", {}, "f.inkml:9"), "f.inkml:9: LaTeX is missing an argument");
  EXPECT_ERROR_HAS(tokenize_latex("{a + b", {}, "f.inkml:9"), "unclosed '{'");
  EXPECT_ERROR_HAS(tokenize_latex("a + b}", {}, "f.inkml:9"), "unmatched '}' (offset 5)");
  EXPECT_ERROR_HAS(tokenize_latex("x^a^b", {}, "f"), "double superscript");
  EXPECT_ERROR_HAS(tokenize_latex("x_a_b", {}, "f"), "double subscript");
  EXPECT_ERROR_HAS(tokenize_latex("x + \\", {}, "f"), "lone backslash");
  EXPECT_ERROR_HAS(tokenize_latex("\\sqrt[3 x", {}, "f"), "unclosed '['");
  EXPECT_ERROR_HAS(tokenize_latex("x^", {}, "f"), "missing an argument");
  EXPECT_ERROR_HAS(tokenize_latex("\\left", {}, "f"), "without a delimiter");
  EXPECT_ERROR_HAS(tokenize_latex(std::string(5000, '{') + std::string(5000, '}'), {}, "f"), "nests deeper");
  EXPECT_ERROR_HAS(tokenize_latex(std::string(3000, '^') , {}, "f"), "missing an argument");
}

TEST(LatexTokenizerFuzz, RandomLatexNeverCrashes) {
  const std::vector<std::string> pieces = {"\\frac", "\\sqrt", "{", "}", "[", "]", "^", "_", "x", "12", "\\left", "\\right",
                                           "(", ")", "\\limits", "ABOVE", "BELOW", "\\mathrm", "\\", " ", "$", "'",
                                           ".", "\\lt", "\\{", "\xE2\x88", "\xFF", "\\!", "\\mbox", "\\sum", "~"};
  Generator g(5);
  int ok = 0, errors = 0;
  for (int it = 0; it < 20000; ++it) {
    std::string s;
    const int n = static_cast<int>(g.uniform_double() * 30);
    for (int i = 0; i < n; ++i) s += pieces[static_cast<size_t>(g.uniform_double() * pieces.size())];
    LatexTokenizerOptions o;
    o.strict = it % 2 == 0;
    try {
      const auto t = tokenize_latex(s, o, "fuzz");
      for (const auto& x : t) EXPECT_FALSE(x.empty());
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(ok, 1000);
  EXPECT_GT(errors, 1000);
}

// ---- InkML ----------------------------------------------------------------------------------------

namespace {
const char* kInk = R"(<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<ink xmlns="http://www.w3.org/2003/InkML">
<traceFormat>
<channel name="X" type="decimal"/>
<channel name="Y" type="decimal"/>
<channel name="T" type="decimal"/>
</traceFormat>
<annotation type="truth">$a &lt; \frac{b}{c}$</annotation>
<annotation type="writer">w&amp;1</annotation>
<annotationXML type="truth" encoding="Content-MathML"><math><mi xml:id="a_1">a</mi></math></annotationXML>
<trace id="0">10 20 0, 11 21 1,
12 22 2</trace>
<trace id="1">
5.5 -1e1 3</trace>
<traceGroup xml:id="7">
  <annotation type="truth">Segmentation</annotation>
  <traceGroup xml:id="8">
    <annotation type="truth">a</annotation>
    <traceView traceDataRef="0"/>
    <traceView traceDataRef="1"/>
    <annotationXML href="a_1"/>
  </traceGroup>
</traceGroup>
</ink>
)";
}  // namespace

TEST(Inkml, ParsesChannelsAnnotationsTracesAndGroups) {
  const InkDocument d = parse_inkml(kInk, "t.inkml");
  EXPECT_EQ(d.channels, (std::vector<std::string>{"X", "Y", "T"}));
  EXPECT_EQ(d.truth(), "$a < \\frac{b}{c}$");
  EXPECT_EQ(d.truth_line, 9u);
  EXPECT_EQ(d.annotation("writer"), "w&1");
  EXPECT_EQ(d.annotation("nope"), "");
  ASSERT_EQ(d.strokes.size(), 2u);
  EXPECT_EQ(d.strokes[0].id, "0");
  ASSERT_EQ(d.strokes[0].points.size(), 3u);
  EXPECT_DOUBLE_EQ(d.strokes[0].points[2].x, 12);
  EXPECT_DOUBLE_EQ(d.strokes[0].points[2].y, 22);
  EXPECT_EQ(d.strokes[0].extra, (std::vector<double>{0, 1, 2}));
  EXPECT_DOUBLE_EQ(d.strokes[1].points[0].x, 5.5);
  EXPECT_DOUBLE_EQ(d.strokes[1].points[0].y, -10);
  ASSERT_EQ(d.groups.size(), 1u);
  EXPECT_EQ(d.groups[0].truth, "Segmentation");
  ASSERT_EQ(d.groups[0].groups.size(), 1u);
  EXPECT_EQ(d.groups[0].groups[0].truth, "a");
  EXPECT_EQ(d.groups[0].groups[0].trace_refs, (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(d.groups[0].groups[0].href, "a_1");
  EXPECT_NE(d.annotation_xml.find("<mi xml:id=\"a_1\">a</mi>"), std::string::npos);
}

TEST(Inkml, WriterRoundTrips) {
  const InkDocument d = parse_inkml(kInk, "t.inkml");
  const std::string text = write_inkml(d);
  const InkDocument e = parse_inkml(text, "written");
  EXPECT_EQ(e.channels, d.channels);
  EXPECT_EQ(e.annotations, d.annotations);
  EXPECT_EQ(e.annotation_xml, d.annotation_xml);
  ASSERT_EQ(e.strokes.size(), d.strokes.size());
  for (size_t i = 0; i < d.strokes.size(); ++i) {
    EXPECT_EQ(e.strokes[i].id, d.strokes[i].id);
    EXPECT_EQ(e.strokes[i].extra, d.strokes[i].extra);
    ASSERT_EQ(e.strokes[i].points.size(), d.strokes[i].points.size());
    for (size_t p = 0; p < d.strokes[i].points.size(); ++p) {
      EXPECT_EQ(e.strokes[i].points[p].x, d.strokes[i].points[p].x);
      EXPECT_EQ(e.strokes[i].points[p].y, d.strokes[i].points[p].y);
    }
  }
  EXPECT_EQ(e.groups[0].groups[0].trace_refs, d.groups[0].groups[0].trace_refs);
  EXPECT_EQ(write_inkml(e), text);  // a fixed point
  // Integer coordinates stay integers; save_inkml writes the same text.
  EXPECT_NE(text.find(">10 20 0, 11 21 1, 12 22 2</trace>"), std::string::npos) << text;
  TempDir t;
  save_inkml(d, (t.path / "x.inkml").string());
  EXPECT_EQ(write_inkml(read_inkml((t.path / "x.inkml").string())), text);
}

TEST(Inkml, ChannelVariants) {
  // No traceFormat: X Y (or X Y T from the first point).
  InkDocument d = parse_inkml("<ink><trace>1 2, 3 4</trace><trace>5 6</trace></ink>", "a");
  EXPECT_EQ(d.channels, (std::vector<std::string>{"X", "Y"}));
  EXPECT_EQ(d.strokes[1].id, "1");
  d = parse_inkml("<ink><trace>1 2 9, 3 4 9</trace></ink>", "a");
  EXPECT_EQ(d.channels, (std::vector<std::string>{"X", "Y", "T"}));
  // Declared X Y F but written X Y (as some MfrDB files do): the common channels are kept.
  d = parse_inkml("<ink><traceFormat><channel name='X'/><channel name='Y'/><channel name='F'/></traceFormat>"
                  "<trace>1 2, 3 4</trace><trace>1 2 7</trace></ink>", "a");
  EXPECT_EQ(d.channels, (std::vector<std::string>{"X", "Y"}));
  EXPECT_TRUE(d.strokes[1].extra.empty());
  // Channel order from the traceFormat (Y before X).
  d = parse_inkml("<ink><traceFormat><channel name='Y'/><channel name='X'/></traceFormat><trace>1 2</trace></ink>", "a");
  EXPECT_DOUBLE_EQ(d.strokes[0].points[0].x, 2);
  EXPECT_DOUBLE_EQ(d.strokes[0].points[0].y, 1);
  // Difference encodings: ' first differences, " second differences, ! explicit.
  // A qualifier holds for its channel until changed: in the last point y is still a second difference.
  d = parse_inkml("<ink><trace>10 10, '1 '2, 1 2, \"0 \"1, !0 0, 5 !7</trace></ink>", "a");
  const std::vector<std::pair<double, double>> want = {{10, 10}, {11, 12}, {12, 14}, {13, 17}, {0, 20}, {5, 7}};
  ASSERT_EQ(d.strokes[0].points.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_DOUBLE_EQ(d.strokes[0].points[i].x, want[i].first) << i;
    EXPECT_DOUBLE_EQ(d.strokes[0].points[i].y, want[i].second) << i;
  }
  // A namespace prefix, CDATA and a DOCTYPE are fine; an empty trace has no points.
  d = parse_inkml("<!DOCTYPE ink [<!ENTITY x 'y'>]><inkml:ink><inkml:annotation type='truth'><![CDATA[$a<b$]]>"
                  "</inkml:annotation><inkml:trace></inkml:trace></inkml:ink>", "a");
  EXPECT_EQ(d.truth(), "$a<b$");
  EXPECT_TRUE(d.strokes[0].points.empty());
}

TEST(Inkml, MalformedFilesNameFileAndLine) {
  EXPECT_ERROR_HAS(parse_inkml("<ink>\n<trace>1 2</trace>\n</ink2>", "f.inkml"), "f.inkml:3: malformed XML: closing tag </ink2>");
  EXPECT_ERROR_HAS(parse_inkml("<ink>\n<trace>1 2</trace>\n", "f.inkml"), "f.inkml:3: unexpected end of file: <ink>");
  EXPECT_ERROR_HAS(parse_inkml("<ink>\n<trace id='5'>1 2,\n 3 a</trace></ink>", "f.inkml"),
                   "f.inkml:3: trace '5' point 2: 'a' is not a number");
  EXPECT_ERROR_HAS(parse_inkml("<ink>\n<trace>1 2, 3 4 5</trace></ink>", "f.inkml"), "f.inkml:2: trace '' point 2: expected 2 values");
  EXPECT_ERROR_HAS(parse_inkml("<ink>\n<trace>1 2,, 3 4</trace></ink>", "f.inkml"), "empty point");
  EXPECT_ERROR_HAS(parse_inkml("<ink>\n<annotation>a &foo; b</annotation></ink>", "f.inkml"), "f.inkml:2: malformed XML: unknown entity &foo;");
  EXPECT_ERROR_HAS(parse_inkml("<ink>\n<annotation>a & b</annotation></ink>", "f.inkml"), "bare '&'");
  EXPECT_ERROR_HAS(parse_inkml("<svg></svg>", "f.inkml"), "f.inkml:1: the root element is <svg>, expected <ink>");
  EXPECT_ERROR_HAS(parse_inkml("", "f.inkml"), "f.inkml:1: no XML element found");
  EXPECT_ERROR_HAS(parse_inkml("<ink></ink><ink></ink>", "f.inkml"), "a second root element");
  EXPECT_ERROR_HAS(parse_inkml("<ink a=1></ink>", "f.inkml"), "attribute 'a' is not quoted");
  EXPECT_ERROR_HAS(parse_inkml("<ink><trace>'1 2</trace></ink>", "f.inkml"), "difference value in the first point");
  EXPECT_ERROR_HAS(parse_inkml("<ink><trace>1 inf</trace></ink>", "f.inkml"), "non-finite value");
  EXPECT_ERROR_HAS(parse_inkml("<ink><traceFormat><channel name='X'/><channel name='T'/></traceFormat></ink>", "f.inkml"),
                   "no X and Y channels");
  EXPECT_ERROR_HAS(parse_inkml("<ink><trace id='0'>1 2</trace><traceGroup><traceView traceDataRef='9'/></traceGroup></ink>",
                               "f.inkml"), "refers to trace '9'");
  EXPECT_ERROR_HAS(read_inkml("/nonexistent/a.inkml"), "/nonexistent/a.inkml: cannot open");
}

TEST(InkmlFuzz, MutatedFilesNeverCrash) {
  const std::string base = kInk;
  Generator g(77);
  const std::string junk = "<>&;'\"/!?- 0123456789,.\n\t\xC3x";
  int ok = 0, errors = 0;
  for (int it = 0; it < 4000; ++it) {
    std::string s = base;
    const int edits = 1 + static_cast<int>(g.uniform_double() * 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = static_cast<size_t>(g.uniform_double() * s.size());
      const double kind = g.uniform_double();
      if (kind < 0.3) s[pos] = junk[static_cast<size_t>(g.uniform_double() * junk.size())];
      else if (kind < 0.5) s.erase(pos, 1 + static_cast<size_t>(g.uniform_double() * 10));
      else if (kind < 0.7) s.insert(pos, 1, junk[static_cast<size_t>(g.uniform_double() * junk.size())]);
      else if (kind < 0.8) s.resize(pos);
      else s.insert(pos, s.substr(pos / 2, static_cast<size_t>(g.uniform_double() * 30)));
    }
    try {
      const InkDocument d = parse_inkml(s, "fuzz");
      // Whatever parsed must also render and write (or fail cleanly).
      try {
        if (!ink_box(d.strokes).empty) (void)render_strokes(d.strokes);
        (void)write_inkml(d);
      } catch (const Error&) {
      }
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(ok, 100);
  EXPECT_GT(errors, 100);
}

// ---- rendering ------------------------------------------------------------------------------------

TEST(Render, WhiteInkOnBlackWithMargins) {
  const std::vector<Stroke> s = {make_stroke({{0, 0}, {0, 100}}), make_stroke({{50, 0}, {100, 100}}),
                                 make_stroke({{120, 50}})};
  RenderOptions o;
  const cv::Mat m = render_strokes(s, o);
  ASSERT_EQ(m.type(), CV_8UC1);
  // Binary, white ink on black.
  for (int r = 0; r < m.rows; ++r)
    for (int c = 0; c < m.cols; ++c) ASSERT_TRUE(m.at<uint8_t>(r, c) == 0 || m.at<uint8_t>(r, c) == 255);
  cv::Mat nz;
  cv::findNonZero(m, nz);
  const cv::Rect box = cv::boundingRect(nz);
  // The ink box sits `margin` pixels from every border (within a pixel).
  EXPECT_NEAR(box.x, o.margin, 1);
  EXPECT_NEAR(box.y, o.margin, 1);
  EXPECT_NEAR(m.cols - box.x - box.width, o.margin, 1);
  EXPECT_NEAR(m.rows - box.y - box.height, o.margin, 1);
  // StrokeRms: RMS stroke height = sqrt((100^2 + 100^2 + 0) / 3) = 81.6 units -> 27.5 px, so the
  // 100-unit-high ink spans 33 px plus the stroke width.
  EXPECT_NEAR(render_scale(s, o), 27.5 / std::sqrt(20000.0 / 3.0), 1e-12);
  EXPECT_NEAR(box.height, 100 * render_scale(s, o) + o.stroke_width, 1.5);
  // Black on white on request.
  o.white_on_black = false;
  const cv::Mat w = render_strokes(s, o);
  EXPECT_EQ(w.at<uint8_t>(0, 0), 255);
  EXPECT_EQ(cv::countNonZero(255 - w), cv::countNonZero(m));
}

TEST(Render, ScaleInvariantToUnitsAndDeterministic) {
  Generator g(3);
  std::vector<Stroke> a, b;
  for (int k = 0; k < 5; ++k) {
    std::vector<Point> p, q;
    for (int i = 0; i < 20; ++i) {
      const double x = k * 40 + 30 * g.uniform_double(), y = 50 * g.uniform_double();
      p.push_back({x, y});
      q.push_back({x * 1000.0 + 12345.0, y * 1000.0 - 777.0});  // KAIST-like units, shifted
    }
    a.push_back(make_stroke(p));
    b.push_back(make_stroke(q));
  }
  const cv::Mat ma = render_strokes(a), mb = render_strokes(b), ma2 = render_strokes(a);
  ASSERT_EQ(ma.size(), mb.size());
  EXPECT_LE(cv::norm(ma, mb, cv::NORM_L1) / 255.0, 0.02 * cv::countNonZero(ma));
  EXPECT_EQ(cv::norm(ma, ma2, cv::NORM_L1), 0.0);
  // FitHeight and Fixed.
  RenderOptions o;
  o.scale = RenderScale::FitHeight;
  o.target_height = 64;
  const cv::Mat mf = render_strokes(b, o);
  EXPECT_NEAR(mf.rows, 64 + 2 * o.margin + o.stroke_width, 1.0);
  o.scale = RenderScale::Fixed;
  o.fixed_scale = 2.0;
  const cv::Mat mx = render_strokes(a, o);
  EXPECT_NEAR(mx.rows, 2.0 * ink_box(a).height() + 2 * o.margin + o.stroke_width, 1.0);
  // Anti-aliased output has grey levels; integer widths take the direct path.
  o.antialias = true;
  o.stroke_width = 2.5;
  const cv::Mat aa = render_strokes(a, o);
  bool grey = false;
  for (int r = 0; r < aa.rows && !grey; ++r)
    for (int c = 0; c < aa.cols; ++c) grey = grey || (aa.at<uint8_t>(r, c) > 0 && aa.at<uint8_t>(r, c) < 255);
  EXPECT_TRUE(grey);
  o.antialias = false;
  o.stroke_width = 3;
  EXPECT_GT(cv::countNonZero(render_strokes(a, o)), 0);
}

TEST(Render, DegenerateInputs) {
  // A lone dot, a flat line (RMS height 0 falls back to the extent), extreme aspect (max_side clamp).
  EXPECT_GT(cv::countNonZero(render_strokes({make_stroke({{5, 5}})})), 0);
  const cv::Mat flat = render_strokes({make_stroke({{0, 0}, {10, 0}})});
  EXPECT_GT(flat.cols, flat.rows);
  RenderOptions o;
  o.max_side = 500;
  const cv::Mat wide = render_strokes({make_stroke({{0, 0}, {1e6, 1}}), make_stroke({{0, 0}, {0, 1}})}, o);
  EXPECT_LE(std::max(wide.rows, wide.cols), 500);
  o.min_height = 200;
  o.max_side = 4096;
  EXPECT_EQ(render_strokes({make_stroke({{0, 0}, {10, 10}})}, o).rows, 200);
  EXPECT_ERROR_HAS(render_strokes({}), "no ink");
  EXPECT_ERROR_HAS(render_strokes({make_stroke({})}), "no ink");
  EXPECT_ERROR_HAS(render_strokes({make_stroke({{0, std::nan("")}})}), "non-finite point");
  RenderOptions bad;
  bad.stroke_width = 0;
  EXPECT_ERROR_HAS(render_strokes({make_stroke({{0, 0}})}, bad), "stroke_width");
  EXPECT_ERROR_HAS(RenderOptions::from_yaml(YAML::Load("{scale: huge}")), "unknown scale 'huge'");
  EXPECT_EQ(RenderOptions::from_yaml(YAML::Load("{scale: fit_height, target_height: 50}")).scale, RenderScale::FitHeight);
}

// ---- datasets -------------------------------------------------------------------------------------

TEST(Dataset, ComerLayoutLoadsAndDecodes) {
  TempDir t;
  Generator g(1);
  const cv::Mat a = random_image(g, 30, 50), b = random_image(g, 20, 70), c = random_image(g, 25, 25);
  fs::create_directories(t.path / "img");
  cv::imwrite((t.path / "img" / "s_a.png").string(), a);
  cv::imwrite((t.path / "img" / "s_b.bmp").string(), b);
  cv::imwrite((t.path / "img" / "s_c.jpg").string(), c);
  write_file(t.path / "caption.txt", "s_a\tx ^ { 2 }\r\ns_b\t\\frac { 1 } { 2 }\n\ns_c\t a  b \n");
  Dataset d = Dataset::load_comer(t.str());
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d.name(0), "s_a");
  EXPECT_EQ(d.info(0).tokens, (std::vector<std::string>{"x", "^", "{", "2", "}"}));
  EXPECT_EQ(d.info(2).tokens, (std::vector<std::string>{"a", "b"}));
  EXPECT_NE(d.info(1).where.find("caption.txt:2"), std::string::npos);
  EXPECT_EQ(cv::norm(d.image(0), a, cv::NORM_INF), 0.0);
  EXPECT_EQ(cv::norm(d.image(1), b, cv::NORM_INF), 0.0);
  EXPECT_EQ(d.image(2).size(), c.size());
  for (size_t i = 0; i < 3; ++i) {
    const auto [h, w] = read_image_header_size(d.info(i).image_path);
    EXPECT_EQ(h, d.image(i).rows) << i;
    EXPECT_EQ(w, d.image(i).cols) << i;
  }
  d.compute_sizes();
  EXPECT_EQ(d.info(1).height, 20);
  d.validate_images();
  const UnknownTokenReport r = d.encode(Vocabulary::can_builtin(), VocabConfig::can_default());
  EXPECT_EQ(r.tokens, 0);
  EXPECT_EQ(d.info(1).ids, (std::vector<int64_t>{52, 107, 12, 108, 107, 13, 108}));
  const Dataset via = Dataset::load(DatasetConfig::from_yaml(YAML::Load("{layout: comer, root: '" + t.str() + "'}")));
  EXPECT_EQ(via.size(), 3u);
}

TEST(Dataset, ComerLayoutErrorsNameFileAndLine) {
  TempDir t;
  Generator g(2);
  fs::create_directories(t.path / "img");
  cv::imwrite((t.path / "img" / "a.png").string(), random_image(g, 10, 10));
  cv::imwrite((t.path / "img" / "b.png").string(), random_image(g, 10, 10));
  const std::string cap = (t.path / "caption.txt").string();
  write_file(cap, "a\tx\nb y z\n");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()), "caption.txt:2: expected 'name<TAB>tokens'");
  write_file(cap, "a\tx\nb\t  \n");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()), "caption.txt:2: the caption of 'b' has no tokens");
  write_file(cap, "a\tx\n\tx\n");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()), "caption.txt:2: the line has no sample name");
  write_file(cap, "a\tx\nb\ty\na\tz\n");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()), "caption.txt:3: the name 'a' was already used on line 1");
  write_file(cap, "a\tx\nb\ty\nc\tz\n");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()), "caption.txt:3: no image for 'c'");
  write_file(cap, "a\tx\n");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()), "have no caption line");
  DatasetConfig allow;
  allow.allow_extra_images = true;
  EXPECT_EQ(Dataset::load_comer(t.str(), allow).size(), 1u);
  write_file(cap, "");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str(), allow), "no captions");
  EXPECT_ERROR_HAS(Dataset::load_comer((t.path / "missing").string()), "caption file does not exist");
  // Two files for one name.
  cv::imwrite((t.path / "img" / "a.bmp").string(), random_image(g, 10, 10));
  write_file(cap, "a\tx\nb\ty\n");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()), "two images for the name 'a'");
  fs::remove(t.path / "img" / "a.bmp");
  // Corrupt, truncated and empty images fail when decoded, naming the file.
  write_file(t.path / "img" / "a.png", "not a png at all");
  Dataset d = Dataset::load_comer(t.str());
  EXPECT_ERROR_HAS(d.image(0), "a.png: cannot decode the image");
  std::vector<uchar> png;
  cv::imencode(".png", random_image(g, 40, 40), png);
  write_file(t.path / "img" / "b.png", std::string(png.begin(), png.begin() + static_cast<long>(png.size() / 2)));
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()).image(1), "b.png: cannot decode");
  write_file(t.path / "img" / "b.png", "");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()).image(1), "b.png: the image file is empty");
  EXPECT_ERROR_HAS(Dataset::load_comer(t.str()).validate_images(), "a.png");
}

TEST(Dataset, CanLayoutAndUnknownTokens) {
  TempDir t;
  Generator g(3);
  fs::create_directories(t.path / "images");
  cv::imwrite((t.path / "images" / "18_em_0.png").string(), random_image(g, 12, 30));
  cv::imwrite((t.path / "images" / "train_5.png").string(), random_image(g, 14, 20));
  cv::imwrite((t.path / "images" / "x.png").string(), random_image(g, 14, 20));
  // CAN splits on any whitespace and strips ".jpg" names to the text before the first '.'.
  write_file(t.path / "labels.txt", "18_em_0 x _ { k }\ntrain_5.jpg\t\\alpha \\limits\nx \\Pi\n");
  Dataset d = Dataset::load_can((t.path / "labels.txt").string(), (t.path / "images").string());
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d.name(1), "train_5");
  Dataset e = d;
  EXPECT_ERROR_HAS(e.encode(Vocabulary::can_builtin(), VocabConfig::can_default()), "labels.txt:3: unknown token '\\Pi'");
  VocabConfig skip = VocabConfig::can_default();
  skip.on_unknown = UnknownTokenPolicy::SkipSample;
  const UnknownTokenReport r = d.encode(Vocabulary::can_builtin(), skip);
  EXPECT_EQ(d.size(), 2u);
  EXPECT_EQ(r.samples, 1);
  EXPECT_EQ(r.by_token.at("\\Pi"), 1);
  EXPECT_EQ(d.info(1).ids, (std::vector<int64_t>{44}));  // \limits dropped
  ASSERT_EQ(d.skipped().size(), 1u);
  EXPECT_NE(d.skipped()[0].find("labels.txt:3"), std::string::npos);
}

TEST(Dataset, InkmlDirectory) {
  TempDir t;
  InkDocument a;
  a.set_annotation("truth", "$\\frac{1}{x}$");
  a.strokes = {make_stroke({{0, 0}, {0, 10}}, "0"), make_stroke({{-5, 12}, {5, 12}}, "1"),
               make_stroke({{-4, 15}, {4, 25}}, "2"), make_stroke({{4, 15}, {-4, 25}}, "3")};
  save_inkml(a, (t.path / "sub" / "one.inkml").string());
  InkDocument b = a;
  b.set_annotation("truth", "$x^2$");
  save_inkml(b, (t.path / "two.inkml").string());
  Dataset d = Dataset::load_inkml_dir(t.str());
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.name(0), "one");
  EXPECT_EQ(join_tokens(d.info(0).tokens), "\\frac { 1 } { x }");
  EXPECT_EQ(join_tokens(d.info(1).tokens), "x ^ { 2 }");
  const cv::Mat m = d.image(0);
  EXPECT_EQ(m.type(), CV_8UC1);
  EXPECT_GT(cv::countNonZero(m), 0);
  EXPECT_EQ(cv::norm(m, render_strokes(a.strokes), cv::NORM_INF), 0.0);
  // A bad truth is an error naming the file and line, or a listed skip.
  InkDocument c = a;
  c.set_annotation("truth", "$\\frac{1}$");
  save_inkml(c, (t.path / "three.inkml").string());
  EXPECT_ERROR_HAS(Dataset::load_inkml_dir(t.str()), "three.inkml:6: LaTeX is missing an argument");
  DatasetConfig cfg;
  cfg.skip_bad_samples = true;
  const Dataset s = Dataset::load_inkml_dir(t.str(), cfg);
  EXPECT_EQ(s.size(), 2u);
  ASSERT_EQ(s.skipped().size(), 1u);
  write_file(t.path / "four.inkml", "<ink><trace>1 2</trace></ink>");
  EXPECT_ERROR_HAS(Dataset::load_inkml_dir(t.str(), cfg).image(99), "index 99 is out of range");
  cfg.skip_bad_samples = false;
  fs::remove(t.path / "three.inkml");
  EXPECT_ERROR_HAS(Dataset::load_inkml_dir(t.str(), cfg), "four.inkml: no <annotation type=\"truth\">");
}

TEST(DatasetFuzz, RandomCaptionFilesNeverCrash) {
  TempDir t;
  Generator g(9);
  fs::create_directories(t.path / "img");
  for (const char* n : {"a", "b", "c"}) cv::imwrite((t.path / "img" / (std::string(n) + ".png")).string(), random_image(g, 5, 5));
  const std::string alphabet = "abc \t\n\r\\{}x";
  int ok = 0, errors = 0;
  for (int it = 0; it < 400; ++it) {
    std::string s;
    const int n = static_cast<int>(g.uniform_double() * 40);
    for (int i = 0; i < n; ++i) s += alphabet[static_cast<size_t>(g.uniform_double() * alphabet.size())];
    if (it % 4 == 0) s = "a\tx\nb\ty\nc\tz\n";
    write_file(t.path / "caption.txt", s);
    for (bool allow : {false, true}) {
      DatasetConfig cfg;
      cfg.allow_extra_images = allow;
      cfg.require_tab = it % 2 == 0;
      try {
        Dataset d = Dataset::load_comer(t.str(), cfg);
        for (size_t i = 0; i < d.size(); ++i) EXPECT_FALSE(d.info(i).tokens.empty());
        ++ok;
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  EXPECT_GT(ok, 50);
  EXPECT_GT(errors, 50);
}

// ---- preprocessing --------------------------------------------------------------------------------

TEST(Preprocess, PixelTransformsAndScaling) {
  EXPECT_EQ(transform_pixel(0, PixelTransform::InvertUnit), 1.0f);
  EXPECT_EQ(transform_pixel(255, PixelTransform::InvertUnit), 0.0f);
  EXPECT_EQ(transform_pixel(55, PixelTransform::InvertUnit), 200.0f / 255.0f);
  EXPECT_EQ(transform_pixel(255, PixelTransform::Unit), 1.0f);
  EXPECT_EQ(transform_pixel(51, PixelTransform::Unit), 51.0f / 255.0f);
  PreprocessConfig c = PreprocessConfig::comer();
  const cv::Mat big(300, 2000, CV_8UC1, cv::Scalar(0)), small(8, 10, CV_8UC1, cv::Scalar(0)), mid(100, 300, CV_8UC1);
  const cv::Mat b = scale_image(big, c);
  EXPECT_EQ(b.cols, 1024);  // min(256/300, 1024/2000) = 0.512
  EXPECT_EQ(b.rows, 154);
  const cv::Mat s = scale_image(small, c);
  EXPECT_EQ(s.rows, 16);  // max(16/8, 16/10) = 2
  EXPECT_EQ(s.cols, 20);
  EXPECT_EQ(scale_image(mid, c).data, mid.data);  // in range: untouched
  PreprocessConfig f;
  f.fixed_height = 120;
  EXPECT_EQ(scale_image(mid, f).size(), cv::Size(360, 120));
  EXPECT_EQ(scale_image(mid, PreprocessConfig::can()).data, mid.data);
  EXPECT_TRUE(collate_accepts(10, 10, 0, 0, 512000));
  EXPECT_FALSE(collate_accepts(10, 1600, 330, 20, 512000));
  EXPECT_TRUE(collate_accepts(10, 1600, 320, 20, 512000));  // exactly 512000 passes (strict >)
  EXPECT_TRUE(collate_accepts(1000, 1000, 1000, 1000, 0));
  const PreprocessConfig y = PreprocessConfig::from_yaml(YAML::Load("{preset: comer, pad_value: 0.5, transform: invert}"));
  EXPECT_EQ(y.transform, PixelTransform::InvertUnit);
  EXPECT_EQ(y.pad_value, 0.5f);
  EXPECT_EQ(y.batch_pixel_budget, 320000);
  EXPECT_ERROR_HAS(PreprocessConfig::from_yaml(YAML::Load("{transform: negate}")), "unknown transform 'negate'");
  EXPECT_ERROR_HAS(PreprocessConfig::from_yaml(YAML::Load("{scale_to_range: true, min_h: 300}")), "scale_to_range needs");
}

// ---- CAN's collate against the reference ------------------------------------------------------------

namespace {
cv::Mat mat_from_ref(const Tensor& t) {
  const std::vector<int64_t> v = t.to_vector<int64_t>();
  cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8UC1);
  for (int r = 0; r < m.rows; ++r)
    for (int c = 0; c < m.cols; ++c) m.at<uint8_t>(r, c) = static_cast<uint8_t>(v[static_cast<size_t>(r * m.cols + c)]);
  return m;
}
}  // namespace

TEST(CollateParity, MatchesCansCollateElementForElement) {
  for (const auto& [name, n] : std::vector<std::pair<std::string, int>>{{"batch8", 8}, {"skip", 6}, {"single", 1}}) {
    std::vector<std::vector<int64_t>> ids(n);
    std::vector<CollateItem> items;
    for (int i = 0; i < n; ++i) {
      ids[i] = hmer::test::ref("data", name + "__ids" + std::to_string(i)).to_vector<int64_t>();
      CollateItem it;
      it.image = mat_from_ref(hmer::test::ref("data", name + "__img" + std::to_string(i)));
      it.ids = &ids[i];
      it.index = i;
      it.name = std::string("s").append(std::to_string(i));
      items.push_back(it);
    }
    const Batch b = collate(items, PreprocessConfig::can(), 0, 0);
    // Exact: the same float32 division, the same placement.
    const hmer::test::Tol exact = hmer::test::tol::kExact;
    EXPECT_TRUE(all_close(b.images, hmer::test::ref("data", name + "__images"), exact, "collate." + name + ".images"));
    EXPECT_TRUE(all_close(b.image_mask, hmer::test::ref("data", name + "__image_mask"), exact, "collate." + name + ".image_mask"));
    EXPECT_TRUE(all_close(b.labels, hmer::test::ref("data", name + "__labels"), exact, "collate." + name + ".labels"));
    EXPECT_TRUE(all_close(b.label_mask, hmer::test::ref("data", name + "__label_mask"), exact, "collate." + name + ".label_mask"));
    EXPECT_EQ(b.images.dtype(), DType::Float32);
    EXPECT_EQ(b.labels.dtype(), DType::Int64);
    EXPECT_EQ(b.indices, hmer::test::ref("data", name + "__kept").to_vector<int64_t>());
    EXPECT_EQ(b.indices.size() + b.skipped.size(), static_cast<size_t>(n));
  }
}

TEST(Collate, PadValueTransformAndErrors) {
  Generator g(4);
  const std::vector<int64_t> l1 = {5, 6}, l2 = {7};
  std::vector<CollateItem> items(2);
  items[0].image = random_image(g, 3, 5);
  items[0].ids = &l1;
  items[1].image = random_image(g, 6, 2);
  items[1].ids = &l2;
  PreprocessConfig p;
  p.transform = PixelTransform::Unit;
  p.pad_value = -1.0f;
  const Batch b = collate(items, p, 2, 9);
  EXPECT_EQ(b.images.shape(), (Shape{2, 1, 6, 5}));
  const auto img = b.images.to_vector<float>();
  EXPECT_EQ(img[0 * 30 + 5 * 5 + 4], -1.0f);  // padding of item 0
  EXPECT_EQ(img[1 * 30 + 0 * 5 + 1], items[1].image.at<uint8_t>(0, 1) / 255.0f);
  EXPECT_EQ(b.labels.to_vector<int64_t>(), (std::vector<int64_t>{5, 6, 2, 7, 2, 9}));
  EXPECT_EQ(b.label_mask.to_vector<float>(), (std::vector<float>{1, 1, 1, 1, 1, 0}));
  EXPECT_ERROR_HAS(collate({}, p, 0, 0), "collate: no items");
  items[1].ids = nullptr;
  EXPECT_ERROR_HAS(collate(items, p, 0, 0), "has no label");
}

// ---- the loader -----------------------------------------------------------------------------------

namespace {

// n random samples, heights in [10, 70) and widths in [10, 210) unless given (CROHME-like: H 40..100, W 20..600).
std::shared_ptr<Dataset> memory_dataset(int n, uint64_t seed, int h0 = 10, int h1 = 70, int w0 = 10, int w1 = 210) {
  Generator g(seed);
  std::vector<std::string> names;
  std::vector<cv::Mat> images;
  std::vector<std::vector<std::string>> toks;
  const std::vector<std::string> symbols = {"x", "y", "+", "2", "\\frac", "{", "}", "^", "a"};
  for (int i = 0; i < n; ++i) {
    names.push_back(std::string("s").append(std::to_string(i)));
    images.push_back(random_image(g, h0 + static_cast<int>((h1 - h0) * g.uniform_double()),
                                  w0 + static_cast<int>((w1 - w0) * g.uniform_double())));
    std::vector<std::string> t;
    const int len = 1 + static_cast<int>(15 * g.uniform_double());
    for (int k = 0; k < len; ++k) t.push_back(symbols[static_cast<size_t>(g.uniform_double() * symbols.size())]);
    toks.push_back(t);
  }
  auto d = std::make_shared<Dataset>(Dataset::from_memory(names, images, toks));
  d->encode(Vocabulary::can_builtin(), VocabConfig::can_default());
  return d;
}

std::vector<std::vector<int64_t>> run_epoch(DataLoader& l) {
  std::vector<std::vector<int64_t>> out;
  Batch b;
  while (l.next(b)) out.push_back(b.indices);
  return out;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.indices == b.indices && a.images.shape() == b.images.shape() &&
         a.images.to_vector<float>() == b.images.to_vector<float>() &&
         a.image_mask.to_vector<float>() == b.image_mask.to_vector<float>() &&
         a.labels.to_vector<int64_t>() == b.labels.to_vector<int64_t>() &&
         a.label_mask.to_vector<float>() == b.label_mask.to_vector<float>();
}

}  // namespace

TEST(Loader, SeededShufflingCoversEveryEpochAndRepeatsRunToRun) {
  auto d = memory_dataset(37, 1);
  const Vocabulary v = Vocabulary::can_builtin();
  LoaderConfig c;
  c.batch_size = 8;
  c.seed = 123;
  DataLoader a(d, v, c, PreprocessConfig::can()), b(d, v, c, PreprocessConfig::can());
  EXPECT_EQ(a.batches_per_epoch(), 5);
  const auto e0 = run_epoch(a), e1 = run_epoch(a);
  EXPECT_EQ(run_epoch(b), e0);
  EXPECT_EQ(run_epoch(b), e1);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(a.epoch(), 2);
  for (const auto& e : {e0, e1}) {
    std::vector<int64_t> all;
    for (const auto& bt : e) all.insert(all.end(), bt.begin(), bt.end());
    std::sort(all.begin(), all.end());
    std::vector<int64_t> want(37);
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(all, want);
    EXPECT_EQ(e.back().size(), 5u);  // drop_last = false
  }
  c.seed = 124;
  DataLoader other(d, v, c, PreprocessConfig::can());
  EXPECT_NE(run_epoch(other), e0);
  c.shuffle = false;
  c.drop_last = true;
  DataLoader plain(d, v, c, PreprocessConfig::can());
  const auto p = run_epoch(plain);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0], (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(Loader, PrefetchThreadGivesTheSameBatchesAndResumesExactly) {
  auto d = memory_dataset(29, 2);
  const Vocabulary v = Vocabulary::can_builtin();
  LoaderConfig c;
  c.batch_size = 4;
  c.seed = 7;
  c.prefetch = 0;
  DataLoader sync(d, v, c, PreprocessConfig::can());
  c.prefetch = 3;
  DataLoader async(d, v, c, PreprocessConfig::can());
  // 2.5 epochs from both; identical content. Save the cursor mid-epoch and at an epoch boundary.
  std::vector<Batch> ref;
  std::string mid, boundary;
  size_t mid_at = 0, boundary_at = 0;
  for (int step = 0; step < 20; ++step) {
    Batch a, b;
    const bool ha = sync.next(a), hb = async.next(b);
    ASSERT_EQ(ha, hb);
    if (!ha) {
      boundary = async.cursor().to_json();
      boundary_at = ref.size();
      continue;
    }
    EXPECT_TRUE(same_batch(a, b)) << step;
    EXPECT_EQ(a.epoch, b.epoch);
    EXPECT_EQ(a.position, b.position);
    ref.push_back(std::move(a));
    if (step == 10) {
      mid = async.cursor().to_json();
      mid_at = ref.size();
    }
  }
  ASSERT_FALSE(mid.empty());
  ASSERT_FALSE(boundary.empty());
  for (const auto& [cur, at] : std::vector<std::pair<std::string, size_t>>{{mid, mid_at}, {boundary, boundary_at}}) {
    for (int prefetch : {0, 2}) {
      c.prefetch = prefetch;
      c.seed = 999;  // the cursor carries the seed
      DataLoader r(d, v, c, PreprocessConfig::can());
      r.restore(LoaderCursor::from_json(cur));
      EXPECT_EQ(r.cursor(), LoaderCursor::from_json(cur));
      for (size_t k = at; k < ref.size(); ++k) {
        Batch b;
        if (!r.next(b)) {
          ASSERT_TRUE(r.next(b));
        }
        EXPECT_TRUE(same_batch(b, ref[k])) << "resume from " << cur << " batch " << k;
      }
    }
  }
  // Restoring the live loader itself rewinds it.
  async.restore(LoaderCursor::from_json(mid));
  Batch b;
  ASSERT_TRUE(async.next(b));
  EXPECT_TRUE(same_batch(b, ref[mid_at]));
  EXPECT_ERROR_HAS(LoaderCursor::from_json("{\"epoch\": 1}"), "loader cursor");
  EXPECT_ERROR_HAS(LoaderCursor::from_json("nope"), "not valid JSON");
  LoaderCursor far{0, 1000, 7, 0};
  EXPECT_ERROR_HAS(async.restore(far), "past the end of the epoch");
}

TEST(Loader, BucketingAndPixelBudgets) {
  auto d = memory_dataset(200, 3, 40, 100, 20, 600);
  const Vocabulary v = Vocabulary::can_builtin();
  LoaderConfig c;
  c.batch_size = 8;
  auto padded_pixels = [&](DataLoader& l) {
    int64_t total = 0;
    Batch b;
    std::set<int64_t> seen;
    while (l.next(b)) {
      total += b.images.numel();
      for (int64_t i : b.indices) EXPECT_TRUE(seen.insert(i).second);
    }
    EXPECT_EQ(seen.size() + static_cast<size_t>(l.oversized()), 200u);
    return total;
  };
  DataLoader plain(d, v, c, PreprocessConfig::can());
  c.bucket_by_area = true;
  c.bucket_window = 10;
  DataLoader bucketed(d, v, c, PreprocessConfig::can());
  const int64_t p0 = padded_pixels(plain), p1 = padded_pixels(bucketed);
  std::printf("DATA padded pixels per epoch: plain=%lld bucketed=%lld\n", static_cast<long long>(p0), static_cast<long long>(p1));
  EXPECT_LT(p1, p0 * 85 / 100);
  // CoMER-style budget: (largest area) * count <= budget, oversized samples dropped.
  PreprocessConfig pre = PreprocessConfig::can();
  pre.batch_pixel_budget = 120000;
  pre.max_image_pixels = 40000;
  c.bucket_by_area = false;
  DataLoader budget(d, v, c, pre);
  EXPECT_GT(budget.oversized(), 0);
  Batch b;
  int64_t seen = 0;
  while (budget.next(b)) {
    int64_t max_area = 0;
    for (int64_t i : b.indices) {
      const int64_t a = static_cast<int64_t>(d->image(static_cast<size_t>(i)).total());
      EXPECT_LE(a, 40000);
      max_area = std::max(max_area, a);
    }
    EXPECT_TRUE(b.size() == 1 || max_area * b.size() <= 120000) << max_area << " x " << b.size();
    seen += b.size();
  }
  EXPECT_EQ(seen + budget.oversized(), 200);
  EXPECT_ERROR_HAS(LoaderConfig::from_yaml(YAML::Load("{batch_size: 0}")), "batch_size 0");
  EXPECT_EQ(LoaderConfig::from_yaml(YAML::Load("{batch_size: 4, bucket_by_area: true}")).batch_size, 4);
}

TEST(Loader, ErrorsSurfaceInTheCaller) {
  TempDir t;
  Generator g(5);
  fs::create_directories(t.path / "img");
  cv::imwrite((t.path / "img" / "a.png").string(), random_image(g, 10, 10));
  write_file(t.path / "img" / "b.png", "garbage");
  write_file(t.path / "caption.txt", "a\tx\nb\ty\n");
  auto d = std::make_shared<Dataset>(Dataset::load_comer(t.str()));
  const Vocabulary v = Vocabulary::can_builtin();
  EXPECT_ERROR_HAS(DataLoader(d, v, LoaderConfig{}, PreprocessConfig::can()), "not encoded");
  d->encode(v, VocabConfig::can_default());
  for (int prefetch : {0, 2}) {
    LoaderConfig c;
    c.prefetch = prefetch;
    DataLoader l(d, v, c, PreprocessConfig::can());
    Batch b;
    EXPECT_ERROR_HAS(l.next(b), "b.png: cannot decode the image");
    EXPECT_ERROR_HAS(l.next(b), "b.png");  // stays failed, no hang
  }
}

// ---- tools/can_pickle_to_files.py -------------------------------------------------------------------

TEST(CanPickleConverter, DemoConvertsAndLoads) {
  TempDir t;
  const std::string cmd = std::string(HMER_TORCH_PYTHON) + " " + HMER_SOURCE_DIR + "/tools/can_pickle_to_files.py --demo " +
                          t.str() + " > " + (t.path / "log.txt").string() + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream f(t.path / "log.txt");
    const std::string log((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (log.find("No module named 'numpy'") != std::string::npos) GTEST_SKIP() << "numpy is missing: " << log;
    FAIL() << cmd << " failed:\n" << log;
  }
  Dataset d = Dataset::load_comer((t.path / "comer").string());
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.name(1), "b_0");  // CAN's ".jpg" rule
  EXPECT_EQ(join_tokens(d.info(1).tokens), "\\frac { 1 } { 2 }");
  const cv::Mat a = d.image(0), b = d.image(1);
  ASSERT_EQ(a.size(), cv::Size(7, 5));
  ASSERT_EQ(b.size(), cv::Size(4, 3));
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 7; ++c) EXPECT_EQ(a.at<uint8_t>(r, c), (r * 7 + c * 3) % 256);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) EXPECT_EQ(b.at<uint8_t>(r, c), 255 - (r + c));
}
