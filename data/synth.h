#pragma once
// Built-in synthetic handwritten expressions: the default data set that needs no download.
//
// A sample is made in four steps, all driven by one hmer::Generator stream (seed, index):
//   1. a target token length is drawn from CROHME's caption-length distribution (quantiles of the
//      WAP/CoMER train captions: p10 3, p25 6, median 13, p75 22, p90 32, p99 56, max 96);
//   2. an expression over CAN's dictionary is generated to that length and written as CROHME tokens
//      exactly as the captions write them (`\frac { a } { b }`, `x _ { i } ^ { 2 }`, `\sqrt [ 3 ] { x }`,
//      `\sum _ { i = 1 } ^ { n }`, `\lim _ { x \rightarrow 0 }`, `\sin ^ { 2 } x`, ...);
//   3. the tokens are parsed back into a 2-D tree and laid out in boxes (fraction bars with centred
//      numerator/denominator, raised/lowered scaled scripts, a radical sign stretched around its body,
//      big operators with limits, delimiters stretched to their content) with Hershey stroke glyphs
//      (data/hershey.h), distorted by a per-sample writer style (slant, per-symbol size/position/rotation
//      jitter, an elastic warp of every glyph, baseline wobble and tilt, spacing, script scale);
//   4. the strokes (in pixels) are rendered by data/render.h like the official offline images (white
//      ink on black, binary, 3 px pen, 12 px margin, at least 54 px high) and kept for the InkML.
// Every step is a pure function of (seed, index): sample i is the same whatever --count or thread
// count, and two runs with one seed write byte-identical files (with one build: another platform's
// libm may round sin/exp/log differently in the last bit).
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "core/rng.h"
#include "data/hershey.h"
#include "data/inkml.h"

namespace hmer::data {

// Thin sampling helpers over hmer::Generator (the only randomness the synthesiser uses).
class SynthRandom {
 public:
  explicit SynthRandom(Generator& g) : g_(g) {}
  double uniform() { return g_.uniform_double(); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * g_.uniform_double(); }
  int integer(int lo, int hi);  // inclusive
  bool chance(double p) { return g_.uniform_double() < p; }
  double normal(double mean, double sd) { return mean + sd * g_.normal(); }
  // Index drawn with probability proportional to weights[i] (all >= 0, sum > 0).
  size_t weighted(const double* weights, size_t n);

 private:
  Generator& g_;
};

// How one writer writes: drawn once per sample. Lengths in em (1 em = the height of a digit).
struct WriterStyle {
  double em_px = 38;         // pixels per em
  double stroke_width = 3;   // pen width in px
  double slant = 0.1;        // x shear per em of height (positive leans right)
  double tilt = 0;           // rotation of the whole line, radians
  double wobble = 0.03;      // baseline wobble amplitude
  double wobble_period = 6;  // its period
  double gap = 0.2;          // between symbols
  double op_gap = 0.3;       // around binary operators and relations
  double digit_gap = 0.1;    // between the digits of a number
  double letter_gap = 0.05;  // between the letters of \sin, \log, ...
  double op_scale = 0.8;     // size of + - = ... relative to their glyph
  double script_scale = 0.65;
  double script_raise = 0.7;  // superscript baseline at this fraction of the base's height
  double sub_drop = 0.4;      // subscript baseline below the base's baseline
  double frac_gap = 0.2;      // between the bar and numerator/denominator
  double frac_scale = 0.92;   // size of numerator/denominator
  double frac_overhang = 0.15;
  double big_op_scale = 1.5;  // height of \sum
  double int_scale = 1.9;     // height of \int
  bool int_limits_side = true;  // integral bounds at the right (else above/below)
  double jitter = 1.0;        // scales the per-symbol size/position/rotation noise
  double warp = 0.03;         // amplitude of the per-symbol elastic warp
  double script_letters = 0.3;  // probability a lowercase letter token is in the script hand (per token)
  double script_capitals = 0.2;

  static WriterStyle sample(SynthRandom& r);
};

struct SynthOptions {
  int min_height = 54;   // px; the WAP/CoMER images are never lower (shorter ones get background rows)
  int max_height = 481;  // px; the tallest CROHME train image (the writing size shrinks to fit)
  int max_width = 2116;  // px; the widest one
  int margin = 12;       // px of background around the ink, like the official images
  int max_tokens = 160;  // cap of the target length
  std::string name_prefix = "synth";
};

// One symbol of the segmentation: its label (the CROHME token) and its strokes.
struct SynthSymbol {
  std::string label;
  std::vector<int> strokes;  // indices into SynthSample::strokes
};

struct SynthSample {
  std::string name;
  std::vector<std::string> tokens;
  std::vector<Stroke> strokes;  // pixels, x right, y down; rendering them with scale 1 gives `image`
  std::vector<SynthSymbol> symbols;
  WriterStyle style;
  cv::Mat image;  // CV_8UC1, white ink (255) on black (0)
};

// Draws a caption length from the CROHME train distribution (piecewise linear between the quantiles).
int sample_target_length(SynthRandom& r);
// A random expression of about `target` tokens over CAN's dictionary, as CROHME tokens.
std::vector<std::string> generate_expression(SynthRandom& r, int target);

// Lays out a CROHME token sequence (any caption, not only generated ones) in `style` and renders it.
// Throws hmer::Error naming the token and its position for malformed sequences (an unmatched `{`, a
// `\frac` without two groups, a double superscript) and for a visible token without a glyph.
SynthSample render_tokens(const std::vector<std::string>& tokens, const WriterStyle& style, SynthRandom& r,
                          const GlyphLibrary& lib, const SynthOptions& options = {});

// Sample `index` of the set with seed `seed`: a pure function of (seed, index, options, fonts).
SynthSample synth_sample(uint64_t seed, uint64_t index, const GlyphLibrary& lib, const SynthOptions& options = {});
// Given tokens (e.g. a real caption) in the writer style of sample (seed, index).
SynthSample synth_sample_for(uint64_t seed, uint64_t index, const std::vector<std::string>& tokens,
                             const GlyphLibrary& lib, const SynthOptions& options = {});
// "<prefix>_<index, 6+ digits>"
std::string synth_name(const std::string& prefix, uint64_t index);

// The InkML of a sample: its strokes (X Y in pixels), truth `$tokens$`, writer "hmer-synth", and
// the symbol segmentation as trace groups labelled with the tokens.
InkDocument synth_inkml(const SynthSample& s);

// A grid of samples (scaled down to fit cells of cell_w x cell_h, captions below) for a person to
// judge: CV_8UC1, the images as they are stored (white on black) on a gray background.
cv::Mat synth_sheet(const std::vector<SynthSample>& samples, int cols, int cell_w, int cell_h);

}  // namespace hmer::data
