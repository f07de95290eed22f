#include "models/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>

#include "core/error.h"

namespace hmer::models {

const char* model_kind_name(ModelKind k) { return k == ModelKind::Can ? "can" : "dwap"; }

int64_t DenseNetConfig::computed_out_channels() const {
  // stem 2g, dense +depth*g, transition floor(c * reduction) (Python's int(math.floor(...))).
  int64_t c = stem_channels();
  for (int block = 0; block < 3; ++block) {
    c += depth * growth_rate;
    if (block < 2) c = static_cast<int64_t>(std::floor(static_cast<double>(c) * reduction));
  }
  return c;
}

namespace {

// Where a key was written: "configs/can.yaml:12: densenet.growthRate", or just the key.
using Where = std::function<std::string(const std::string& key)>;

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

void validate_model(const ModelConfig& m, const Where& where) {
  const DenseNetConfig& d = m.densenet;
  HMER_CHECK(d.ratio == 16, where("densenet.ratio"), ": must be 16, the encoder's total stride (stem conv /2, "
             "max-pool /2, two transitions /2), got ", d.ratio);
  HMER_CHECK(d.bottleneck, where("densenet.bottleneck"), ": only the DenseNet-B (bottleneck) encoder is "
             "implemented; set it to True");
  HMER_CHECK(d.growth_rate > 0, where("densenet.growthRate"), ": must be positive, got ", d.growth_rate);
  HMER_CHECK(d.depth > 0, where("densenet.depth"), ": must be positive, got ", d.depth);
  HMER_CHECK(d.reduction > 0 && d.reduction <= 1, where("densenet.reduction"), ": must be in (0, 1], got ",
             d.reduction);
  HMER_CHECK(d.dropout_rate >= 0 && d.dropout_rate < 1, where("densenet.dropout_rate"),
             ": must be in [0, 1), got ", d.dropout_rate);
  HMER_CHECK(d.input_channels > 0, where("encoder.input_channel"), ": must be positive, got ", d.input_channels);
  HMER_CHECK(d.out_channels == d.computed_out_channels(), where("encoder.out_channel"), ": is ", d.out_channels,
             " but growthRate ", d.growth_rate, ", depth ", d.depth, " and reduction ", d.reduction,
             " give ", d.computed_out_channels(), " channels");
  HMER_CHECK(m.vocab_size > 1, where("word_path"), ": the dictionary has ", m.vocab_size, " tokens");
  HMER_CHECK(m.sos_id >= 0 && m.sos_id < m.vocab_size, where("vocab"), ": the dictionary has no sos token");
  HMER_CHECK(m.eos_id >= 0 && m.eos_id < m.vocab_size, where("vocab"), ": the dictionary has no eos token");
  if (m.has_counting()) {
    const CountingConfig& c = m.counting;
    HMER_CHECK(c.in_channels == d.out_channels, where("counting_decoder.in_channel"), ": is ", c.in_channels,
               " but the encoder gives ", d.out_channels, " channels (encoder.out_channel)");
    HMER_CHECK(c.out_channels == m.vocab_size, where("counting_decoder.out_channel"), ": is ", c.out_channels,
               " but the dictionary has ", m.vocab_size, " tokens (one count per token)");
    HMER_CHECK(c.hidden_channels > 0, where("counting_decoder.hidden_channel"), ": must be positive");
    HMER_CHECK(c.reduction > 0 && c.hidden_channels / c.reduction > 0, where("counting_decoder.reduction"),
               ": must be positive and at most hidden_channel (", c.hidden_channels, "), got ", c.reduction);
    HMER_CHECK(!c.kernel_sizes.empty(), where("counting_decoder.kernel_sizes"), ": needs at least one branch");
    for (int64_t k : c.kernel_sizes)
      HMER_CHECK(k > 0 && k % 2 == 1, where("counting_decoder.kernel_sizes"), ": kernels must be odd and "
                 "positive (padding k//2 keeps the size), got ", k);
    for (int64_t id : m.counting_ignore_ids)
      HMER_CHECK(id >= 0 && id < m.vocab_size, where("counting_decoder.ignore_tokens"), ": id ", id,
                 " out of range");
  }
  const DecoderConfig& dc = m.decoder;
  HMER_CHECK(dc.input_size > 0, where("decoder.input_size"), ": must be positive");
  HMER_CHECK(dc.hidden_size > 0, where("decoder.hidden_size"), ": must be positive");
  HMER_CHECK(dc.attention_dim > 0, where("attention.attention_dim"), ": must be positive");
  HMER_CHECK(!dc.positional_encoding || dc.attention_dim % 2 == 0, where("attention.attention_dim"),
             ": must be even (half the channels encode y, half x), got ", dc.attention_dim);
  HMER_CHECK(dc.word_conv_kernel > 0 && dc.word_conv_kernel % 2 == 1, where("attention.word_conv_kernel"),
             ": must be odd and positive, got ", dc.word_conv_kernel);
  HMER_CHECK(dc.coverage_channels > 0, where("attention.coverage_channels"), ": must be positive");
  HMER_CHECK(dc.coverage_kernel > 0 && dc.coverage_kernel % 2 == 1, where("attention.coverage_kernel"),
             ": must be odd and positive, got ", dc.coverage_kernel);
  HMER_CHECK(dc.dropout_ratio >= 0 && dc.dropout_ratio < 1, where("dropout_ratio"), ": must be in [0, 1), got ",
             dc.dropout_ratio);
  const DecodingConfig& de = m.decoding;
  HMER_CHECK(de.max_steps > 0, where("decoding.max_steps"), ": must be positive");
  HMER_CHECK(de.beam_width > 0, where("decoding.beam_width"), ": must be positive");
  HMER_CHECK(de.length_alpha >= 0, where("decoding.length_alpha"), ": must be non-negative");
}

// ---- strict YAML reading with line numbers ----------------------------------------------------

class Reader {
 public:
  Reader(std::string source) : source_(std::move(source)) {}

  // "file:line: key" for a key seen while reading (line of the key), or "file: key".
  std::string where(const std::string& key) const {
    auto it = lines_.find(key);
    if (it != lines_.end() && it->second >= 0) return source_ + ":" + std::to_string(it->second + 1) + ": " + key;
    return source_ + ": " + key;
  }

  // Records the lines of every key of `map` (prefixing `path.`) and fails on the first key that is
  // not allowed, naming it with its line and listing the allowed ones.
  void check_map(const YAML::Node& map, const std::string& path, const std::vector<std::string>& allowed) {
    const std::string what = path.empty() ? "the top level" : "'" + path + "'";
    if (!map.IsMap()) {
      const int line = map.Mark().is_null() ? -1 : map.Mark().line;
      fail(source_, line >= 0 ? ":" + std::to_string(line + 1) : std::string(), ": expected a map at ", what);
    }
    for (const auto& kv : map) {
      const std::string k = kv.first.as<std::string>();
      const std::string full = path.empty() ? k : path + "." + k;
      lines_[full] = kv.first.Mark().is_null() ? -1 : kv.first.Mark().line;
      if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
        fail(where(full), ": unknown key in ", what, " (known keys: ", join(allowed), ")");
    }
  }

  template <class T>
  void get(const YAML::Node& map, const std::string& path, const std::string& key, T& out) {
    const YAML::Node v = map[key];
    if (!v.IsDefined() || v.IsNull()) return;
    const std::string full = path.empty() ? key : path + "." + key;
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      fail(where(full), ": cannot read '", v.IsScalar() ? v.Scalar() : std::string("(not a scalar)"), "' as ",
           type_name<T>());
    }
  }

  int line(const std::string& key) const {
    auto it = lines_.find(key);
    return it == lines_.end() ? -1 : it->second;
  }

 private:
  template <class T>
  static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>) return "a boolean (True / False)";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else if constexpr (std::is_same_v<T, std::string>) return "a string";
    else return "a list";
  }

  std::string source_;
  std::map<std::string, int> lines_;
};

const std::vector<std::string> kOptimFlatKeys = {"optimizer", "lr", "lr_decay", "eps", "weight_decay",
                                                 "beta", "gradient", "gradient_clip"};

}  // namespace

void ModelConfig::validate() const {
  validate_model(*this, [](const std::string& k) { return k; });
}

ModelConfig ModelConfig::official(ModelKind kind) {
  ModelConfig m;
  m.kind = kind;
  m.validate();
  return m;
}

const std::vector<std::string>& known_top_level_keys() {
  static const std::vector<std::string> keys = {
      // official config.yaml (can-model.md §1)
      "experiment", "seed", "epochs", "batch_size", "workers", "train_parts", "valid_parts", "valid_start",
      "save_start", "optimizer", "lr", "lr_decay", "step_ratio", "step_decay", "eps", "weight_decay", "beta",
      "dropout", "dropout_ratio", "relu", "gradient", "gradient_clip", "use_label_mask", "train_image_path",
      "train_label_path", "eval_image_path", "eval_label_path", "word_path", "collate_fn", "densenet", "encoder",
      "decoder", "counting_decoder", "attention", "attention_map_vis_path", "counting_map_vis_path",
      "whiten_type", "max_step", "optimizer_save", "finetune", "checkpoint_dir", "checkpoint", "log_dir",
      // ours
      "model", "optim", "decoding", "vocab", "preprocess"};
  return keys;
}

data::Vocabulary Config::vocabulary() const { return data::Vocabulary::from_config(vocab); }

YAML::Node read_config_file(const std::string& path) {
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("config ", path, ": cannot open the file");
  } catch (const YAML::Exception& e) {
    fail("config ", path, ": YAML error at line ", e.mark.line + 1, ": ", e.msg);
  }
}

Config load_config(const std::string& path) {
  const YAML::Node root = read_config_file(path);
  return parse_config(root, path, std::filesystem::path(path).parent_path().string());
}

Config parse_config(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail("config ", source, ": YAML error at line ", e.mark.line + 1, ": ", e.msg);
  }
  return parse_config(root, source, "");
}

Config parse_config(const YAML::Node& root, const std::string& source, const std::string& base_dir) {
  Config cfg;
  cfg.source = source;
  cfg.root = root;
  Reader r(source);
  HMER_CHECK(root.IsMap(), "config ", source, ": expected a YAML map at the top level");
  r.check_map(root, "", known_top_level_keys());

  // ---- run settings (official keys; informational for this issue) ----
  RunConfig& run = cfg.run;
  r.get(root, "", "experiment", run.experiment);
  r.get(root, "", "seed", run.seed);
  r.get(root, "", "epochs", run.epochs);
  r.get(root, "", "batch_size", run.batch_size);
  r.get(root, "", "workers", run.workers);
  r.get(root, "", "train_parts", run.train_parts);
  r.get(root, "", "valid_parts", run.valid_parts);
  r.get(root, "", "valid_start", run.valid_start);
  r.get(root, "", "save_start", run.save_start);
  r.get(root, "", "train_image_path", run.train_image_path);
  r.get(root, "", "train_label_path", run.train_label_path);
  r.get(root, "", "eval_image_path", run.eval_image_path);
  r.get(root, "", "eval_label_path", run.eval_label_path);
  r.get(root, "", "word_path", run.word_path);
  r.get(root, "", "checkpoint_dir", run.checkpoint_dir);
  r.get(root, "", "checkpoint", run.checkpoint);
  r.get(root, "", "log_dir", run.log_dir);
  r.get(root, "", "finetune", run.finetune);
  r.get(root, "", "optimizer_save", run.optimizer_save);
  // Keys the official code reads but never uses (step_ratio, step_decay, relu, whiten_type, max_step,
  // collate_fn, the visualisation paths) are accepted and ignored, as there.

  ModelConfig& m = cfg.model;

  // ---- model (ours) ----
  if (root["model"]) {
    const YAML::Node n = root["model"];
    r.check_map(n, "model", {"name", "init"});
    std::string name = "can", init = "torch";
    r.get(n, "model", "name", name);
    r.get(n, "model", "init", init);
    std::string lname = name;
    std::transform(lname.begin(), lname.end(), lname.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lname == "can") m.kind = ModelKind::Can;
    else if (lname == "dwap") m.kind = ModelKind::Dwap;
    else fail(r.where("model.name"), ": unknown model '", name, "' (expected can or dwap)");
    try {
      m.init = init_preset_from_string(init);
    } catch (const Error& e) {
      fail(r.where("model.init"), ": ", e.what());
    }
  }

  // ---- densenet / encoder ----
  if (root["densenet"]) {
    const YAML::Node n = root["densenet"];
    r.check_map(n, "densenet", {"ratio", "growthRate", "reduction", "bottleneck", "use_dropout", "dropout_rate",
                                "depth", "memory_efficient"});
    r.get(n, "densenet", "ratio", m.densenet.ratio);
    r.get(n, "densenet", "growthRate", m.densenet.growth_rate);
    r.get(n, "densenet", "reduction", m.densenet.reduction);
    r.get(n, "densenet", "bottleneck", m.densenet.bottleneck);
    r.get(n, "densenet", "use_dropout", m.densenet.use_dropout);
    r.get(n, "densenet", "dropout_rate", m.densenet.dropout_rate);
    r.get(n, "densenet", "depth", m.densenet.depth);
    r.get(n, "densenet", "memory_efficient", m.densenet.memory_efficient);
  }
  m.densenet.out_channels = m.densenet.computed_out_channels();
  if (root["encoder"]) {
    const YAML::Node n = root["encoder"];
    r.check_map(n, "encoder", {"input_channel", "out_channel"});
    r.get(n, "encoder", "input_channel", m.densenet.input_channels);
    r.get(n, "encoder", "out_channel", m.densenet.out_channels);
  }

  // ---- decoder / attention ----
  if (root["decoder"]) {
    const YAML::Node n = root["decoder"];
    r.check_map(n, "decoder", {"net", "cell", "input_size", "hidden_size"});
    std::string net = "AttDecoder", cell = "GRU";
    r.get(n, "decoder", "net", net);
    r.get(n, "decoder", "cell", cell);
    HMER_CHECK(net == "AttDecoder", r.where("decoder.net"), ": only AttDecoder exists, got '", net, "'");
    HMER_CHECK(cell == "GRU", r.where("decoder.cell"), ": the decoder always uses a GRUCell, got '", cell, "'");
    r.get(n, "decoder", "input_size", m.decoder.input_size);
    r.get(n, "decoder", "hidden_size", m.decoder.hidden_size);
  }
  if (root["attention"]) {
    const YAML::Node n = root["attention"];
    r.check_map(n, "attention", {"attention_dim", "word_conv_kernel", "coverage_channels", "coverage_kernel",
                                 "positional_encoding"});
    r.get(n, "attention", "attention_dim", m.decoder.attention_dim);
    r.get(n, "attention", "word_conv_kernel", m.decoder.word_conv_kernel);
    r.get(n, "attention", "coverage_channels", m.decoder.coverage_channels);
    r.get(n, "attention", "coverage_kernel", m.decoder.coverage_kernel);
    r.get(n, "attention", "positional_encoding", m.decoder.positional_encoding);
  }
  r.get(root, "", "dropout", m.decoder.dropout);
  r.get(root, "", "dropout_ratio", m.decoder.dropout_ratio);
  r.get(root, "", "use_label_mask", m.use_label_mask);

  // ---- vocabulary: `vocab:` (data/vocab.h), else word_path when that file exists, else CAN's own ----
  if (root["vocab"]) {
    try {
      cfg.vocab = data::VocabConfig::from_yaml(root["vocab"]);
    } catch (const Error& e) {
      fail(r.where("vocab"), ": ", e.what());
    }
    cfg.vocab_note = "dictionary from the vocab section";
  } else {
    cfg.vocab = data::VocabConfig::can_default();
    if (!run.word_path.empty()) {
      std::filesystem::path p(run.word_path);
      if (p.is_relative() && !base_dir.empty() && !std::filesystem::exists(p)) p = std::filesystem::path(base_dir) / p;
      if (std::filesystem::exists(p)) {
        cfg.vocab.path = p.string();
        cfg.vocab_note = "dictionary " + p.string() + " (word_path)";
      } else {
        cfg.vocab_note = "word_path " + run.word_path + " not found: CAN's built-in 111-token dictionary";
      }
    } else {
      cfg.vocab_note = "CAN's built-in 111-token dictionary";
    }
  }
  data::Vocabulary vocab;
  try {
    vocab = cfg.vocabulary();
  } catch (const Error& e) {
    fail(r.where(root["vocab"] ? "vocab" : "word_path"), ": ", e.what());
  }
  m.vocab_size = vocab.size();
  m.eos_id = vocab.eos_id();
  m.sos_id = vocab.sos_id();

  // ---- counting ----
  m.counting.in_channels = m.densenet.out_channels;
  m.counting.out_channels = m.vocab_size;
  if (root["counting_decoder"]) {
    const YAML::Node n = root["counting_decoder"];
    r.check_map(n, "counting_decoder", {"in_channel", "out_channel", "hidden_channel", "reduction", "kernel_sizes",
                                        "ignore_tokens"});
    r.get(n, "counting_decoder", "in_channel", m.counting.in_channels);
    r.get(n, "counting_decoder", "out_channel", m.counting.out_channels);
    r.get(n, "counting_decoder", "hidden_channel", m.counting.hidden_channels);
    r.get(n, "counting_decoder", "reduction", m.counting.reduction);
    r.get(n, "counting_decoder", "kernel_sizes", m.counting.kernel_sizes);
    r.get(n, "counting_decoder", "ignore_tokens", m.counting.ignore_tokens);
  }
  m.counting_ignore_ids.clear();
  for (const std::string& t : m.counting.ignore_tokens) {
    const auto id = vocab.find(t);
    HMER_CHECK(id.has_value(), r.where("counting_decoder.ignore_tokens"), ": token '", t,
               "' is not in the dictionary");
    m.counting_ignore_ids.push_back(*id);
  }

  // ---- decoding (ours) ----
  if (root["decoding"]) {
    const YAML::Node n = root["decoding"];
    r.check_map(n, "decoding", {"max_steps", "beam_width", "length_normalization", "length_alpha"});
    r.get(n, "decoding", "max_steps", m.decoding.max_steps);
    r.get(n, "decoding", "beam_width", m.decoding.beam_width);
    r.get(n, "decoding", "length_normalization", m.decoding.length_normalization);
    r.get(n, "decoding", "length_alpha", m.decoding.length_alpha);
  }

  // ---- preprocessing (data/preprocess.h) ----
  if (root["preprocess"]) {
    try {
      cfg.preprocess = data::PreprocessConfig::from_yaml(root["preprocess"]);
    } catch (const Error& e) {
      fail(r.where("preprocess"), ": ", e.what());
    }
  }

  validate_model(m, [&](const std::string& k) { return r.where(k); });

  // ---- optimizer: an optim section, or the official flat keys translated into one ----
  std::vector<std::string> flat;
  for (const std::string& k : kOptimFlatKeys)
    if (root[k]) flat.push_back(k);
  if (root["optim"]) {
    HMER_CHECK(flat.empty(), r.where(flat.empty() ? "optim" : flat[0]), ": the optimizer is given both as "
               "official keys (", join(flat), ") and as an optim: section (", r.where("optim"), "); keep one");
    cfg.optim = root["optim"];
  } else if (!flat.empty()) {
    HMER_CHECK(root["optimizer"], r.where(flat[0]), ": the official optimizer keys need 'optimizer' too");
    YAML::Node o;
    o["optimizer"] = root["optimizer"].as<std::string>();
    for (const char* k : {"lr", "eps", "weight_decay"}) {
      if (!root[k]) continue;
      double v = 0;
      r.get(root, "", k, v);
      o[k] = v;
    }
    // beta is not passed to the optimizer by the official code (can-model.md §1).
    std::string decay;
    r.get(root, "", "lr_decay", decay);
    if (decay == "cosine") {
      YAML::Node s;
      s["type"] = "can";
      o["lr_schedule"] = s;
    } else {
      // Any other value leaves the lr constant in the official training loop (step_ratio /
      // step_decay are never read).
    }
    bool clip = false;
    double gradient = 100;
    r.get(root, "", "gradient_clip", clip);
    r.get(root, "", "gradient", gradient);
    if (clip) o["gradient_clip"] = gradient;
    else o["gradient_clip"] = false;
    cfg.optim = o;
    cfg.optim_from_official_keys = true;
  }
  return cfg;
}

}  // namespace hmer::models
