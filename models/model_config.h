#pragma once
// The CAN / DWAP configuration: a YAML file in the layout of the official LBH1024/CAN config.yaml
// (can-model.md §1), whose keys are accepted exactly as they are spelled there (densenet.growthRate,
// decoder.hidden_size, attention.attention_dim, counting_decoder.out_channel, optimizer, lr, eps,
// weight_decay, gradient, gradient_clip, ...), plus a few keys of ours for what the official code
// hard-codes (depth of a dense block, counting/coverage widths) and for what it does not have
// (model.name: dwap, model.init, decoding.beam_width, ...). Unknown keys are errors naming the key
// and its line. docs/model.md lists every key.
//
// The optimizer can be given either as the official flat keys (optimizer, lr, lr_decay, eps,
// weight_decay, beta, gradient, gradient_clip) or as an `optim:` section for optim/factory.h; the
// flat keys are translated into the equivalent section, so both feed build_optim().
#include <cstdint>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "data/preprocess.h"
#include "data/vocab.h"
#include "layers/module.h"

namespace hmer::models {

enum class ModelKind { Can, Dwap };
const char* model_kind_name(ModelKind k);

struct DenseNetConfig {
  int64_t ratio = 16;          // densenet.ratio: total stride, also the image-mask subsampling step
  int64_t growth_rate = 24;    // densenet.growthRate
  double reduction = 0.5;      // densenet.reduction: transition compression
  bool bottleneck = true;      // densenet.bottleneck (only the DenseNet-B form exists here)
  bool use_dropout = true;     // densenet.use_dropout
  double dropout_rate = 0.2;   // densenet.dropout_rate (ours; the official code hard-codes 0.2)
  int64_t depth = 16;          // densenet.depth (ours): bottleneck layers per dense block, officially 16
  // densenet.memory_efficient (ours, as torchvision's DenseNet flag): fused BN+ReLU+dropout and the
  // in-place channel concatenation. Same numbers bit for bit; false runs the op-by-op reference.
  bool memory_efficient = true;
  int64_t input_channels = 1;  // encoder.input_channel
  // encoder.out_channel; checked against what growth_rate/depth/reduction produce.
  int64_t out_channels = 684;

  // Channels after each stage, computed from growth_rate, depth and reduction.
  int64_t stem_channels() const { return 2 * growth_rate; }
  int64_t computed_out_channels() const;
};

struct CountingConfig {
  int64_t in_channels = 684;      // counting_decoder.in_channel (must equal encoder.out_channel)
  int64_t out_channels = 111;     // counting_decoder.out_channel (must equal the vocabulary size)
  int64_t hidden_channels = 512;  // counting_decoder.hidden_channel (ours; hard-coded 512)
  int64_t reduction = 16;         // counting_decoder.reduction (ours): channel-attention squeeze
  std::vector<int64_t> kernel_sizes = {3, 5};  // counting_decoder.kernel_sizes (ours): one branch each
  // Tokens never counted (counting_decoder.ignore_tokens, ours); the official code hard-codes the
  // ids {0, 1, 107, 108, 109, 110}, which are these tokens in CAN's dictionary.
  std::vector<std::string> ignore_tokens = {"eos", "sos", "{", "}", "^", "_"};
};

struct DecoderConfig {
  int64_t input_size = 256;        // decoder.input_size: embedding width
  int64_t hidden_size = 256;       // decoder.hidden_size: GRU width
  int64_t attention_dim = 512;     // attention.attention_dim
  int64_t word_conv_kernel = 1;    // attention.word_conv_kernel: key projection conv
  int64_t coverage_channels = 512; // attention.coverage_channels (ours; hard-coded 512)
  int64_t coverage_kernel = 11;    // attention.coverage_kernel (ours; hard-coded 11)
  bool positional_encoding = true; // attention.positional_encoding (ours; can-model §13 open point)
  bool dropout = true;             // dropout
  double dropout_ratio = 0.5;      // dropout_ratio
};

struct DecodingConfig {
  int64_t max_steps = 200;         // decoding.max_steps: the official inference's cap
  int64_t beam_width = 5;          // decoding.beam_width
  bool length_normalization = true;  // decoding.length_normalization: rank by log p / length^alpha
  double length_alpha = 1.0;       // decoding.length_alpha
};

struct ModelConfig {
  ModelKind kind = ModelKind::Can;         // model.name: can | dwap
  InitPreset init = InitPreset::Torch;     // model.init: torch | paddle | keras
  int64_t vocab_size = 111;                // word_num: the dictionary's size
  int64_t sos_id = 1, eos_id = 0;
  std::vector<int64_t> counting_ignore_ids = {0, 1, 107, 108, 109, 110};
  bool use_label_mask = false;             // use_label_mask: false = CE over all padded positions
  DenseNetConfig densenet;
  CountingConfig counting;
  DecoderConfig decoder;
  DecodingConfig decoding;

  bool has_counting() const { return kind == ModelKind::Can; }
  // Checks every size for consistency; messages name the config key.
  void validate() const;
  // The official full-size CAN (or DWAP) with CAN's built-in dictionary.
  static ModelConfig official(ModelKind kind = ModelKind::Can);
};

// The non-model keys of the official config, kept for the training issue.
struct RunConfig {
  std::string experiment = "CAN";
  uint64_t seed = 20211024;
  int64_t epochs = 240;
  int64_t batch_size = 8;
  int64_t workers = 0;
  double train_parts = 1, valid_parts = 1;
  int64_t valid_start = 0, save_start = 0;
  std::string train_image_path, train_label_path, eval_image_path, eval_label_path, word_path;
  std::string checkpoint_dir = "checkpoints", checkpoint, log_dir = "logs";
  bool finetune = false, optimizer_save = false;
};

struct Config {
  std::string source;        // the file (or "<text>") the config came from, for messages
  YAML::Node root;           // the parsed document
  ModelConfig model;
  RunConfig run;
  YAML::Node optim;          // the `optim:` section, or the one translated from the official keys
  bool optim_from_official_keys = false;
  data::VocabConfig vocab;   // `vocab:` (default: CAN's built-in dictionary, `\limits` dropped)
  data::PreprocessConfig preprocess;  // `preprocess:` (default: CAN's)
  std::string vocab_note;    // how the dictionary was chosen (word_path found or not)

  data::Vocabulary vocabulary() const;
};

// Reads a YAML file; a missing file or a syntax error is an hmer::Error naming the file (and line).
YAML::Node read_config_file(const std::string& path);
// Parses and validates a whole config. Every error names the source, the key and its line.
Config load_config(const std::string& path);
Config parse_config(const std::string& yaml_text, const std::string& source = "<config>");
Config parse_config(const YAML::Node& root, const std::string& source, const std::string& base_dir = "");

// Top-level keys a config may hold (the official ones and ours).
const std::vector<std::string>& known_top_level_keys();

}  // namespace hmer::models
