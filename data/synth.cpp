#include "data/synth.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>

#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "data/render.h"

namespace hmer::data {

// ---- random helpers ----------------------------------------------------------------------------

int SynthRandom::integer(int lo, int hi) {
  if (hi <= lo) return lo;
  const int v = lo + static_cast<int>(std::floor(g_.uniform_double() * (hi - lo + 1)));
  return std::min(v, hi);
}

size_t SynthRandom::weighted(const double* w, size_t n) {
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += w[i];
  HMER_CHECK(n > 0 && total > 0, "synth: weighted choice over ", n, " items with total weight ", total);
  double u = g_.uniform_double() * total;
  for (size_t i = 0; i < n; ++i) {
    if (u < w[i]) return i;
    u -= w[i];
  }
  for (size_t i = n; i-- > 0;)
    if (w[i] > 0) return i;
  return n - 1;
}

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kAxis = 0.43;  // em from the baseline to the middle of + - = (the math axis)

double clampd(double v, double lo, double hi) { return std::min(hi, std::max(lo, v)); }

}  // namespace

WriterStyle WriterStyle::sample(SynthRandom& r) {
  WriterStyle s;
  // Digit height: the ink height of digit-only lines in the official images is 44 px median (p10 37,
  // p90 53), jitter and slant included; 38 px also brings the image-height median to CROHME's.
  s.em_px = clampd(38.0 * std::exp(r.normal(0.0, 0.15)), 26.0, 64.0);
  const double u = r.uniform();
  s.stroke_width = u < 0.08 ? 2.0 : (u < 0.92 ? 3.0 : 4.0);
  s.slant = clampd(r.normal(0.12, 0.12), -0.2, 0.45);
  s.tilt = clampd(r.normal(0.0, 0.02), -0.06, 0.06);
  s.wobble = r.uniform(0.0, 0.07);
  s.wobble_period = r.uniform(3.0, 10.0);
  s.gap = r.uniform(0.08, 0.28);
  s.op_gap = r.uniform(0.15, 0.42);
  s.digit_gap = r.uniform(0.05, 0.2);
  s.letter_gap = r.uniform(0.02, 0.1);
  s.op_scale = r.uniform(0.6, 0.9);
  s.script_scale = r.uniform(0.55, 0.78);
  s.script_raise = r.uniform(0.6, 0.9);
  s.sub_drop = r.uniform(0.28, 0.48);
  s.frac_gap = r.uniform(0.16, 0.34);
  s.frac_scale = r.uniform(0.82, 1.0);
  s.frac_overhang = r.uniform(0.04, 0.3);
  s.big_op_scale = r.uniform(1.2, 1.7);
  s.int_scale = r.uniform(1.5, 2.1);
  s.int_limits_side = r.chance(0.7);
  s.jitter = r.uniform(0.5, 1.5);
  s.warp = r.uniform(0.012, 0.045);
  // Most CROHME writers print; some join their letters.
  const double hand = r.uniform();
  s.script_letters = hand < 0.45 ? 0.0 : (hand < 0.8 ? 1.0 : r.uniform(0.2, 0.8));
  s.script_capitals = r.chance(0.25) ? 1.0 : 0.0;
  return s;
}

int sample_target_length(SynthRandom& r) {
  // Quantiles of the CROHME train caption lengths (8835 captions; see the header).
  static const double q[][2] = {{0.0, 1},   {0.1, 3},   {0.25, 6},  {0.5, 13.6},
                                {0.75, 22}, {0.9, 32},  {0.99, 56}, {1.0, 96}};
  const double u = r.uniform();
  for (size_t i = 1; i < sizeof(q) / sizeof(q[0]); ++i) {
    if (u <= q[i][0]) {
      const double t = (u - q[i - 1][0]) / (q[i][0] - q[i - 1][0]);
      return std::max(1, static_cast<int>(std::lround(q[i - 1][1] + t * (q[i][1] - q[i - 1][1]))));
    }
  }
  return 96;
}

// ---- expression generator ----------------------------------------------------------------------

namespace {

using Tokens = std::vector<std::string>;

struct Weighted {
  const char* token;
  double weight;
};

// Rough shapes of the CROHME train token frequencies (not the counts themselves).
const Weighted kVars[] = {
    {"x", 24},       {"a", 14},     {"n", 9},        {"y", 11},      {"b", 9},      {"z", 6},
    {"i", 3},        {"c", 5},      {"d", 2},        {"t", 4.5},     {"k", 3},      {"f", 2},
    {"p", 3.5},      {"r", 3},      {"m", 3},        {"e", 2},       {"u", 2},      {"g", 2},
    {"q", 2},        {"j", 1.5},    {"v", 2},        {"h", 1.8},     {"s", 1.5},    {"w", 1},
    {"l", 0.8},      {"o", 0.6},    {"A", 2.5},      {"X", 2.5},     {"C", 2.3},    {"B", 2.1},
    {"R", 1.7},      {"F", 1.5},    {"E", 1.3},      {"L", 1.2},     {"N", 1.2},    {"S", 1},
    {"Y", 1},        {"P", 1},      {"V", 1},        {"H", 0.9},     {"M", 0.9},    {"T", 0.9},
    {"G", 0.8},      {"I", 0.6},    {"\\theta", 2},  {"\\pi", 3},    {"\\alpha", 3}, {"\\beta", 2.5},
    {"\\gamma", 0.8}, {"\\phi", 0.8}, {"\\sigma", 0.5}, {"\\mu", 0.45}, {"\\Delta", 0.35}, {"\\lambda", 0.3}};
const Weighted kDigits[] = {{"1", 20}, {"2", 16}, {"3", 6.5}, {"0", 6},   {"4", 5.5},
                            {"5", 3.3}, {"6", 2.6}, {"7", 2.5}, {"8", 2.4}, {"9", 2.4}};
const Weighted kBinOps[] = {{"+", 52}, {"-", 33}, {"\\times", 3}, {"\\div", 0.8},
                            {"\\cdot", 0.8}, {"\\pm", 0.8}, {"/", 1}};
const Weighted kRelations[] = {{"=", 75}, {"\\leq", 5}, {"\\geq", 3.5}, {"<", 2.3},
                               {">", 1.3}, {"\\neq", 2.5}, {"\\rightarrow", 1}, {"\\in", 0.4}};
const Weighted kIndexVars[] = {{"i", 7}, {"n", 10}, {"k", 3}, {"j", 2.5}, {"m", 1.5}, {"t", 0.5}, {"p", 0.5}};
const Weighted kFuncs[] = {{"\\sin", 30}, {"\\cos", 23}, {"\\tan", 11}, {"\\log", 12}, {"f", 12}, {"g", 3}};

template <size_t N>
const char* pick(SynthRandom& r, const Weighted (&table)[N]) {
  double w[N];
  for (size_t i = 0; i < N; ++i) w[i] = table[i].weight;
  return table[r.weighted(w, N)].token;
}

void append(Tokens& a, const Tokens& b) { a.insert(a.end(), b.begin(), b.end()); }
void append(Tokens& a, std::initializer_list<const char*> b) {
  for (const char* t : b) a.emplace_back(t);
}
int size_of(const Tokens& t) { return static_cast<int>(t.size()); }

class ExprGen {
 public:
  explicit ExprGen(SynthRandom& r) : r_(r) {}

  Tokens top(int target) {
    if (target <= 1) return atom(1);
    if (target == 2) return two();
    const double u = r_.uniform();
    if (u < 0.5) {  // equation
      Tokens lhs;
      if (target <= 4 || r_.chance(0.45)) lhs = simple_lhs(target);
      else lhs = expr(std::max(1, static_cast<int>(std::lround((target - 1) * r_.uniform(0.2, 0.5)))), 0);
      Tokens out = lhs;
      out.emplace_back(r_.chance(0.9) ? "=" : pick(r_, kRelations));
      append(out, expr(std::max(1, target - size_of(out)), 0));
      return out;
    }
    if (u < 0.58) {  // inequality
      Tokens out = expr(std::max(1, (target - 1) / 2), 0);
      static const Weighted ineq[] = {{"<", 3}, {">", 2}, {"\\leq", 5}, {"\\geq", 4}, {"\\neq", 2}};
      out.emplace_back(pick(r_, ineq));
      append(out, expr(std::max(1, target - size_of(out)), 0));
      return out;
    }
    if (u < 0.595 && target >= 5) return quantified(target);
    return expr(target, 0);
  }

 private:
  SynthRandom& r_;

  Tokens var() { return {pick(r_, kVars)}; }
  Tokens digit() { return {pick(r_, kDigits)}; }
  Tokens index_var() { return {pick(r_, kIndexVars)}; }

  Tokens number(int max_len) {
    static const double w[] = {60, 22, 10, 6};
    int len = 1 + static_cast<int>(r_.weighted(w, 4));
    len = std::max(1, std::min(len, max_len));
    Tokens out;
    if (len >= 3 && r_.chance(0.3)) {  // a decimal: 3 . 1 4
      out = digit();
      out.emplace_back(".");
      for (int i = 0; i < len - 2; ++i) append(out, digit());
      return out;
    }
    for (int i = 0; i < len; ++i) {
      Tokens d = digit();
      if (i == 0 && len > 1 && d[0] == "0") d[0] = "1";
      append(out, d);
    }
    return out;
  }

  // A coefficient in front of a variable: never a lone 1.
  Tokens coefficient(int max_len) {
    Tokens t = number(max_len);
    if (t.size() == 1 && t[0] == "1") t[0] = r_.chance(0.5) ? "2" : "3";
    return t;
  }

  Tokens atom(int b) {
    if (r_.chance(0.58)) return var();
    return number(std::max(1, std::min(b, 4)));
  }

  Tokens two() {
    switch (r_.integer(0, 6)) {
      case 0: return Tokens{pick(r_, kVars), "!"};
      case 1: return Tokens{pick(r_, kDigits), pick(r_, kVars)};
      case 2: return number(2);
      case 3: return Tokens{"-", pick(r_, kDigits)};
      case 4: return Tokens{r_.chance(0.5) ? "\\sin" : "\\cos", r_.chance(0.5) ? "x" : "\\theta"};
      case 5: return Tokens{pick(r_, kVars), pick(r_, kVars)};
      default: return Tokens{pick(r_, kVars), r_.chance(0.5) ? "\\prime" : "'"};
    }
  }

  Tokens simple_lhs(int target) {
    static const double w[] = {45, 25, 15, 3, 12};
    switch (r_.weighted(w, 5)) {
      case 0: return var();
      case 1: return Tokens{r_.chance(0.7) ? "f" : "g", "(", r_.chance(0.8) ? "x" : "t", ")"};
      case 2: { Tokens t = var(); append(t, {"_", "{"}); append(t, index_var()); t.emplace_back("}"); return t; }
      case 3: return Tokens{"y", "^", "{", "\\prime", "}"};
      default: return number(2);
    }
  }

  Tokens quantified(int target) {
    Tokens out;
    out.emplace_back(r_.chance(0.6) ? "\\forall" : "\\exists");
    append(out, var());
    if (r_.chance(0.6)) {
      out.emplace_back("\\in");
      out.emplace_back(pick(r_, kVars));
    }
    if (target - size_of(out) >= 4) {
      out.emplace_back(",");
      Tokens rest = expr(std::max(1, (target - size_of(out) - 1) / 2), 1);
      append(out, rest);
      out.emplace_back(pick(r_, kRelations));
      append(out, expr(std::max(1, target - size_of(out)), 1));
    }
    return out;
  }

  Tokens group(const Tokens& t) {
    Tokens o{"{"};
    append(o, t);
    o.emplace_back("}");
    return o;
  }

  // A short exponent: 2, 3, n, - 1, 2 n, ...
  Tokens small_exponent(int b) {
    const double u = r_.uniform();
    if (b >= 2 && u < 0.12) return Tokens{"-", r_.chance(0.7) ? "1" : pick(r_, kIndexVars)};
    if (b >= 3 && u < 0.2) return Tokens{pick(r_, kIndexVars), r_.chance(0.6) ? "+" : "-", "1"};
    if (b >= 2 && u < 0.25) return Tokens{"2", pick(r_, kIndexVars)};
    if (u < 0.62) return Tokens{"2"};
    if (u < 0.72) return Tokens{"3"};
    if (u < 0.87) return index_var();
    if (u < 0.92) return Tokens{"x"};
    return digit();
  }

  Tokens exponent(int b, int depth) {
    if (b <= 3 || depth >= 2 || r_.chance(0.55)) return small_exponent(b);
    return expr(std::min(b, 7), depth + 1);
  }

  Tokens subscript_index(int b, int depth) {
    const double u = r_.uniform();
    if (b >= 3 && u < 0.15) return Tokens{pick(r_, kIndexVars), r_.chance(0.6) ? "+" : "-", "1"};
    if (b >= 3 && u < 0.22) return Tokens{pick(r_, kIndexVars), ",", pick(r_, kIndexVars)};
    if (b >= 4 && depth < 2 && u < 0.27) return expr(std::min(b, 5), depth + 1);
    if (u < 0.6) return index_var();
    return digit();
  }

  Tokens base_symbol() {
    const double u = r_.uniform();
    if (u < 0.75) return var();
    if (u < 0.93) return digit();
    return Tokens{"e"};
  }

  Tokens bound(bool upper) {
    const double u = r_.uniform();
    if (upper) {
      if (u < 0.3) return Tokens{"\\infty"};
      if (u < 0.55) return Tokens{"n"};
      if (u < 0.62) return Tokens{"+", "\\infty"};
      if (u < 0.7) return Tokens{"\\pi"};
      if (u < 0.78) return Tokens{"b"};
      if (u < 0.85) return Tokens{"N"};
      return number(2);
    }
    if (u < 0.45) return Tokens{"0"};
    if (u < 0.65) return Tokens{"1"};
    if (u < 0.75) return Tokens{"a"};
    if (u < 0.82) return Tokens{"-", "\\infty"};
    if (u < 0.88) return Tokens{"-", "\\pi"};
    return number(1);
  }

  Tokens binop() { return {pick(r_, kBinOps)}; }

  Tokens expr(int b, int depth) {
    Tokens out;
    if (b >= 3 && r_.chance(0.06)) out.emplace_back("-");
    bool juxtaposed = false;
    for (int guard = 0; guard < 64; ++guard) {
      const int rem = b - size_of(out);
      const int chunk = rem <= 5 ? rem : std::max(1, static_cast<int>(std::lround(rem * r_.uniform(0.6, 1.0))));
      Tokens t = term(std::max(1, chunk), depth);
      // A number after a juxtaposed factor would merge with it (3 x 5): it gets an operator.
      if (juxtaposed && (std::isdigit(static_cast<unsigned char>(t[0][0])) || t[0] == "-")) append(out, binop());
      append(out, t);
      if (b - size_of(out) < 2) break;
      // Juxtaposed (x y, 2 \sin x, ( a + b ) c) only after terms that read as a factor.
      const bool factor = last_kind_ == kAtom || last_kind_ == kCoefVar || last_kind_ == kPower ||
                          last_kind_ == kSub || last_kind_ == kParen || last_kind_ == kFrac || last_kind_ == kSqrt;
      juxtaposed = factor && r_.chance(0.25);
      if (!juxtaposed) append(out, binop());
    }
    return out;
  }

  enum Kind { kAtom, kCoefVar, kPower, kSub, kFrac, kSqrt, kParen, kFunc, kSum, kInt, kLim, kFact, kAbs, kDots,
              kDeriv, kBrackets, kNumKinds };
  Kind last_kind_ = kAtom;  // of the latest term (after its sub-terms)

  Tokens term(int b, int depth) {
    if (b <= 1) {
      last_kind_ = kAtom;
      return atom(1);
    }
    static const double base_w[kNumKinds] = {22, 9, 27, 18, 36, 6.5, 11, 6, 9, 5.5, 3.5, 0.2, 0.5, 5.0, 0.15, 1.3};
    static const int min_size[kNumKinds] = {1, 2, 5, 5, 7, 4, 5, 2, 10, 6, 10, 2, 3, 9, 4, 5};
    double w[kNumKinds];
    for (int k = 0; k < kNumKinds; ++k) {
      w[k] = b >= min_size[k] ? base_w[k] : 0.0;
      if (depth >= 1 && (k == kSum || k == kInt || k == kLim || k == kDots)) w[k] *= 0.15;
      if (depth >= 2 && (k == kFrac || k == kSqrt || k == kParen || k == kBrackets)) w[k] *= 0.3;
      if (depth >= 3 && k > kSub) w[k] = 0;
    }
    if (b <= 3) w[kAtom] *= 3;
    // A large budget goes to one structured term rather than to many atoms joined by + and -.
    if (b >= 5) {
      w[kAtom] *= 0.35;
      w[kCoefVar] *= 0.6;
      const double grow = 1.0 + (b - 5) / 8.0;
      for (int k : {kFrac, kSqrt, kParen, kSum, kInt, kLim, kAbs, kBrackets, kFunc}) w[k] *= grow;
    }
    const Kind kind = static_cast<Kind>(r_.weighted(w, kNumKinds));
    Tokens out = build(kind, b, depth);
    last_kind_ = kind;
    return out;
  }

  Tokens build(Kind kind, int b, int depth) {
    switch (kind) {
      case kAtom: return atom(b);
      case kCoefVar: {
        Tokens t = r_.chance(0.8) ? coefficient(b >= 4 ? 2 : 1) : var();
        append(t, var());
        if (b >= 3 && r_.chance(0.2)) {
          Tokens v = var();
          if (v[0] != t.back()) append(t, v);
        }
        return t;
      }
      case kPower: {
        Tokens t;
        if (b >= 7 && r_.chance(0.3)) t = coefficient(1);
        append(t, base_symbol());
        t.emplace_back("^");
        append(t, group(exponent(b - size_of(t) - 3, depth)));
        return t;
      }
      case kSub: {
        Tokens t = var();
        t.emplace_back("_");
        append(t, group(subscript_index(b - 4, depth)));
        if (b - size_of(t) >= 4 && r_.chance(0.25)) {
          t.emplace_back("^");
          append(t, group(small_exponent(1)));
        }
        return t;
      }
      case kFrac: {
        if (b >= 10 && r_.chance(0.06)) {
          Tokens t{"\\frac", "{", "d"};
          append(t, var());
          append(t, {"}", "{", "d"});
          append(t, var());
          t.emplace_back("}");
          return t;
        }
        const int inner = std::max(2, b - 6);
        const int nb = std::max(1, static_cast<int>(std::lround(inner * r_.uniform(0.25, 0.65))));
        Tokens t{"\\frac"};
        append(t, group(expr(nb, depth + 1)));
        Tokens den = expr(std::max(1, inner - nb), depth + 1);
        if (den.size() == 1 && den[0] == "0") den[0] = pick(r_, kVars);
        append(t, group(den));
        return t;
      }
      case kSqrt: {
        Tokens t{"\\sqrt"};
        if (b >= 7 && r_.chance(0.1)) {
          t.emplace_back("[");
          t.emplace_back(r_.chance(0.7) ? "3" : pick(r_, kIndexVars));
          t.emplace_back("]");
        }
        append(t, group(expr(std::max(1, b - size_of(t) - 2), depth + 1)));
        return t;
      }
      case kParen: {
        Tokens t;
        if (r_.chance(0.2)) t = r_.chance(0.7) ? coefficient(1) : var();
        const bool power = b - size_of(t) >= 9 && r_.chance(0.25);
        const int inner = std::max(3, b - size_of(t) - 2 - (power ? 4 : 0));
        t.emplace_back("(");
        if (r_.chance(0.12)) {  // a pair: ( a , b )
          append(t, expr(std::max(1, (inner - 1) / 2), depth + 1));
          t.emplace_back(",");
          append(t, expr(std::max(1, inner - 1 - (inner - 1) / 2), depth + 1));
        } else {
          append(t, expr(inner, depth + 1));
        }
        t.emplace_back(")");
        if (power) {
          t.emplace_back("^");
          append(t, group(small_exponent(1)));
        }
        return t;
      }
      case kFunc: {
        const std::string f = pick(r_, kFuncs);
        Tokens t{f};
        const bool named = f[0] == '\\';
        if (named && b >= 6 && r_.chance(0.15)) {
          if (f == "\\log") append(t, {"_", "{", r_.chance(0.6) ? "2" : "e", "}"});
          else append(t, {"^", "{", "2", "}"});
        }
        const int rem = b - size_of(t);
        if (named && (rem <= 2 || r_.chance(0.45))) {
          const double u = r_.uniform();
          t.emplace_back(u < 0.5 ? "x" : (u < 0.65 ? "\\theta" : pick(r_, kVars)));
          return t;
        }
        t.emplace_back("(");
        if (!named && rem >= 5 && r_.chance(0.2)) append(t, {"x", ",", "y"});
        else append(t, rem <= 3 ? var() : expr(std::max(1, rem - 2), depth + 1));
        t.emplace_back(")");
        return t;
      }
      case kSum: {
        Tokens t{"\\sum"};
        const std::string i = pick(r_, kIndexVars);
        if (r_.chance(0.8)) {
          append(t, {"_", "{", i.c_str(), "="});
          append(t, bound(false));
          append(t, {"}", "^", "{"});
          append(t, bound(true));
          t.emplace_back("}");
        } else {
          append(t, {"_", "{", i.c_str(), "}"});
        }
        const int rem = b - size_of(t);
        if (rem <= 6 || r_.chance(0.5)) {
          Tokens a = var();
          append(a, {"_", "{", i.c_str(), "}"});
          if (r_.chance(0.3)) { Tokens xp{"x", "^", "{", i.c_str(), "}"}; a = xp; }
          append(t, a);
        } else {
          append(t, term(rem, depth + 1));
        }
        return t;
      }
      case kInt: {
        Tokens t{"\\int"};
        if (b >= 10 && r_.chance(0.65)) {
          t.emplace_back("_");
          append(t, group(bound(false)));
          t.emplace_back("^");
          append(t, group(bound(true)));
        }
        const std::string dv = r_.chance(0.75) ? "x" : (r_.chance(0.5) ? "t" : "y");
        const int rem = b - size_of(t) - 2;
        append(t, rem <= 2 ? Tokens{pick(r_, kVars)} : expr(rem, depth + 1));
        append(t, {"d", dv.c_str()});
        return t;
      }
      case kLim: {
        Tokens t{"\\lim", "_", "{"};
        const std::string v = r_.chance(0.7) ? "x" : (r_.chance(0.5) ? "n" : "h");
        append(t, {v.c_str(), "\\rightarrow"});
        append(t, r_.chance(0.5) ? Tokens{"\\infty"} : (r_.chance(0.6) ? Tokens{"0"} : Tokens{"a"}));
        t.emplace_back("}");
        const int rem = b - size_of(t);
        append(t, rem <= 2 ? Tokens{"f", "(", v, ")"} : term(rem, depth + 1));
        return t;
      }
      case kFact: {
        if (b >= 7 && r_.chance(0.4)) {
          Tokens t{"(", "n", r_.chance(0.5) ? "+" : "-", "1", ")", "!"};
          return t;
        }
        return Tokens{r_.chance(0.6) ? "n" : pick(r_, kDigits), "!"};
      }
      case kAbs: {
        Tokens t{"|"};
        append(t, expr(std::max(1, b - 2), depth + 1));
        t.emplace_back("|");
        return t;
      }
      case kDots: {
        const std::string v = pick(r_, kVars);
        if (r_.chance(0.5)) {
          const char* op = r_.chance(0.8) ? "+" : "\\times";
          return Tokens{v, "_", "{", "1", "}", op, v, "_", "{", "2", "}", op, "\\cdots", op, v, "_", "{", "n", "}"};
        }
        if (r_.chance(0.5)) return Tokens{"1", ",", "2", ",", "\\ldots", ",", "n"};
        return Tokens{v, "_", "{", "1", "}", ",", "\\ldots", ",", v, "_", "{", "n", "}"};
      }
      case kDeriv: {
        const std::string f = r_.chance(0.7) ? "f" : "y";
        if (r_.chance(0.5)) return Tokens{f, "^", "{", "\\prime", "}", "(", "x", ")"};
        return Tokens{f, r_.chance(0.5) ? "'" : "\\prime", "(", "x", ")"};
      }
      case kBrackets: {
        const bool square = r_.chance(0.6);
        Tokens t{square ? "[" : "\\{"};
        append(t, expr(std::max(1, b - 2), depth + 1));
        t.emplace_back(square ? "]" : "\\}");
        return t;
      }
      default: return atom(b);
    }
  }
};

}  // namespace

std::vector<std::string> generate_expression(SynthRandom& r, int target) {
  target = std::max(1, target);
  ExprGen gen(r);
  // A few tries, keeping the closest: the grammar only steers the length approximately.
  Tokens best;
  int best_err = 1 << 30;
  const int tol = target / 12;
  for (int attempt = 0; attempt < 12; ++attempt) {
    Tokens t = gen.top(target);
    const int err = std::abs(size_of(t) - target);
    if (err < best_err) {
      best_err = err;
      best = std::move(t);
    }
    if (best_err <= tol) break;
  }
  return best;
}

// ---- parsing CROHME tokens into a 2-D tree -----------------------------------------------------

namespace {

struct Node {
  enum class Kind { Row, Sym, Frac, Sqrt, Scripts, Fence };
  Kind kind = Kind::Row;
  std::string token;  // Sym: the token; Fence: the opening delimiter
  std::string close;  // Fence: the closing delimiter
  // Row: items. Frac: numerator, denominator. Sqrt: body, index. Scripts: base, sub, sup. Fence: body.
  std::vector<Node> kids;
  bool has_sub = false, has_sup = false, has_index = false;
  bool limits = false;  // `\limits` followed the base
};

bool is_open_delim(const std::string& t) { return t == "(" || t == "[" || t == "\\{" || t == "|"; }
std::string close_of(const std::string& t) {
  if (t == "(") return ")";
  if (t == "[") return "]";
  if (t == "\\{") return "\\}";
  return "|";
}

class Parser {
 public:
  explicit Parser(const Tokens& t) : t_(t), match_(t.size(), -1) {
    std::vector<size_t> stack;
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i] == "{") stack.push_back(i);
      else if (t[i] == "}") {
        HMER_CHECK(!stack.empty(), "synth layout: unmatched '}' at token ", i, " of '", str(), "'");
        match_[stack.back()] = static_cast<long>(i);
        match_[i] = static_cast<long>(stack.back());
        stack.pop_back();
      }
    }
    HMER_CHECK(stack.empty(), "synth layout: unmatched '{' at token ", stack.empty() ? 0 : stack.back(), " of '",
               str(), "'");
  }

  Node parse() { return row(0, t_.size()); }

 private:
  const Tokens& t_;
  std::vector<long> match_;

  std::string str() const {
    std::string s;
    for (const auto& x : t_) s += (s.empty() ? "" : " ") + x;
    return s;
  }

  // Parses the group starting at `{` (tokens[i]) and returns the index after its `}`.
  size_t group(size_t i, size_t hi, Node* out) {
    HMER_CHECK(i < hi && t_[i] == "{", "synth layout: expected '{' at token ", i, " of '", str(), "'");
    const size_t e = static_cast<size_t>(match_[i]);
    HMER_CHECK(e < hi, "synth layout: group at token ", i, " runs past its parent in '", str(), "'");
    *out = row(i + 1, e);
    return e + 1;
  }

  // A script or fraction argument: a braced group or a single item.
  size_t argument(size_t i, size_t hi, Node* out) {
    HMER_CHECK(i < hi, "synth layout: missing argument at the end of '", str(), "'");
    if (t_[i] == "{") return group(i, hi, out);
    Node r;
    r.kind = Node::Kind::Row;
    Node item;
    const size_t next = atom(i, hi, &item);
    r.kids.push_back(std::move(item));
    *out = std::move(r);
    return next;
  }

  // Index of the delimiter closing the one at i within [i+1, hi), skipping braced groups; hi if none.
  size_t find_close(size_t i, size_t hi) const {
    const std::string& open = t_[i];
    const std::string close = close_of(open);
    int depth = 0;
    for (size_t j = i + 1; j < hi; ++j) {
      if (t_[j] == "{") {
        j = static_cast<size_t>(match_[j]);
        continue;
      }
      if (t_[j] == close && (open == "|" || depth == 0)) return j;
      if (open != "|" && t_[j] == open) ++depth;
      else if (open != "|" && t_[j] == close) --depth;
    }
    return hi;
  }

  size_t atom(size_t i, size_t hi, Node* out) {
    const std::string& tok = t_[i];
    Node n;
    if (tok == "{") {
      return group(i, hi, out);
    }
    HMER_CHECK(tok != "}", "synth layout: unexpected '}' at token ", i, " of '", str(), "'");
    if (tok == "\\frac") {
      n.kind = Node::Kind::Frac;
      n.kids.resize(2);
      size_t j = argument(i + 1, hi, &n.kids[0]);
      j = argument(j, hi, &n.kids[1]);
      *out = std::move(n);
      return j;
    }
    if (tok == "\\sqrt") {
      n.kind = Node::Kind::Sqrt;
      n.kids.resize(2);
      size_t j = i + 1;
      if (j < hi && t_[j] == "[") {
        const size_t e = find_close(j, hi);
        HMER_CHECK(e < hi, "synth layout: '\\sqrt [' without ']' at token ", j, " of '", str(), "'");
        n.kids[1] = row(j + 1, e);
        n.has_index = true;
        j = e + 1;
      }
      j = argument(j, hi, &n.kids[0]);
      *out = std::move(n);
      return j;
    }
    if (is_open_delim(tok)) {
      const size_t e = find_close(i, hi);
      if (e < hi) {
        n.kind = Node::Kind::Fence;
        n.token = tok;
        n.close = t_[e];
        n.kids.push_back(row(i + 1, e));
        *out = std::move(n);
        return e + 1;
      }
    }
    n.kind = Node::Kind::Sym;
    n.token = tok;
    *out = std::move(n);
    return i + 1;
  }

  Node row(size_t lo, size_t hi) {
    Node r;
    r.kind = Node::Kind::Row;
    size_t i = lo;
    while (i < hi) {
      Node item;
      if (t_[i] == "^" || t_[i] == "_") {
        item.kind = Node::Kind::Sym;  // scripts without a base: an empty base
      } else {
        i = atom(i, hi, &item);
      }
      bool limits = false;
      while (i < hi && t_[i] == "\\limits") {
        ++i;
        limits = true;
      }
      while (i < hi && (t_[i] == "^" || t_[i] == "_")) {
        const bool sup = t_[i] == "^";
        if (item.kind != Node::Kind::Scripts) {
          Node s;
          s.kind = Node::Kind::Scripts;
          s.kids.resize(3);
          s.kids[0] = std::move(item);
          s.limits = limits;
          item = std::move(s);
        }
        HMER_CHECK(!(sup ? item.has_sup : item.has_sub), "synth layout: double ", sup ? "superscript" : "subscript",
                   " at token ", i, " of '", str(), "'");
        i = argument(i + 1, hi, &item.kids[sup ? 2 : 1]);
        (sup ? item.has_sup : item.has_sub) = true;
      }
      r.kids.push_back(std::move(item));
    }
    return r;
  }
};

// ---- layout ------------------------------------------------------------------------------------

struct Ink {
  std::vector<Point> pts;
  int symbol = -1;
};

// Ink in em units around an origin on the baseline at the left edge; y down.
struct Box {
  std::vector<Ink> ink;
  double w = 0, top = 0, bottom = 0;
  bool empty = true;

  void extend(double x1, double t, double b) {
    if (empty) {
      w = x1;
      top = t;
      bottom = b;
      empty = false;
    } else {
      w = std::max(w, x1);
      top = std::min(top, t);
      bottom = std::max(bottom, b);
    }
  }
  // Adds `src` scaled by s with its origin at (dx, dy).
  void place(const Box& src, double dx, double dy, double s = 1.0) {
    if (src.empty) return;
    for (const auto& in : src.ink) {
      Ink o;
      o.symbol = in.symbol;
      o.pts.reserve(in.pts.size());
      for (const auto& p : in.pts) o.pts.push_back(Point{p.x * s + dx, p.y * s + dy});
      ink.push_back(std::move(o));
    }
    extend(dx + src.w * s, dy + src.top * s, dy + src.bottom * s);
  }
  // Recomputes the extents from the points and moves the leftmost ink to x = 0.
  void fit() {
    double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
    for (const auto& in : ink)
      for (const auto& p : in.pts) {
        x0 = std::min(x0, p.x);
        x1 = std::max(x1, p.x);
        y0 = std::min(y0, p.y);
        y1 = std::max(y1, p.y);
      }
    if (x0 > x1) {
      empty = true;
      w = top = bottom = 0;
      return;
    }
    for (auto& in : ink)
      for (auto& p : in.pts) p.x -= x0;
    w = x1 - x0;
    top = y0;
    bottom = y1;
    empty = false;
  }
};

enum class SymClass { None, Digit, Letter, Op, Rel, Punct, Word, Big, Struct };

bool is_op(const std::string& t) {
  return t == "+" || t == "-" || t == "\\times" || t == "\\div" || t == "\\cdot" || t == "\\pm" || t == "/";
}
bool is_rel(const std::string& t) {
  return t == "=" || t == "<" || t == ">" || t == "\\leq" || t == "\\geq" || t == "\\neq" || t == "\\rightarrow" ||
         t == "\\in";
}

SymClass classify(const Node& n) {
  if (n.kind == Node::Kind::Scripts) return classify(n.kids[0]) == SymClass::Big ? SymClass::Big : SymClass::Struct;
  if (n.kind != Node::Kind::Sym) return SymClass::Struct;
  const std::string& t = n.token;
  if (t.empty()) return SymClass::None;
  if (t.size() == 1 && t[0] >= '0' && t[0] <= '9') return SymClass::Digit;
  if (is_op(t)) return SymClass::Op;
  if (is_rel(t)) return SymClass::Rel;
  if (t == "," || t == "!" || t == "." || t == "'" || t == "\\prime") return SymClass::Punct;
  if (t == "\\sum" || t == "\\int" || t == "\\lim") return SymClass::Big;
  if (!word_letters(t).empty()) return SymClass::Word;
  return SymClass::Letter;
}

class Layout {
 public:
  Layout(const WriterStyle& st, SynthRandom& r, const GlyphLibrary& lib) : st_(st), r_(r), lib_(lib) {}

  std::vector<std::string> labels;  // symbol id -> token

  Box layout(const Node& n) {
    switch (n.kind) {
      case Node::Kind::Row: return row(n);
      case Node::Kind::Sym: return symbol(n.token);
      case Node::Kind::Frac: return frac(n);
      case Node::Kind::Sqrt: return sqrt(n);
      case Node::Kind::Scripts: return scripts(n);
      case Node::Kind::Fence: return fence(n);
    }
    return {};
  }

 private:
  const WriterStyle& st_;
  SynthRandom& r_;
  const GlyphLibrary& lib_;
  std::map<std::string, size_t> variant_;  // the writer's choice per token, fixed within a sample
  int script_depth_ = 0;

  int new_symbol(const std::string& label) {
    labels.push_back(label);
    return static_cast<int>(labels.size()) - 1;
  }

  size_t variant_of(const std::string& token) {
    const auto it = variant_.find(token);
    if (it != variant_.end()) return it->second;
    const size_t n = lib_.variants(token);
    size_t v = 0;
    if (n > 1) {
      const bool letter = token.size() == 1 && std::isalpha(static_cast<unsigned char>(token[0]));
      if (letter) {
        const bool upper = std::isupper(static_cast<unsigned char>(token[0]));
        const double p_script = upper ? st_.script_capitals : st_.script_letters;
        v = r_.chance(p_script) ? static_cast<size_t>(LetterHand::Script) : static_cast<size_t>(LetterHand::Print);
      } else {
        v = static_cast<size_t>(r_.integer(0, static_cast<int>(n) - 1));
      }
    }
    variant_[token] = v;
    return v;
  }

  // An elastic warp plus a random similarity: the per-symbol variation of one hand.
  void distort(std::vector<Ink>& ink, double cx, double cy, double amount) {
    const double j = st_.jitter * amount;
    const double s = std::exp(r_.normal(0.0, 0.07 * j));
    const double sx = s * std::exp(r_.normal(0.0, 0.05 * j));
    const double rot = r_.normal(0.0, 0.05 * j);
    const double dy = r_.normal(0.0, 0.035 * j);
    double a[4], fx[4], fy[4], ph[4];
    for (int k = 0; k < 4; ++k) {
      a[k] = st_.warp * amount * r_.uniform(0.4, 1.0);
      const double f = 2.0 * kPi / r_.uniform(0.5, 1.4);
      const double dir = r_.uniform(0.0, 2.0 * kPi);
      fx[k] = f * std::cos(dir);
      fy[k] = f * std::sin(dir);
      ph[k] = r_.uniform(0.0, 2.0 * kPi);
    }
    const double c = std::cos(rot), sn = std::sin(rot);
    for (auto& in : ink)
      for (auto& p : in.pts) {
        const double wx = a[0] * std::sin(fx[0] * p.x + fy[0] * p.y + ph[0]) +
                          a[1] * std::sin(fx[1] * p.x + fy[1] * p.y + ph[1]);
        const double wy = a[2] * std::sin(fx[2] * p.x + fy[2] * p.y + ph[2]) +
                          a[3] * std::sin(fx[3] * p.x + fy[3] * p.y + ph[3]);
        const double x = (p.x + wx - cx) * sx, y = (p.y + wy - cy) * s;
        p.x = cx + c * x - sn * y;
        p.y = cy + sn * x + c * y + dy;
      }
  }

  Box glyph_box(const std::string& token, int symbol, double amount) {
    const SymbolGlyph& g = lib_.glyph(token, variant_of(token));
    Box b;
    b.ink.reserve(g.strokes.size());
    // Operators are drawn smaller than the font's, scaled about the math axis; big operators to
    // the writer's size, centred on the axis.
    double s = 1.0, from_y = 0.0, to_y = 0.0;
    if (is_op(token) || is_rel(token)) {
      s = st_.op_scale;
      from_y = to_y = -kAxis;
    } else if (token == "\\sum" || token == "\\int") {
      s = (token == "\\sum" ? st_.big_op_scale : st_.int_scale) / (g.bottom - g.top);
      from_y = 0.5 * (g.top + g.bottom);
      to_y = -kAxis;
    }
    for (const auto& st : g.strokes) {
      Ink in;
      in.symbol = symbol;
      in.pts.reserve(st.size());
      for (const auto& p : st) in.pts.push_back(Point{p.x * s, to_y + (p.y - from_y) * s});
      b.ink.push_back(std::move(in));
    }
    distort(b.ink, 0.5 * g.width * s, to_y + (0.5 * (g.top + g.bottom) - from_y) * s, amount);
    b.fit();
    return b;
  }

  Box symbol(const std::string& token) {
    if (token.empty() || is_structure_token(token)) return {};
    const std::string letters = word_letters(token);
    if (!letters.empty()) {
      const int id = new_symbol(token);
      Box b;
      double x = 0;
      for (size_t i = 0; i < letters.size(); ++i) {
        Box l = glyph_box(std::string(1, letters[i]), id, 0.6);
        if (i) x += st_.letter_gap * std::exp(r_.normal(0.0, 0.3));
        b.place(l, x, 0.0);
        x += l.w;
      }
      return b;
    }
    HMER_CHECK(lib_.has(token), "synth layout: token '", token, "' has no glyph");
    return glyph_box(token, new_symbol(token), 1.0);
  }

  double gap_between(SymClass a, SymClass b, bool b_unary) {
    double g = st_.gap;
    if (a == SymClass::None || b == SymClass::None) g = 0.05;
    else if (b_unary || a == SymClass::Op || a == SymClass::Rel || b == SymClass::Op || b == SymClass::Rel)
      g = st_.op_gap;
    else if (a == SymClass::Digit && b == SymClass::Digit) g = st_.digit_gap;
    else if (b == SymClass::Punct) g = st_.digit_gap * 0.7;
    if (a == SymClass::Rel || b == SymClass::Rel) g *= 1.35;
    if (a == SymClass::Big) g *= 1.5;
    if (a == SymClass::Word) g = std::max(g, 0.8 * st_.op_gap);
    return std::max(0.02, g * std::exp(r_.normal(0.0, 0.25 * st_.jitter)));
  }

  Box row(const Node& n) {
    Box b;
    double x = 0;
    SymClass prev = SymClass::None;
    bool prev_unary = false;
    bool first = true;
    for (const Node& item : n.kids) {
      const SymClass cls = classify(item);
      // A sign at the start or after an operator, relation or opening is unary: it hugs its operand.
      const bool unary = (cls == SymClass::Op) && (first || prev == SymClass::Op || prev == SymClass::Rel);
      Box ib = layout(item);
      if (ib.empty) {
        first = false;
        continue;
      }
      if (!first) x += prev_unary ? st_.digit_gap : gap_between(prev, cls, false);
      b.place(ib, x, 0.0);
      x += ib.w;
      prev = cls;
      prev_unary = unary;
      first = false;
    }
    return b;
  }

  // A straight hand-drawn line from (x0, y0) to (x1, y1) with a slight bow.
  Ink line(double x0, double y0, double x1, double y1, int symbol) {
    Ink in;
    in.symbol = symbol;
    const double len = std::hypot(x1 - x0, y1 - y0);
    const int n = std::max(2, static_cast<int>(std::ceil(len / kGlyphStep)));
    const double bow = r_.normal(0.0, 0.02 * st_.jitter) * std::min(1.0, len);
    const double nx = len > 0 ? -(y1 - y0) / len : 0, ny = len > 0 ? (x1 - x0) / len : 0;
    for (int i = 0; i <= n; ++i) {
      const double t = static_cast<double>(i) / n;
      const double b = bow * 4.0 * t * (1.0 - t);
      in.pts.push_back(Point{x0 + (x1 - x0) * t + nx * b, y0 + (y1 - y0) * t + ny * b});
    }
    return in;
  }

  Box frac(const Node& n) {
    const double s = st_.frac_scale;
    Box num = layout(n.kids[0]), den = layout(n.kids[1]);
    const double nw = num.w * s, dw = den.w * s;
    const double over = st_.frac_overhang * std::exp(r_.normal(0.0, 0.3));
    const double bar_w = std::max({nw, dw, 0.3}) + 2.0 * over;
    const int id = new_symbol("\\frac");
    const double bar_y = -kAxis + r_.normal(0.0, 0.03);
    const double tilt = r_.normal(0.0, 0.015) * bar_w;
    Box b;
    b.ink.push_back(line(0.0, bar_y + tilt, bar_w, bar_y - tilt, id));
    b.extend(bar_w, bar_y - std::abs(tilt), bar_y + std::abs(tilt));
    const double gn = st_.frac_gap * std::exp(r_.normal(0.0, 0.2)), gd = st_.frac_gap * std::exp(r_.normal(0.0, 0.2));
    if (!num.empty)
      b.place(num, 0.5 * (bar_w - nw) + r_.normal(0.0, 0.04), bar_y - std::abs(tilt) - gn - num.bottom * s, s);
    if (!den.empty)
      b.place(den, 0.5 * (bar_w - dw) + r_.normal(0.0, 0.04), bar_y + std::abs(tilt) + gd - den.top * s, s);
    return b;
  }

  Box sqrt(const Node& n) {
    Box body = layout(n.kids[0]);
    if (body.empty) body.extend(0.4, -0.6, 0.0);
    const double top = body.top - r_.uniform(0.2, 0.32);
    const double bottom = std::max(body.bottom, 0.0) + r_.uniform(0.02, 0.1);
    const double h = bottom - top;
    const double hook = std::min(0.45 * h, 0.42);
    const int id = new_symbol("\\sqrt");
    const Point p0{0.0, bottom - hook * 0.75}, p1{0.1, bottom - hook};
    const Point p2{p1.x + 0.17, bottom};
    const Point p3{p2.x + 0.1 + 0.12 * h, top};
    const double body_x = p3.x + r_.uniform(0.06, 0.16);
    const Point p4{body_x + body.w + r_.uniform(0.05, 0.25), top + r_.normal(0.0, 0.03)};
    Box b;
    // One stroke (tick, down, up, bar) or two (the bar lifted), as people write it.
    Ink sign;
    sign.symbol = id;
    const Point pts[] = {p0, p1, p2, p3};
    sign.pts.push_back(pts[0]);
    for (int k = 1; k < 4; ++k) {
      const Ink seg = line(pts[k - 1].x, pts[k - 1].y, pts[k].x, pts[k].y, id);
      sign.pts.insert(sign.pts.end(), seg.pts.begin() + 1, seg.pts.end());
    }
    Ink bar = line(p3.x, p3.y, p4.x, p4.y, id);
    if (r_.chance(0.7)) {
      sign.pts.insert(sign.pts.end(), bar.pts.begin() + 1, bar.pts.end());
      b.ink.push_back(std::move(sign));
    } else {
      b.ink.push_back(std::move(sign));
      b.ink.push_back(std::move(bar));
    }
    distort(b.ink, 0.5 * p4.x, 0.5 * (top + bottom), 0.3);
    b.fit();
    Box out;
    double shift = 0;
    if (n.has_index) {
      Box idx = layout(n.kids[1]);
      const double s = st_.script_scale * 0.85;
      if (!idx.empty) {
        const double ix = std::max(0.0, p1.x + 0.12 - idx.w * s);
        shift = std::max(0.0, idx.w * s - (p1.x + 0.12));
        out.place(idx, ix, p1.y - 0.08 - idx.bottom * s, s);
      }
    }
    out.place(b, shift, 0.0);
    out.place(body, shift + body_x, 0.0);
    return out;
  }

  Box scripts(const Node& n) {
    const Node& base_node = n.kids[0];
    Box base = layout(base_node);
    // Scripts of scripts shrink less: a hand does not keep writing 35% smaller.
    const double s = script_depth_ == 0 ? st_.script_scale : std::max(st_.script_scale, 0.82);
    Box sub, sup;
    ++script_depth_;
    if (n.has_sub) sub = layout(n.kids[1]);
    if (n.has_sup) sup = layout(n.kids[2]);
    --script_depth_;
    const std::string& bt = base_node.kind == Node::Kind::Sym ? base_node.token : std::string();
    const bool limits = bt == "\\sum" || bt == "\\lim" || (bt == "\\int" && (n.limits || !st_.int_limits_side));
    Box out;
    if (base.empty) base.extend(0.0, -0.5, 0.0);
    if (limits) {
      const double ls = s * 0.95;
      const double width = std::max({base.w, sub.w * ls, sup.w * ls});
      out.place(base, 0.5 * (width - base.w), 0.0);
      if (!sub.empty)
        out.place(sub, 0.5 * (width - sub.w * ls) + r_.normal(0.0, 0.04), base.bottom + 0.1 - sub.top * ls, ls);
      if (!sup.empty)
        out.place(sup, 0.5 * (width - sup.w * ls) + r_.normal(0.0, 0.04), base.top - 0.1 - sup.bottom * ls, ls);
      return out;
    }
    out.place(base, 0.0, 0.0);
    double x = base.w + r_.uniform(0.02, 0.1);
    double y_sup = 0, y_sub = 0;
    if (bt == "\\int") {
      // Bounds beside the integral sign: the lower one tucked under its tail.
      if (!sup.empty) y_sup = base.top + 0.05 - sup.top * s;
      if (!sub.empty) y_sub = base.bottom - 0.05 - sub.bottom * s;
      if (!sup.empty) out.place(sup, x + 0.06 + r_.normal(0.0, 0.03), y_sup, s);
      if (!sub.empty) out.place(sub, x - 0.1 * base.w + r_.normal(0.0, 0.03), y_sub, s);
      return out;
    }
    const bool only_primes = !sup.empty && n.kids[2].kids.size() == 1 && n.kids[2].kids[0].kind == Node::Kind::Sym &&
                             (n.kids[2].kids[0].token == "\\prime" || n.kids[2].kids[0].token == "'");
    if (!sup.empty) {
      if (only_primes) y_sup = base.top - sup.top * s - 0.05;
      else y_sup = std::min(-0.52, st_.script_raise * base.top) - std::max(0.0, sup.bottom) * s * 0.6;
      y_sup += r_.normal(0.0, 0.03);
    }
    if (!sub.empty) {
      y_sub = st_.sub_drop + std::max(0.0, base.bottom) * 0.7 + std::max(0.0, -sub.top * s - 0.55) +
              r_.normal(0.0, 0.03);
    }
    if (!sup.empty && !sub.empty) {
      const double clearance = (y_sub + sub.top * s) - (y_sup + sup.bottom * s);
      if (clearance < 0.12) {
        y_sup -= 0.5 * (0.12 - clearance);
        y_sub += 0.5 * (0.12 - clearance);
      }
    }
    if (!sup.empty) out.place(sup, x + r_.normal(0.0, 0.02), y_sup, s);
    if (!sub.empty) out.place(sub, x + r_.normal(0.0, 0.02) - 0.03, y_sub, s);
    return out;
  }

  // A delimiter glyph stretched to span [top, bottom].
  Box delimiter(const std::string& token, double top, double bottom) {
    const SymbolGlyph& g = lib_.glyph(token, variant_of(token));
    const double gh = g.bottom - g.top;
    const double sy = (bottom - top) / gh;
    const double sx = clampd(std::sqrt(sy), 0.6, 1.5);
    const int id = new_symbol(token);
    Box b;
    for (const auto& st : g.strokes) {
      Ink in;
      in.symbol = id;
      for (const auto& p : st) in.pts.push_back(Point{p.x * sx, top + (p.y - g.top) * sy});
      b.ink.push_back(std::move(in));
    }
    distort(b.ink, 0.5 * g.width * sx, 0.5 * (top + bottom), 0.5);
    b.fit();
    return b;
  }

  Box fence(const Node& n) {
    Box body = layout(n.kids[0]);
    const double pad = r_.uniform(0.05, 0.15);
    const double top = std::min(body.empty ? -0.9 : body.top, -0.9) - pad;
    const double bottom = std::max(body.empty ? 0.1 : body.bottom, 0.12) + pad;
    Box l = delimiter(n.token, top, bottom), rr = delimiter(n.close, top, bottom);
    Box out;
    out.place(l, 0.0, 0.0);
    double x = l.w + st_.gap * r_.uniform(0.4, 1.0);
    out.place(body, x, 0.0);
    x += body.w + st_.gap * r_.uniform(0.4, 1.0);
    out.place(rr, x, 0.0);
    return out;
  }
};

std::string fmt_index(uint64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%06llu", static_cast<unsigned long long>(index));
  return buf;
}

}  // namespace

SynthSample render_tokens(const std::vector<std::string>& tokens, const WriterStyle& style, SynthRandom& r,
                          const GlyphLibrary& lib, const SynthOptions& options) {
  HMER_CHECK(!tokens.empty(), "synth layout: empty token sequence");
  lib.require_coverage(tokens);
  Parser parser(tokens);
  const Node tree = parser.parse();
  Layout layout(style, r, lib);
  Box box = layout.layout(tree);
  HMER_CHECK(!box.empty, "synth layout: the tokens have no visible symbol");

  // The whole line: baseline wobble, slant, tilt (em units).
  const double phase = r.uniform(0.0, 2.0 * kPi);
  const double ct = std::cos(style.tilt), st = std::sin(style.tilt);
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (auto& in : box.ink)
    for (auto& p : in.pts) {
      const double y = p.y + style.wobble * std::sin(2.0 * kPi * p.x / style.wobble_period + phase);
      const double x = p.x - y * style.slant;
      p.x = ct * x - st * y;
      p.y = st * x + ct * y;
      x0 = std::min(x0, p.x);
      x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y);
      y1 = std::max(y1, p.y);
    }

  // Writing size: the writer's, shrunk when the image would exceed the largest CROHME sizes.
  const double pad = 2.0 * options.margin + style.stroke_width + 1.0;
  double em = style.em_px;
  if ((y1 - y0) * em + pad > options.max_height) em = (options.max_height - pad) / std::max(1e-9, y1 - y0);
  if ((x1 - x0) * em + pad > options.max_width) em = (options.max_width - pad) / std::max(1e-9, x1 - x0);

  SynthSample out;
  out.tokens = tokens;
  out.style = style;
  out.style.em_px = em;
  std::map<int, size_t> sym_index;
  for (size_t i = 0; i < box.ink.size(); ++i) {
    const Ink& in = box.ink[i];
    Stroke s;
    s.id = std::to_string(out.strokes.size());
    s.points.reserve(in.pts.size());
    // Coordinates on a 0.01 px grid, so the InkML (written with enough digits) renders to the same image.
    for (const auto& p : in.pts) {
      const Point q{std::round((p.x - x0) * em * 100.0) / 100.0, std::round((p.y - y0) * em * 100.0) / 100.0};
      if (s.points.empty() || s.points.back().x != q.x || s.points.back().y != q.y) s.points.push_back(q);
    }
    if (s.points.empty()) continue;
    const int stroke_idx = static_cast<int>(out.strokes.size());
    out.strokes.push_back(std::move(s));
    auto it = sym_index.find(in.symbol);
    if (it == sym_index.end()) {
      it = sym_index.emplace(in.symbol, out.symbols.size()).first;
      out.symbols.push_back(SynthSymbol{layout.labels[static_cast<size_t>(in.symbol)], {}});
    }
    out.symbols[it->second].strokes.push_back(stroke_idx);
  }
  RenderOptions ro;
  ro.scale = RenderScale::Fixed;
  ro.fixed_scale = 1.0;
  ro.stroke_width = style.stroke_width;
  ro.margin = options.margin;
  ro.min_height = options.min_height;
  ro.max_side = std::max(options.max_width, options.max_height) + 64;
  out.image = render_strokes(out.strokes, ro);
  return out;
}

std::string synth_name(const std::string& prefix, uint64_t index) { return prefix + "_" + fmt_index(index); }

SynthSample synth_sample(uint64_t seed, uint64_t index, const GlyphLibrary& lib, const SynthOptions& options) {
  // Sample i reads its own part of the stream (seed, i * 2^32 ...), so it does not depend on the others.
  Generator g;
  g.set_state(seed, index << 32);
  SynthRandom r(g);
  const WriterStyle style = WriterStyle::sample(r);
  const int target = std::min(options.max_tokens, sample_target_length(r));
  const std::vector<std::string> tokens = generate_expression(r, target);
  SynthSample s = render_tokens(tokens, style, r, lib, options);
  s.name = synth_name(options.name_prefix, index);
  return s;
}

SynthSample synth_sample_for(uint64_t seed, uint64_t index, const std::vector<std::string>& tokens,
                             const GlyphLibrary& lib, const SynthOptions& options) {
  Generator g;
  g.set_state(seed, index << 32);
  SynthRandom r(g);
  const WriterStyle style = WriterStyle::sample(r);
  SynthSample s = render_tokens(tokens, style, r, lib, options);
  s.name = synth_name(options.name_prefix, index);
  return s;
}

InkDocument synth_inkml(const SynthSample& s) {
  InkDocument doc;
  doc.channels = {"X", "Y"};
  std::string truth = "$";
  for (size_t i = 0; i < s.tokens.size(); ++i) truth += (i ? " " : "") + s.tokens[i];
  truth += "$";
  doc.set_annotation("truth", truth);
  doc.set_annotation("UI", s.name);
  doc.set_annotation("writer", "hmer-synth");
  doc.strokes = s.strokes;
  TraceGroup seg;
  seg.id = std::to_string(s.strokes.size());
  seg.truth = "Segmentation";
  for (size_t i = 0; i < s.symbols.size(); ++i) {
    TraceGroup g;
    g.id = std::to_string(s.strokes.size() + 1 + i);
    g.truth = s.symbols[i].label;
    for (int k : s.symbols[i].strokes) g.trace_refs.push_back(s.strokes[static_cast<size_t>(k)].id);
    seg.groups.push_back(std::move(g));
  }
  doc.groups.push_back(std::move(seg));
  return doc;
}

cv::Mat synth_sheet(const std::vector<SynthSample>& samples, int cols, int cell_w, int cell_h) {
  HMER_CHECK(cols > 0 && cell_w > 16 && cell_h > 40, "synth_sheet: bad grid ", cols, " x (", cell_w, ", ", cell_h, ")");
  const int rows = static_cast<int>((samples.size() + static_cast<size_t>(cols) - 1) / static_cast<size_t>(cols));
  const int border = 6, text_h = 34;
  cv::Mat sheet(rows * (cell_h + text_h + border) + border, cols * (cell_w + border) + border, CV_8UC1,
                cv::Scalar(110));
  for (size_t i = 0; i < samples.size(); ++i) {
    const int cx = border + static_cast<int>(i % static_cast<size_t>(cols)) * (cell_w + border);
    const int cy = border + static_cast<int>(i / static_cast<size_t>(cols)) * (cell_h + text_h + border);
    const cv::Mat& img = samples[i].image;
    const double k = std::min({1.0, static_cast<double>(cell_w) / img.cols, static_cast<double>(cell_h) / img.rows});
    cv::Mat small;
    cv::resize(img, small, cv::Size(std::max(1, static_cast<int>(img.cols * k)), std::max(1, static_cast<int>(img.rows * k))),
               0, 0, k < 1.0 ? cv::INTER_AREA : cv::INTER_NEAREST);
    small.copyTo(sheet(cv::Rect(cx, cy, small.cols, small.rows)));
    // The caption in (at most) two lines that fit the cell.
    std::string cap;
    for (size_t t = 0; t < samples[i].tokens.size(); ++t) cap += (t ? " " : "") + samples[i].tokens[t];
    const auto fits = [&](const std::string& s) {
      int base = 0;
      return cv::getTextSize(s, cv::FONT_HERSHEY_PLAIN, 0.85, 1, &base).width <= cell_w;
    };
    std::string lines[2];
    size_t pos = 0;
    for (int l = 0; l < 2 && pos < cap.size(); ++l) {
      size_t len = cap.size() - pos;
      while (len > 0 && !fits(cap.substr(pos, len))) --len;
      lines[l] = cap.substr(pos, len);
      pos += len;
    }
    if (pos < cap.size() && lines[1].size() > 3) lines[1] = lines[1].substr(0, lines[1].size() - 3) + "...";
    for (int l = 0; l < 2; ++l)
      cv::putText(sheet, lines[l], cv::Point(cx, cy + cell_h + 13 + 15 * l), cv::FONT_HERSHEY_PLAIN, 0.85,
                  cv::Scalar(255), 1, cv::LINE_8);
  }
  return sheet;
}

}  // namespace hmer::data
