#pragma once
// Token <-> id maps for the three dictionary files in circulation (see docs/data.md):
//   CAN   (LBH1024/CAN words_dict.txt, PaddleOCR latex_symbol_dict.txt): one token per line, id = line
//         index; eos = 0, sos = 1 are lines of the file. Built in: Vocabulary::can_builtin().
//   WAP   (JianshuZhang/WAP dictionary.txt): `token<TAB>id`, `<eol>` is the end token (id 0).
//   CoMER (BTTR/CoMER/TAMER dictionary.txt): one token per line, no specials; the specials
//         (e.g. <pad> <sos> <eos>) are added in front (or at the back) from config.
// Which names play eos / sos / pad is configured, never guessed from the file size.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace YAML {
class Node;
}

namespace hmer::data {

enum class VocabFormat { Can, Wap, Comer };
VocabFormat parse_vocab_format(const std::string& s);  // "can" | "wap" | "comer"

// What to do with a token that is not in the dictionary (after the mapping rules).
//   Error      : throw, naming the token and where it came from (the default).
//   SkipToken  : drop the token and count it (Vocabulary::encode).
//   SkipSample : drop the whole sample and count it (datasets); the label is never silently altered.
enum class UnknownTokenPolicy { Error, SkipToken, SkipSample };
UnknownTokenPolicy parse_unknown_policy(const std::string& s);  // "error" | "skip" (= skip_sample) | "skip_token" | "skip_sample"

struct VocabConfig {
  VocabFormat format = VocabFormat::Can;
  std::string path;  // empty with format Can: the built-in 111-token CAN dictionary
  // Special tokens added by the loader (CoMER: {"<pad>", "<sos>", "<eos>"}); ignored for Can/Wap files.
  std::vector<std::string> add_specials;
  bool specials_first = true;
  // Names of the special roles; "" = the format's default (Can: eos/sos/eos as pad; Wap: <eol>, no sos,
  // <eol> as pad; Comer: <eos>/<sos>/<pad>).
  std::string eos_token, sos_token, pad_token;
  // Token rewriting before lookup: token -> replacement tokens (empty = drop). CAN needs `\limits: []`.
  std::map<std::string, std::vector<std::string>> token_map;
  UnknownTokenPolicy on_unknown = UnknownTokenPolicy::Error;

  // The CAN setup: built-in dictionary, `\limits` dropped.
  static VocabConfig can_default();
  // Keys: format, path, add_specials, specials_first, eos, sos, pad, token_map ({tok: "repl tokens"}),
  // on_unknown_token.
  static VocabConfig from_yaml(const YAML::Node& node);
};

// Counts of tokens that were not in the dictionary, by token, with a few example locations.
struct UnknownTokenReport {
  int64_t tokens = 0;   // unknown token occurrences
  int64_t samples = 0;  // samples that held at least one (skipped under SkipSample)
  std::map<std::string, int64_t> by_token;
  std::vector<std::string> examples;  // "where: token", at most 20
  void add(const std::string& token, const std::string& where);
  std::string str() const;  // "3 unknown tokens in 2 samples: \foo x2, \bar x1 (e.g. file:3: \foo)"
};

class Vocabulary {
 public:
  Vocabulary() = default;
  // Tokens in id order; the special roles by name ("" = absent; eos must exist for decoding).
  Vocabulary(std::vector<std::string> tokens, const std::string& eos, const std::string& sos, const std::string& pad,
             const std::string& source = "vocabulary");

  // CAN's 111-entry dictionary (can-model.md §2): eos=0, sos=1, ..., `{`=107 `}`=108 `^`=109 `_`=110.
  static Vocabulary can_builtin();
  // Parses a dictionary file. Errors name the file and line: empty tokens, duplicates, a WAP line
  // without `<TAB>id`, non-integer / negative / duplicate / gapped ids, missing special tokens.
  static Vocabulary from_file(const std::string& path, VocabFormat format, const VocabConfig& cfg = {});
  // Dictionary text from memory; `source` names it in errors.
  static Vocabulary from_text(const std::string& text, VocabFormat format, const VocabConfig& cfg,
                              const std::string& source);
  // Built-in CAN when cfg.path is empty and the format is Can; otherwise from_file.
  static Vocabulary from_config(const VocabConfig& cfg);

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  bool contains(const std::string& token) const { return index_.count(token) != 0; }
  std::optional<int64_t> find(const std::string& token) const;
  int64_t id(const std::string& token) const;  // throws naming the token
  const std::string& token(int64_t id) const;  // throws on out of range
  const std::vector<std::string>& tokens() const { return tokens_; }
  int64_t eos_id() const { return eos_; }
  int64_t sos_id() const { return sos_; }  // -1 when the vocabulary has no sos
  int64_t pad_id() const { return pad_; }

  // Applies the mapping rules to `tokens` (e.g. drops `\limits`), then looks each up.
  // Unknown tokens: Error throws "<where>: unknown token '<t>'"; SkipToken drops and counts;
  // SkipSample returns nullopt and counts. `report` may be null.
  std::optional<std::vector<int64_t>> encode(const std::vector<std::string>& tokens,
                                             const std::map<std::string, std::vector<std::string>>& token_map,
                                             UnknownTokenPolicy policy, UnknownTokenReport* report,
                                             const std::string& where) const;
  std::vector<int64_t> encode(const std::vector<std::string>& tokens) const;  // no mapping, unknown = error

  // Ids -> tokens, stopping at the first eos (when stop_at_eos) and leaving out sos/pad.
  std::vector<std::string> decode(const std::vector<int64_t>& ids, bool stop_at_eos = true) const;
  std::string decode_string(const std::vector<int64_t>& ids, bool stop_at_eos = true) const;

  // Writes the dictionary in the given format (round-trips through from_file).
  std::string to_text(VocabFormat format) const;

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> index_;
  int64_t eos_ = -1, sos_ = -1, pad_ = -1;
};

// Applies token rewriting rules (token -> replacement, empty = drop).
std::vector<std::string> map_tokens(const std::vector<std::string>& tokens,
                                    const std::map<std::string, std::vector<std::string>>& token_map);

}  // namespace hmer::data
