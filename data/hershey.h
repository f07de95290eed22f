#pragma once
// Hershey vector fonts (Debian's hershey-fonts-data, /usr/share/hershey-fonts/*.jhf) as the pen
// strokes of the synthetic handwriting (data/synth.h), and the map from CAN's dictionary tokens to
// glyphs.
//
// The .jhf format (James Hurt's): one glyph per line, glyph i of the file is character 32 + i.
// Columns 0-4 are the Hershey number, 5-7 the vertex count (the left/right pair included), then
// pairs of characters, each coordinate being the character code minus 'R' ('R' = 0): first the
// left and right bounds, then the vertices; the pair " R" lifts the pen. x grows to the right and
// y downwards; in the Roman/script/Greek sets the baseline is y = 9 and capitals reach y = -12.
// Some distributions wrap long glyphs over several lines; the reader joins them.
#include <map>
#include <string>
#include <vector>

#include "data/inkml.h"

namespace hmer::data {

// One glyph in Hershey units.
struct HersheyGlyph {
  int left = 0, right = 0;
  std::vector<std::vector<Point>> strokes;
};

class HersheyFont {
 public:
  // Errors name `source` and the line: a short line, a non-numeric vertex count, an odd number of
  // coordinate characters, a coordinate outside the printable range.
  static HersheyFont parse(const std::string& text, const std::string& source);
  static HersheyFont load(const std::string& path);

  size_t size() const { return glyphs_.size(); }
  // The glyph of ASCII character c (32..127); throws naming the font when the file has no such glyph.
  const HersheyGlyph& glyph(char c) const;
  const std::string& source() const { return source_; }

 private:
  std::vector<HersheyGlyph> glyphs_;
  std::string source_;
};

// A symbol ready for layout, in em units: 1 em = the height of a capital / digit, the baseline is
// y = 0, y grows downwards (ink above the baseline has negative y), the leftmost ink is at x = 0.
// Strokes are resampled so that no two consecutive points are more than kGlyphStep em apart, so a
// smooth warp of the points bends the lines instead of only moving their corners.
struct SymbolGlyph {
  std::vector<std::vector<Point>> strokes;
  double width = 0;          // ink extent in x
  double top = 0, bottom = 0;  // ink extent in y (top < 0 above the baseline)
};

constexpr double kGlyphStep = 0.045;  // em between resampled points

// The glyph variants of letters: a writer either joins letters in the script (cursive) hand or prints.
enum class LetterHand { Script = 0, Print = 1 };

// Tokens of CAN's dictionary that have no ink of their own: the specials and the grouping/script
// markers (eos sos { } ^ _), and `\limits` (WAP/CoMER train captions; it only places bounds).
bool is_structure_token(const std::string& token);
// Tokens the layout draws itself rather than from a glyph: \frac (the bar) and \sqrt (the radical,
// which stretches around its body).
bool is_drawn_token(const std::string& token);
// Function names written as a word of lowercase letters: \sin -> "sin", \cos, \tan, \log, \lim.
// Empty for other tokens.
std::string word_letters(const std::string& token);

// The token -> glyph map used by the synthetic handwriting. Sources (all single-stroke sets, since a
// double-lined "complex" glyph drawn with a 3 px pen looks nothing like handwriting):
//   cursive.jhf  latin letters (script hand), digits, punctuation, + - = < > / ! ( ) |
//   futural.jhf  latin letters (printed hand)
//   greek.jhf    \alpha \beta \gamma \lambda \mu \pi \sigma \phi \theta \Delta
//   mathlow.jhf  \pm \times \div \neq \infty \in \exists \rightarrow
//   drawn here   [ ] \{ \} \sum \int \forall \leq \geq \cdot \cdots \ldots . ' \prime (handwritten
//                shapes the fonts lack or only have double-lined)
class GlyphLibrary {
 public:
  // $HMER_HERSHEY_DIR when set, else /usr/share/hershey-fonts.
  static std::string default_font_dir();
  // Loads the fonts from `font_dir`; a missing file throws naming it and the Debian package.
  explicit GlyphLibrary(const std::string& font_dir = default_font_dir());
  // The library of default_font_dir(), loaded once (thread-safe).
  static const GlyphLibrary& shared();

  bool has(const std::string& token) const { return glyphs_.count(token) != 0; }
  // Number of variants of a token (>= 1); throws naming the token when it has no glyph.
  size_t variants(const std::string& token) const;
  // Variant `variant % variants(token)`; throws naming the token when it has no glyph.
  const SymbolGlyph& glyph(const std::string& token, size_t variant = 0) const;
  // Every token with a glyph, sorted.
  std::vector<std::string> tokens() const;

  // Throws naming the first token of `tokens` that is visible (not a structure token) yet can be
  // neither drawn from a glyph, nor as a word of letters, nor by the layout itself.
  void require_coverage(const std::vector<std::string>& tokens) const;

 private:
  std::map<std::string, std::vector<SymbolGlyph>> glyphs_;
};

// Converts a Hershey glyph to em units (baseline 9, cap height 21 Hershey units), scaled by `scale`
// about the baseline, and resampled.
SymbolGlyph to_symbol_glyph(const HersheyGlyph& g, double scale = 1.0);

// Inserts points so that consecutive points are at most `step` apart; the original vertices stay.
std::vector<Point> resample_polyline(const std::vector<Point>& pts, double step);

}  // namespace hmer::data
