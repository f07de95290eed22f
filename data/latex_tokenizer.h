#pragma once
// Turns the LaTeX truth of an InkML file (as the author typed it: `$\frac {v^2}{s^3}$`) into the
// space-separated CROHME token sequence of the offline captions (`\frac { v ^ { 2 } } { s ^ { 3 } }`).
//
// The conventions were measured on CROHME 2014 (986 InkML truths against the WAP/CoMER captions):
// numbers and words are split into single characters; script arguments are always braced and the
// subscript is written before the superscript; grouping braces that are not an argument are dropped
// (`{t}^{2}` -> `t ^ { 2 }`); `\mathrm{..}`, `\mbox{..}` and friends are unwrapped; spacing commands
// (`\!`, `\;`, `\ `) vanish; `\left(`/`\right)` become the bare delimiter; `\lt`/`\gt` become `<`/`>`;
// `\limits` is dropped (the 2014 captions never have it; the train captions do, so it is an option);
// the `\sqrt {x} ABOVE {n}` notation of one collection becomes `\sqrt [ n ] { x }`.
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace YAML {
class Node;
}

namespace hmer::data {

struct LatexTokenizerOptions {
  // The CROHME 2014 test captions never contain `\limits`; the train captions keep it (187 times).
  bool keep_limits = false;
  // `'` becomes `\prime` (2014 captions: `m ^ {'}` -> `m ^ { \prime }`); the MfrDB train captions keep `'`.
  bool prime_to_command = true;
  // Scripts are written `_ { .. } ^ { .. }` whatever the source order (`\int^{\pi}_{0}`).
  bool sub_before_sup = true;
  // A stray `}` is an error; with strict = false it is ignored (a few hand-typed truths have one).
  bool strict = true;
  // Command (or character) -> replacement tokens; an empty vector drops the token. Applied to every
  // emitted token. The defaults (default_command_map()) cover the synonyms seen in CROHME truths.
  std::map<std::string, std::vector<std::string>> command_map;

  LatexTokenizerOptions();
  // Keys: keep_limits, prime_to_command, sub_before_sup, strict, command_map ({from: "to tokens"},
  // merged over the defaults; "" drops the token).
  static LatexTokenizerOptions from_yaml(const YAML::Node& node);
};

// The synonym map used by default (`\lt` -> `<`, `\to` -> `\rightarrow`, `\lbrack` -> `[`, ...).
std::map<std::string, std::vector<std::string>> default_command_map();

// Tokenises `latex`. Throws hmer::Error naming `context` (for example "file.inkml:12") and the
// character offset on malformed input (unbalanced braces, a missing argument, a trailing backslash,
// double scripts). Never crashes on arbitrary bytes.
std::vector<std::string> tokenize_latex(std::string_view latex, const LatexTokenizerOptions& options = {},
                                        const std::string& context = "latex");

// "a b c" from {"a", "b", "c"}.
std::string join_tokens(const std::vector<std::string>& tokens);
// Splits a caption on ASCII whitespace.
std::vector<std::string> split_tokens(std::string_view text);

}  // namespace hmer::data
