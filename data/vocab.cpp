#include "data/vocab.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/latex_tokenizer.h"

namespace hmer::data {

namespace {

// CAN's words_dict.txt (can-model.md §2), id = position.
const char* const kCanTokens[] = {
    "eos",     "sos",      "!",        "'",       "(",       ")",        "+",       ",",       "-",
    ".",       "/",        "0",        "1",       "2",       "3",        "4",       "5",       "6",
    "7",       "8",        "9",        "<",       "=",       ">",        "A",       "B",       "C",
    "E",       "F",        "G",        "H",       "I",       "L",        "M",       "N",       "P",
    "R",       "S",        "T",        "V",       "X",       "Y",        "[",       "\\Delta", "\\alpha",
    "\\beta",  "\\cdot",   "\\cdots",  "\\cos",   "\\div",   "\\exists", "\\forall", "\\frac",  "\\gamma",
    "\\geq",   "\\in",     "\\infty",  "\\int",   "\\lambda", "\\ldots", "\\leq",    "\\lim",   "\\log",
    "\\mu",    "\\neq",    "\\phi",    "\\pi",    "\\pm",    "\\prime",  "\\rightarrow", "\\sigma", "\\sin",
    "\\sqrt",  "\\sum",    "\\tan",    "\\theta", "\\times", "]",        "a",       "b",       "c",
    "d",       "e",        "f",        "g",       "h",       "i",        "j",       "k",       "l",
    "m",       "n",        "o",        "p",       "q",       "r",        "s",       "t",       "u",
    "v",       "w",        "x",        "y",       "z",       "\\{",      "|",       "\\}",     "{",
    "}",       "^",        "_"};
static_assert(sizeof(kCanTokens) / sizeof(kCanTokens[0]) == 111, "CAN's dictionary has 111 entries");

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> read_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string cur;
  for (char c : text) {
    if (c == '\n') {
      lines.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) lines.push_back(cur);
  for (auto& l : lines)
    if (!l.empty() && l.back() == '\r') l.pop_back();
  // Trailing blank lines are harmless; blank lines inside would shift line-index ids, so they stay errors.
  while (!lines.empty() && trim(lines.back()).empty()) lines.pop_back();
  return lines;
}

std::string pick(const std::string& configured, const char* fallback) {
  return configured.empty() ? std::string(fallback) : configured;
}

}  // namespace

VocabFormat parse_vocab_format(const std::string& s) {
  if (s == "can") return VocabFormat::Can;
  if (s == "wap") return VocabFormat::Wap;
  if (s == "comer" || s == "bttr") return VocabFormat::Comer;
  fail("vocabulary: unknown format '", s, "' (expected can, wap or comer)");
}

UnknownTokenPolicy parse_unknown_policy(const std::string& s) {
  if (s == "error") return UnknownTokenPolicy::Error;
  if (s == "skip" || s == "skip_sample") return UnknownTokenPolicy::SkipSample;
  if (s == "skip_token") return UnknownTokenPolicy::SkipToken;
  fail("on_unknown_token: unknown policy '", s, "' (expected error, skip, skip_sample or skip_token)");
}

VocabConfig VocabConfig::can_default() {
  VocabConfig c;
  c.format = VocabFormat::Can;
  c.token_map["\\limits"] = {};
  return c;
}

VocabConfig VocabConfig::from_yaml(const YAML::Node& node) {
  VocabConfig c;
  if (!node || node.IsNull()) return can_default();
  HMER_CHECK(node.IsMap(), "vocabulary config: expected a map");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "format") c.format = parse_vocab_format(v.as<std::string>());
    else if (key == "path") c.path = v.as<std::string>();
    else if (key == "add_specials") c.add_specials = v.as<std::vector<std::string>>();
    else if (key == "specials_first") c.specials_first = v.as<bool>();
    else if (key == "eos") c.eos_token = v.as<std::string>();
    else if (key == "sos") c.sos_token = v.as<std::string>();
    else if (key == "pad") c.pad_token = v.as<std::string>();
    else if (key == "on_unknown_token") c.on_unknown = parse_unknown_policy(v.as<std::string>());
    else if (key == "token_map") {
      HMER_CHECK(v.IsMap(), "vocabulary config: token_map must be a map");
      for (const auto& m : v) {
        if (m.second.IsSequence()) c.token_map[m.first.as<std::string>()] = m.second.as<std::vector<std::string>>();
        else if (m.second.IsNull()) c.token_map[m.first.as<std::string>()] = {};
        else c.token_map[m.first.as<std::string>()] = split_tokens(m.second.as<std::string>());
      }
    } else {
      fail("vocabulary config: unknown key '", key, "'");
    }
  }
  return c;
}

void UnknownTokenReport::add(const std::string& token, const std::string& where) {
  ++tokens;
  ++by_token[token];
  if (examples.size() < 20) examples.push_back(where + ": " + token);
}

std::string UnknownTokenReport::str() const {
  std::ostringstream os;
  os << tokens << " unknown token" << (tokens == 1 ? "" : "s") << " in " << samples << " sample"
     << (samples == 1 ? "" : "s");
  if (!by_token.empty()) {
    os << ":";
    for (const auto& [t, n] : by_token) os << " '" << t << "' x" << n;
  }
  if (!examples.empty()) os << " (e.g. " << examples.front() << ")";
  return os.str();
}

Vocabulary::Vocabulary(std::vector<std::string> tokens, const std::string& eos, const std::string& sos,
                       const std::string& pad, const std::string& source)
    : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    HMER_CHECK(!tokens_[i].empty(), source, ": token ", i, " is empty");
    const bool inserted = index_.emplace(tokens_[i], static_cast<int64_t>(i)).second;
    HMER_CHECK(inserted, source, ": token '", tokens_[i], "' appears twice (ids ", index_[tokens_[i]], " and ", i, ")");
  }
  auto role = [&](const std::string& name, const char* what) -> int64_t {
    if (name.empty()) return -1;
    const auto it = index_.find(name);
    HMER_CHECK(it != index_.end(), source, ": the ", what, " token '", name, "' is not in the dictionary");
    return it->second;
  };
  eos_ = role(eos, "eos");
  sos_ = role(sos, "sos");
  pad_ = role(pad, "pad");
  HMER_CHECK(eos_ >= 0, source, ": an eos token is required");
}

Vocabulary Vocabulary::can_builtin() {
  std::vector<std::string> t(std::begin(kCanTokens), std::end(kCanTokens));
  return Vocabulary(std::move(t), "eos", "sos", "eos", "built-in CAN dictionary");
}

Vocabulary Vocabulary::from_text(const std::string& text, VocabFormat format, const VocabConfig& cfg,
                                 const std::string& source) {
  const std::vector<std::string> lines = read_lines(text);
  HMER_CHECK(!lines.empty(), source, ": the dictionary is empty");
  std::vector<std::string> tokens;
  if (format == VocabFormat::Wap) {
    std::vector<std::pair<int64_t, size_t>> ids;  // (id, line)
    std::vector<std::string> toks;
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string& l = lines[i];
      const size_t tab = l.find('\t');
      HMER_CHECK(tab != std::string::npos, source, ":", i + 1, ": expected 'token<TAB>id', found no tab in '", l, "'");
      const std::string tok = trim(l.substr(0, tab));
      const std::string id_s = trim(l.substr(tab + 1));
      HMER_CHECK(!tok.empty(), source, ":", i + 1, ": empty token");
      HMER_CHECK(!id_s.empty() && id_s.size() <= 9 &&
                     std::all_of(id_s.begin(), id_s.end(), [](char c) { return c >= '0' && c <= '9'; }),
                 source, ":", i + 1, ": id '", id_s, "' is not a non-negative integer");
      ids.emplace_back(std::stoll(id_s), i);
      toks.push_back(tok);
    }
    tokens.assign(lines.size(), "");
    for (size_t k = 0; k < ids.size(); ++k) {
      const auto [id, line] = ids[k];
      HMER_CHECK(id < static_cast<int64_t>(lines.size()), source, ":", line + 1, ": id ", id, " is out of range (",
                 lines.size(), " entries; ids must be 0..", lines.size() - 1, ")");
      HMER_CHECK(tokens[id].empty(), source, ":", line + 1, ": id ", id, " is used twice");
      tokens[id] = toks[k];
    }
    return Vocabulary(std::move(tokens), pick(cfg.eos_token, "<eol>"), cfg.sos_token,
                      pick(cfg.pad_token, cfg.eos_token.empty() ? "<eol>" : cfg.eos_token.c_str()), source);
  }
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string tok = trim(lines[i]);
    HMER_CHECK(!tok.empty(), source, ":", i + 1, ": empty line inside the dictionary (ids are line numbers)");
    HMER_CHECK(tok.find_first_of(" \t") == std::string::npos, source, ":", i + 1, ": expected one token, found '",
               tok, "'");
    tokens.push_back(tok);
  }
  if (format == VocabFormat::Can)
    return Vocabulary(std::move(tokens), pick(cfg.eos_token, "eos"), pick(cfg.sos_token, "sos"),
                      pick(cfg.pad_token, cfg.eos_token.empty() ? "eos" : cfg.eos_token.c_str()), source);
  // CoMER: the file holds only symbols; the specials come from config.
  std::vector<std::string> specials = cfg.add_specials;
  if (specials.empty()) specials = {"<pad>", "<sos>", "<eos>"};
  std::vector<std::string> all;
  if (cfg.specials_first) all = specials;
  all.insert(all.end(), tokens.begin(), tokens.end());
  if (!cfg.specials_first) all.insert(all.end(), specials.begin(), specials.end());
  return Vocabulary(std::move(all), pick(cfg.eos_token, "<eos>"), pick(cfg.sos_token, "<sos>"),
                    pick(cfg.pad_token, "<pad>"), source);
}

Vocabulary Vocabulary::from_file(const std::string& path, VocabFormat format, const VocabConfig& cfg) {
  std::ifstream f(path, std::ios::binary);
  HMER_CHECK(f.good(), path, ": cannot open the dictionary file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return from_text(ss.str(), format, cfg, path);
}

Vocabulary Vocabulary::from_config(const VocabConfig& cfg) {
  if (cfg.path.empty()) {
    HMER_CHECK(cfg.format == VocabFormat::Can, "vocabulary config: a path is required for the wap and comer formats");
    return can_builtin();
  }
  return from_file(cfg.path, cfg.format, cfg);
}

std::optional<int64_t> Vocabulary::find(const std::string& token) const {
  const auto it = index_.find(token);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

int64_t Vocabulary::id(const std::string& token) const {
  const auto it = index_.find(token);
  HMER_CHECK(it != index_.end(), "vocabulary: unknown token '", token, "'");
  return it->second;
}

const std::string& Vocabulary::token(int64_t id) const {
  HMER_CHECK(id >= 0 && id < size(), "vocabulary: id ", id, " is out of range [0, ", size(), ")");
  return tokens_[static_cast<size_t>(id)];
}

std::vector<std::string> map_tokens(const std::vector<std::string>& tokens,
                                    const std::map<std::string, std::vector<std::string>>& token_map) {
  if (token_map.empty()) return tokens;
  std::vector<std::string> out;
  out.reserve(tokens.size());
  for (const auto& t : tokens) {
    const auto it = token_map.find(t);
    if (it == token_map.end()) out.push_back(t);
    else out.insert(out.end(), it->second.begin(), it->second.end());
  }
  return out;
}

std::optional<std::vector<int64_t>> Vocabulary::encode(const std::vector<std::string>& tokens,
                                                       const std::map<std::string, std::vector<std::string>>& token_map,
                                                       UnknownTokenPolicy policy, UnknownTokenReport* report,
                                                       const std::string& where) const {
  const std::vector<std::string> mapped = map_tokens(tokens, token_map);
  std::vector<int64_t> ids;
  ids.reserve(mapped.size());
  bool any_unknown = false;
  for (const auto& t : mapped) {
    const auto it = index_.find(t);
    if (it != index_.end()) {
      ids.push_back(it->second);
      continue;
    }
    if (policy == UnknownTokenPolicy::Error)
      fail(where, ": unknown token '", t, "' (not in the ", size(), "-token dictionary; set on_unknown_token: skip to "
           "skip such samples, or map it with token_map)");
    any_unknown = true;
    if (report) report->add(t, where);
  }
  if (any_unknown && report) ++report->samples;
  if (any_unknown && policy == UnknownTokenPolicy::SkipSample) return std::nullopt;
  return ids;
}

std::vector<int64_t> Vocabulary::encode(const std::vector<std::string>& tokens) const {
  return *encode(tokens, {}, UnknownTokenPolicy::Error, nullptr, "encode");
}

std::vector<std::string> Vocabulary::decode(const std::vector<int64_t>& ids, bool stop_at_eos) const {
  std::vector<std::string> out;
  for (int64_t id : ids) {
    if (id == eos_) {
      if (stop_at_eos) break;
      continue;
    }
    if (id == sos_ || id == pad_) continue;
    out.push_back(token(id));
  }
  return out;
}

std::string Vocabulary::decode_string(const std::vector<int64_t>& ids, bool stop_at_eos) const {
  return join_tokens(decode(ids, stop_at_eos));
}

std::string Vocabulary::to_text(VocabFormat format) const {
  std::ostringstream os;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (format == VocabFormat::Wap) os << tokens_[i] << '\t' << i << '\n';
    else os << tokens_[i] << '\n';
  }
  return os.str();
}

}  // namespace hmer::data
