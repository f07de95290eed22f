#include "data/latex_tokenizer.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <set>

#include "core/error.h"

namespace hmer::data {

namespace {

enum class Lex { Command, Char, Open, Close, Sup, Sub, Keyword, End };

struct LexTok {
  Lex kind;
  std::string text;
  size_t pos;
};

bool is_ascii_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Length of the UTF-8 sequence starting with `c` (1 for ASCII and for invalid lead bytes, so a
// broken byte becomes a one-byte token the vocabulary then reports, instead of derailing the lexer).
size_t utf8_length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

std::vector<LexTok> lex(std::string_view s, const std::string& context) {
  std::vector<LexTok> out;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    // `$` delimits math mode; `~` is a LaTeX non-breaking space; control bytes are noise.
    if (c <= 0x20 || c == 0x7F || c == '$' || c == '~') {
      ++i;
      continue;
    }
    if (c == '\\') {
      if (i + 1 >= s.size()) fail(context, ": LaTeX ends with a lone backslash (offset ", i, ")");
      size_t j = i + 1;
      if (is_ascii_letter(static_cast<unsigned char>(s[j]))) {
        while (j < s.size() && is_ascii_letter(static_cast<unsigned char>(s[j]))) ++j;
      } else {
        j += utf8_length(static_cast<unsigned char>(s[j]));
        if (j > s.size()) j = s.size();
      }
      std::string name(s.substr(i, j - i));
      // `\` followed by any whitespace is the control space.
      if (name.size() == 2 && static_cast<unsigned char>(name[1]) <= 0x20) name = "\\ ";
      out.push_back({Lex::Command, name, i});
      i = j;
      continue;
    }
    if (c == '{') { out.push_back({Lex::Open, "{", i}); ++i; continue; }
    if (c == '}') { out.push_back({Lex::Close, "}", i}); ++i; continue; }
    if (c == '^') { out.push_back({Lex::Sup, "^", i}); ++i; continue; }
    if (c == '_') { out.push_back({Lex::Sub, "_", i}); ++i; continue; }
    if (is_ascii_letter(c)) {
      // ABOVE / BELOW as whole upper-case words are a script notation of one 2014 collection
      // (`\sqrt {x} ABOVE {n}`); any other word is split into letters.
      size_t j = i;
      while (j < s.size() && is_ascii_letter(static_cast<unsigned char>(s[j]))) ++j;
      const std::string_view word = s.substr(i, j - i);
      if (word == "ABOVE" || word == "BELOW") {
        out.push_back({Lex::Keyword, std::string(word), i});
      } else {
        for (size_t k = i; k < j; ++k) out.push_back({Lex::Char, std::string(1, s[k]), k});
      }
      i = j;
      continue;
    }
    size_t len = utf8_length(c);
    if (i + len > s.size()) len = s.size() - i;
    out.push_back({Lex::Char, std::string(s.substr(i, len)), i});
    i += len;
  }
  out.push_back({Lex::End, "", s.size()});
  return out;
}

const std::set<std::string>& spacing_commands() {
  static const std::set<std::string> s = {
      "\\!",         "\\,",          "\\;",        "\\:",         "\\ ",           "\\>",
      "\\quad",      "\\qquad",      "\\enspace",  "\\thinspace", "\\medspace",    "\\thickspace",
      "\\negthinspace", "\\negmedspace", "\\negthickspace", "\\displaystyle", "\\textstyle",
      "\\scriptstyle", "\\scriptscriptstyle", "\\\\", "\\hfill", "\\nonumber", "\\notag",
      "\\hspace",    "\\vspace",     "\\/",        "\\newline",   "\\limits",      "\\nolimits"};
  return s;
}

const std::set<std::string>& unwrap_commands() {
  static const std::set<std::string> s = {
      "\\mathrm", "\\mathit",  "\\mathbf", "\\mathsf",  "\\mathtt",  "\\mathnormal", "\\textrm",
      "\\textit", "\\textbf",  "\\text",   "\\mbox",    "\\hbox",    "\\operatorname", "\\boldsymbol",
      "\\bm",     "\\textnormal", "\\rm",  "\\mathbb",  "\\mathcal"};
  return s;
}

const std::set<std::string>& delimiter_sizers() {
  static const std::set<std::string> s = {
      "\\left", "\\right", "\\middle", "\\big",  "\\Big",  "\\bigg",  "\\Bigg",  "\\bigl",
      "\\Bigl", "\\biggl", "\\Biggl",  "\\bigr", "\\Bigr", "\\biggr", "\\Biggr", "\\bigm",
      "\\Bigm", "\\biggm", "\\Biggm"};
  return s;
}

const std::set<std::string>& fraction_commands() {
  static const std::set<std::string> s = {"\\frac", "\\dfrac", "\\tfrac", "\\cfrac"};
  return s;
}

constexpr int kMaxDepth = 200;

class Parser {
 public:
  Parser(std::vector<LexTok> toks, const LatexTokenizerOptions& opt, const std::string& context)
      : toks_(std::move(toks)), opt_(opt), context_(context) {}

  std::vector<std::string> run() {
    std::vector<std::string> out;
    parse_sequence(out, Term::None, 0);
    return out;
  }

 private:
  enum class Term { None, Brace, Bracket };

  const LexTok& peek() const { return toks_[pos_]; }
  const LexTok& next() {
    const LexTok& t = toks_[pos_];
    if (t.kind != Lex::End) ++pos_;
    return t;
  }

  [[noreturn]] void error(const std::string& what, size_t offset) const {
    fail(context_, ": LaTeX ", what, " (offset ", offset, ")");
  }

  void emit(std::vector<std::string>& out, const std::string& tok) const {
    if (tok == "'" && opt_.prime_to_command) {
      out.push_back("\\prime");
      return;
    }
    const auto it = opt_.command_map.find(tok);
    if (it == opt_.command_map.end()) {
      out.push_back(tok);
      return;
    }
    for (const auto& r : it->second) out.push_back(r);
  }

  void parse_sequence(std::vector<std::string>& out, Term term, int depth) {
    if (depth > kMaxDepth) error("nests deeper than " + std::to_string(kMaxDepth) + " levels", peek().pos);
    while (true) {
      const LexTok& t = peek();
      if (t.kind == Lex::End) {
        if (term == Term::Brace) error("has an unclosed '{'", t.pos);
        if (term == Term::Bracket) error("has an unclosed '['", t.pos);
        return;
      }
      if (t.kind == Lex::Close) {
        if (term == Term::Brace) return;
        if (opt_.strict) error("has an unmatched '}'", t.pos);
        next();
        continue;
      }
      if (term == Term::Bracket && t.kind == Lex::Char && t.text == "]") return;
      parse_atom(out, depth);
    }
  }

  // An argument: a braced group (contents inline) or a single atom without scripts.
  void parse_argument(std::vector<std::string>& out, int depth, size_t owner_pos) {
    while (peek().kind == Lex::Command && spacing_commands().count(peek().text)) next();
    const LexTok& t = peek();
    if (t.kind == Lex::Open) {
      next();
      parse_sequence(out, Term::Brace, depth + 1);
      next();  // the '}'
      return;
    }
    if (t.kind == Lex::End || t.kind == Lex::Close || t.kind == Lex::Sup || t.kind == Lex::Sub ||
        t.kind == Lex::Keyword)
      error("is missing an argument", owner_pos);
    parse_base(out, depth + 1);
  }

  // The nucleus of an atom; returns with nothing consumed when the atom starts with a script.
  void parse_base(std::vector<std::string>& out, int depth) {
    if (depth > kMaxDepth) error("nests deeper than " + std::to_string(kMaxDepth) + " levels", peek().pos);
    const LexTok& t = peek();
    switch (t.kind) {
      case Lex::Sup:
      case Lex::Sub:
      case Lex::Keyword:
      case Lex::End:
      case Lex::Close:
        return;
      case Lex::Open: {
        next();
        parse_sequence(out, Term::Brace, depth + 1);
        next();
        return;
      }
      case Lex::Char:
        next();
        emit(out, t.text);
        return;
      case Lex::Command:
        break;
    }
    const LexTok cmd = next();
    const std::string& name = cmd.text;
    if (spacing_commands().count(name)) return;
    if (fraction_commands().count(name)) {
      std::vector<std::string> num, den;
      parse_argument(num, depth, cmd.pos);
      parse_argument(den, depth, cmd.pos);
      out.push_back("\\frac");
      wrap(out, num);
      wrap(out, den);
      return;
    }
    if (name == "\\sqrt") {
      std::vector<std::string> index, body;
      bool has_index = false;
      if (peek().kind == Lex::Char && peek().text == "[") {
        next();
        parse_sequence(index, Term::Bracket, depth + 1);
        next();  // the ']'
        has_index = true;
      }
      parse_argument(body, depth, cmd.pos);
      if (!has_index && peek().kind == Lex::Keyword && peek().text == "ABOVE") {
        const size_t kpos = next().pos;
        parse_argument(index, depth, kpos);
        has_index = true;
      }
      out.push_back("\\sqrt");
      if (has_index) {
        out.push_back("[");
        out.insert(out.end(), index.begin(), index.end());
        out.push_back("]");
      }
      wrap(out, body);
      return;
    }
    if (unwrap_commands().count(name)) {
      parse_argument(out, depth, cmd.pos);
      return;
    }
    if (delimiter_sizers().count(name)) {
      while (peek().kind == Lex::Command && spacing_commands().count(peek().text)) next();
      if (peek().kind == Lex::Char && peek().text == ".") {
        next();  // `\left.` is an invisible delimiter
        return;
      }
      if (peek().kind == Lex::End || peek().kind == Lex::Open || peek().kind == Lex::Close)
        error("has " + name + " without a delimiter", cmd.pos);
      parse_base(out, depth + 1);
      return;
    }
    emit(out, name);
  }

  void wrap(std::vector<std::string>& out, const std::vector<std::string>& inner) const {
    out.push_back("{");
    out.insert(out.end(), inner.begin(), inner.end());
    out.push_back("}");
  }

  void parse_atom(std::vector<std::string>& out, int depth) {
    std::vector<std::string> base, sub, sup;
    parse_base(base, depth);
    bool has_sub = false, has_sup = false, limits = false, sup_first = false;
    while (true) {
      const LexTok& t = peek();
      if (t.kind == Lex::Command && (t.text == "\\limits" || t.text == "\\nolimits")) {
        limits = limits || t.text == "\\limits";
        next();
        continue;
      }
      if (t.kind == Lex::Sub || (t.kind == Lex::Keyword && t.text == "BELOW")) {
        next();
        if (has_sub) error("has a double subscript", t.pos);
        parse_argument(sub, depth, t.pos);
        has_sub = true;
        continue;
      }
      if (t.kind == Lex::Sup || (t.kind == Lex::Keyword && t.text == "ABOVE")) {
        next();
        if (has_sup) error("has a double superscript", t.pos);
        if (!has_sub) sup_first = true;
        parse_argument(sup, depth, t.pos);
        has_sup = true;
        continue;
      }
      // f' is f^{\prime}: primes after a nucleus join its superscript.
      if (t.kind == Lex::Char && t.text == "'" && !has_sup && (!base.empty() || has_sub)) {
        next();
        if (!has_sub) sup_first = true;
        emit(sup, "'");
        while (peek().kind == Lex::Char && peek().text == "'") {
          next();
          emit(sup, "'");
        }
        if (peek().kind == Lex::Sup) {
          const size_t p = next().pos;
          parse_argument(sup, depth, p);
        }
        has_sup = true;
        continue;
      }
      break;
    }
    out.insert(out.end(), base.begin(), base.end());
    if (limits && opt_.keep_limits) out.push_back("\\limits");
    // An empty script (`x _ {}`, seen in RIT truths) carries nothing: it is left out.
    has_sub = has_sub && !sub.empty();
    has_sup = has_sup && !sup.empty();
    const bool sup_then_sub = sup_first && !opt_.sub_before_sup;
    if (has_sup && sup_then_sub) { out.push_back("^"); wrap(out, sup); }
    if (has_sub) { out.push_back("_"); wrap(out, sub); }
    if (has_sup && !sup_then_sub) { out.push_back("^"); wrap(out, sup); }
  }

  std::vector<LexTok> toks_;
  size_t pos_ = 0;
  const LatexTokenizerOptions& opt_;
  const std::string& context_;
};

}  // namespace

std::map<std::string, std::vector<std::string>> default_command_map() {
  return {
      {"\\lt", {"<"}},          {"\\gt", {">"}},          {"\\le", {"\\leq"}},       {"\\ge", {"\\geq"}},
      {"\\leqslant", {"\\leq"}}, {"\\geqslant", {"\\geq"}}, {"\\ne", {"\\neq"}},      {"\\to", {"\\rightarrow"}},
      {"\\gets", {"\\leftarrow"}}, {"\\lbrack", {"["}},   {"\\rbrack", {"]"}},       {"\\lbrace", {"\\{"}},
      {"\\rbrace", {"\\}"}},     {"\\vert", {"|"}},        {"\\lvert", {"|"}},        {"\\rvert", {"|"}},
      {"\\mid", {"|"}},          {"\\|", {"|", "|"}},      {"\\Vert", {"|", "|"}},    {"\\parallel", {"|", "|"}},
      {"\\dots", {"\\ldots"}},   {"\\dotsc", {"\\ldots"}}, {"\\dotsb", {"\\cdots"}},  {"\\cdotp", {"\\cdot"}},
      {"\\infin", {"\\infty"}},  {"\\ast", {"*"}},
      // The 2014 captions write the one `\Pi` truth as `\pi` (WAP's dictionary has no `\Pi`).
      {"\\Pi", {"\\pi"}},
      // Unicode that hand-typed truths sometimes contain.
      {"\xE2\x88\x92", {"-"}},           {"\xC3\x97", {"\\times"}},      {"\xC3\xB7", {"\\div"}},
      {"\xE2\x89\xA4", {"\\leq"}},       {"\xE2\x89\xA5", {"\\geq"}},    {"\xE2\x89\xA0", {"\\neq"}},
      {"\xC2\xB1", {"\\pm"}},            {"\xE2\x88\x9E", {"\\infty"}},  {"\xE2\x86\x92", {"\\rightarrow"}},
      {"\xC2\xB7", {"\\cdot"}},          {"\xE2\x80\xA6", {"\\ldots"}},  {"\xCF\x80", {"\\pi"}},
  };
}

LatexTokenizerOptions::LatexTokenizerOptions() : command_map(default_command_map()) {}

LatexTokenizerOptions LatexTokenizerOptions::from_yaml(const YAML::Node& node) {
  LatexTokenizerOptions o;
  if (!node || node.IsNull()) return o;
  HMER_CHECK(node.IsMap(), "latex tokenizer config: expected a map");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (key == "keep_limits") o.keep_limits = kv.second.as<bool>();
    else if (key == "prime_to_command") o.prime_to_command = kv.second.as<bool>();
    else if (key == "sub_before_sup") o.sub_before_sup = kv.second.as<bool>();
    else if (key == "strict") o.strict = kv.second.as<bool>();
    else if (key == "command_map") {
      HMER_CHECK(kv.second.IsMap(), "latex tokenizer config: command_map must be a map");
      for (const auto& m : kv.second) o.command_map[m.first.as<std::string>()] = split_tokens(m.second.as<std::string>());
    } else {
      fail("latex tokenizer config: unknown key '", key, "'");
    }
  }
  return o;
}

std::vector<std::string> tokenize_latex(std::string_view latex, const LatexTokenizerOptions& options,
                                        const std::string& context) {
  Parser p(lex(latex, context), options, context);
  return p.run();
}

std::string join_tokens(const std::vector<std::string>& tokens) {
  std::string s;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) s += ' ';
    s += tokens[i];
  }
  return s;
}

std::vector<std::string> split_tokens(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace hmer::data
