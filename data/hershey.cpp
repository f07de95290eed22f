#include "data/hershey.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "core/error.h"

namespace hmer::data {

HersheyFont HersheyFont::parse(const std::string& text, const std::string& source) {
  HersheyFont font;
  font.source_ = source;
  std::vector<std::string> lines;
  {
    std::istringstream is(text);
    std::string l;
    while (std::getline(is, l)) {
      if (!l.empty() && l.back() == '\r') l.pop_back();
      lines.push_back(l);
    }
  }
  size_t i = 0;
  while (i < lines.size()) {
    const size_t line_no = i + 1;
    std::string rec = lines[i++];
    if (rec.find_first_not_of(' ') == std::string::npos) continue;
    HMER_CHECK(rec.size() >= 10, source, ":", line_no, ": glyph record too short (", rec.size(), " characters)");
    int nv = 0;
    {
      const std::string field = rec.substr(5, 3);
      const size_t b = field.find_first_not_of(' ');
      HMER_CHECK(b != std::string::npos, source, ":", line_no, ": missing vertex count");
      for (size_t k = b; k < field.size(); ++k) {
        HMER_CHECK(field[k] >= '0' && field[k] <= '9', source, ":", line_no, ": vertex count '", field,
                   "' is not a number");
        nv = nv * 10 + (field[k] - '0');
      }
    }
    HMER_CHECK(nv >= 1, source, ":", line_no, ": vertex count ", nv, " must be at least 1 (the bounds)");
    const size_t need = 8 + 2 * static_cast<size_t>(nv);
    // Long glyphs may be wrapped over several lines in some distributions.
    while (rec.size() < need && i < lines.size()) rec += lines[i++];
    HMER_CHECK(rec.size() >= need, source, ":", line_no, ": glyph has ", (rec.size() - 8) / 2,
               " coordinate pairs, the vertex count says ", nv);
    HersheyGlyph g;
    const auto coord = [&](char c) {
      HMER_CHECK(c >= ' ' && c <= '~', source, ":", line_no, ": coordinate character code ",
                 static_cast<int>(static_cast<unsigned char>(c)), " is not printable ASCII");
      return static_cast<int>(c) - 'R';
    };
    g.left = coord(rec[8]);
    g.right = coord(rec[9]);
    std::vector<Point> cur;
    for (int v = 1; v < nv; ++v) {
      const char cx = rec[8 + 2 * v], cy = rec[9 + 2 * v];
      if (cx == ' ' && cy == 'R') {
        if (!cur.empty()) g.strokes.push_back(std::move(cur));
        cur.clear();
        continue;
      }
      cur.push_back(Point{static_cast<double>(coord(cx)), static_cast<double>(coord(cy))});
    }
    if (!cur.empty()) g.strokes.push_back(std::move(cur));
    font.glyphs_.push_back(std::move(g));
  }
  HMER_CHECK(!font.glyphs_.empty(), source, ": no glyphs");
  return font;
}

HersheyFont HersheyFont::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  HMER_CHECK(f.good(), path, ": cannot open the Hershey font (install Debian's hershey-fonts-data, or point "
             "HMER_HERSHEY_DIR / --fonts at a directory holding the .jhf files)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse(ss.str(), path);
}

const HersheyGlyph& HersheyFont::glyph(char c) const {
  const int idx = static_cast<int>(static_cast<unsigned char>(c)) - 32;
  HMER_CHECK(idx >= 0 && static_cast<size_t>(idx) < glyphs_.size(), source_, ": no glyph for character code ",
             static_cast<int>(static_cast<unsigned char>(c)), " (the font has ", glyphs_.size(), " glyphs from 32)");
  return glyphs_[static_cast<size_t>(idx)];
}

std::vector<Point> resample_polyline(const std::vector<Point>& pts, double step) {
  if (pts.size() < 2 || !(step > 0)) return pts;
  std::vector<Point> out;
  out.reserve(pts.size() * 2);
  out.push_back(pts[0]);
  for (size_t i = 1; i < pts.size(); ++i) {
    const Point a = pts[i - 1], b = pts[i];
    const double len = std::hypot(b.x - a.x, b.y - a.y);
    const int n = std::max(1, static_cast<int>(std::ceil(len / step)));
    for (int k = 1; k <= n; ++k) {
      const double t = static_cast<double>(k) / n;
      out.push_back(Point{a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t});
    }
  }
  return out;
}

namespace {

constexpr double kBaseline = 9.0;    // Hershey y of the baseline
constexpr double kCapHeight = 21.0;  // Hershey units from the baseline to the top of a capital

SymbolGlyph from_strokes(const std::vector<std::vector<Point>>& strokes, double scale) {
  SymbolGlyph s;
  double min_x = 1e300, max_x = -1e300, min_y = 1e300, max_y = -1e300;
  for (const auto& st : strokes)
    for (const auto& p : st) {
      min_x = std::min(min_x, p.x);
      max_x = std::max(max_x, p.x);
      min_y = std::min(min_y, p.y);
      max_y = std::max(max_y, p.y);
    }
  HMER_CHECK(min_x <= max_x, "hershey: glyph without ink");
  const double k = scale / kCapHeight;
  for (const auto& st : strokes) {
    std::vector<Point> q;
    q.reserve(st.size());
    for (const auto& p : st) q.push_back(Point{(p.x - min_x) * k, (p.y - kBaseline) * k});
    s.strokes.push_back(resample_polyline(q, kGlyphStep));
  }
  s.width = (max_x - min_x) * k;
  s.top = (min_y - kBaseline) * k;
  s.bottom = (max_y - kBaseline) * k;
  return s;
}

using Poly = std::vector<Point>;

// Handwritten shapes the single-stroke fonts lack (or only have double-lined), in Hershey units.
std::vector<Poly> drawn_shape(const std::string& token) {
  if (token == "[") return {{{3, -16}, {-2, -16}, {-2, 16}, {3, 16}}};
  if (token == "]") return {{{-3, -16}, {2, -16}, {2, 16}, {-3, 16}}};
  if (token == "\\{" || token == "\\}") {
    Poly p = {{4, -16},   {2, -15.5}, {0.8, -14}, {0.5, -11}, {0.5, -4}, {-0.2, -1.5},
              {-3, 0},    {-0.2, 1.5}, {0.5, 4},  {0.5, 11},  {0.8, 14}, {2, 15.5}, {4, 16}};
    if (token == "\\}")
      for (auto& q : p) q.x = -q.x;
    return {p};
  }
  if (token == "|") return {{{0, -14}, {0, 12}}};
  if (token == "\\sum") return {{{8, -12}, {-7, -12}, {2, -1.5}, {-7, 9}, {8, 9}}};
  if (token == "\\int")
    return {{{5.5, -14.5}, {4.5, -16}, {3, -16.6}, {1.6, -16}, {0.7, -14}, {0.3, -10}, {-0.3, 10},
             {-0.7, 14}, {-1.6, 16}, {-3, 16.6}, {-4.5, 16}, {-5.5, 14.5}}};
  if (token == "\\forall") return {{{-7, -12}, {0, 9}, {7, -12}}, {{-4.2, -3.5}, {4.2, -3.5}}};
  if (token == "\\leq") return {{{8, -11}, {-8, -4}, {8, 3}}, {{-8, 8}, {8, 8}}};
  if (token == "\\geq") return {{{-8, -11}, {8, -4}, {-8, 3}}, {{-8, 8}, {8, 8}}};
  // Dots are a tiny dab of the pen rather than a single point, so they are as heavy as written ones.
  const auto dot = [](double x, double y) { return Poly{{x - 0.4, y - 0.3}, {x + 0.4, y + 0.3}}; };
  if (token == "\\cdot") return {dot(0, 0)};
  if (token == "\\cdots") return {dot(-6, 0), dot(0, 0), dot(6, 0)};
  if (token == "\\ldots") return {dot(-6, 8.3), dot(0, 8.3), dot(6, 8.3)};
  if (token == ".") return {dot(0, 8.3)};
  if (token == "'" || token == "\\prime") return {{{1.8, -13}, {-0.8, -7}}};
  return {};
}

}  // namespace

SymbolGlyph to_symbol_glyph(const HersheyGlyph& g, double scale) { return from_strokes(g.strokes, scale); }

bool is_structure_token(const std::string& t) {
  // `\limits` is not in CAN's dictionary but is in the WAP/CoMER train captions: it only says where
  // the bounds go, so captions holding it can still be drawn.
  return t == "eos" || t == "sos" || t == "{" || t == "}" || t == "^" || t == "_" || t == "\\limits";
}

bool is_drawn_token(const std::string& t) { return t == "\\frac" || t == "\\sqrt"; }

std::string word_letters(const std::string& t) {
  if (t == "\\sin" || t == "\\cos" || t == "\\tan" || t == "\\log" || t == "\\lim") return t.substr(1);
  return {};
}

std::string GlyphLibrary::default_font_dir() {
  const char* env = std::getenv("HMER_HERSHEY_DIR");
  if (env && *env) return env;
  return "/usr/share/hershey-fonts";
}

GlyphLibrary::GlyphLibrary(const std::string& font_dir) {
  const auto load = [&](const char* name) {
    return HersheyFont::load((std::filesystem::path(font_dir) / name).string());
  };
  const HersheyFont cursive = load("cursive.jhf");
  const HersheyFont futural = load("futural.jhf");
  const HersheyFont greek = load("greek.jhf");
  const HersheyFont mathlow = load("mathlow.jhf");

  const auto add = [&](const std::string& token, SymbolGlyph g) { glyphs_[token].push_back(std::move(g)); };
  // The script set's lowercase letters have a small x-height (9 of 21 units); a little larger reads
  // more like handwriting next to its digits.
  for (char c = 'a'; c <= 'z'; ++c) {
    add(std::string(1, c), to_symbol_glyph(cursive.glyph(c), 1.15));
    add(std::string(1, c), to_symbol_glyph(futural.glyph(c)));
  }
  for (char c = 'A'; c <= 'Z'; ++c) {
    add(std::string(1, c), to_symbol_glyph(cursive.glyph(c)));
    add(std::string(1, c), to_symbol_glyph(futural.glyph(c)));
  }
  for (char c = '0'; c <= '9'; ++c) add(std::string(1, c), to_symbol_glyph(cursive.glyph(c)));
  for (char c : std::string("!()+,-/<=>")) add(std::string(1, c), to_symbol_glyph(cursive.glyph(c)));

  const std::pair<const char*, char> greek_map[] = {
      {"\\alpha", 'a'},  {"\\beta", 'b'}, {"\\gamma", 'g'}, {"\\lambda", 'l'}, {"\\mu", 'm'},
      {"\\pi", 'p'},     {"\\sigma", 's'}, {"\\phi", 'F'},  {"\\phi", 'f'},    {"\\theta", 'Q'},
      {"\\theta", 'q'},  {"\\Delta", 'D'}};
  for (const auto& [tok, c] : greek_map) add(tok, to_symbol_glyph(greek.glyph(c)));
  const std::pair<const char*, char> math_map[] = {{"\\pm", '!'},      {"\\times", '#'}, {"\\div", 'x'},
                                                   {"\\neq", '?'},     {"\\infty", '_'}, {"\\in", 'h'},
                                                   {"\\exists", 'v'},  {"\\rightarrow", 'i'}};
  for (const auto& [tok, c] : math_map) add(tok, to_symbol_glyph(mathlow.glyph(c)));

  for (const char* tok : {"[", "]", "\\{", "\\}", "|", "\\sum", "\\int", "\\forall", "\\leq", "\\geq", "\\cdot",
                          "\\cdots", "\\ldots", ".", "'", "\\prime"})
    add(tok, from_strokes(drawn_shape(tok), 1.0));
  // Σ also as the font draws it (three strokes).
  add("\\sum", to_symbol_glyph(greek.glyph('S')));
}

const GlyphLibrary& GlyphLibrary::shared() {
  static const GlyphLibrary lib(default_font_dir());
  return lib;
}

size_t GlyphLibrary::variants(const std::string& token) const {
  const auto it = glyphs_.find(token);
  HMER_CHECK(it != glyphs_.end(), "hershey: no glyph for token '", token, "'");
  return it->second.size();
}

const SymbolGlyph& GlyphLibrary::glyph(const std::string& token, size_t variant) const {
  const auto it = glyphs_.find(token);
  HMER_CHECK(it != glyphs_.end(), "hershey: no glyph for token '", token, "'");
  return it->second[variant % it->second.size()];
}

std::vector<std::string> GlyphLibrary::tokens() const {
  std::vector<std::string> out;
  for (const auto& kv : glyphs_) out.push_back(kv.first);
  return out;
}

void GlyphLibrary::require_coverage(const std::vector<std::string>& tokens) const {
  for (const auto& t : tokens) {
    if (is_structure_token(t) || is_drawn_token(t) || has(t)) continue;
    const std::string w = word_letters(t);
    if (!w.empty()) {
      for (char c : w)
        HMER_CHECK(has(std::string(1, c)), "hershey: token '", t, "' is written with the letter '", c,
                   "', which has no glyph");
      continue;
    }
    fail("hershey: token '", t, "' is a visible symbol without a glyph");
  }
}

}  // namespace hmer::data
