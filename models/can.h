#pragma once
// CAN (DenseNet-B encoder + multi-scale counting + counting-combined attention decoder) and DWAP
// (the same without the counting parts; ModelConfig::kind), with the official parameter names:
//   encoder.*, counting_decoder1.*, counting_decoder2.* (CAN only), decoder.*
// 636 state_dict entries and 16,838,280 parameters for the official CAN; 612 entries and
// 4,720,200 parameters for DWAP.
//
// The loss is the official one (can-model.md §7): cross entropy averaged over ALL B·T padded
// positions (pad = eos = 0 is a target too) unless use_label_mask, plus, for CAN, SmoothL1(v_k, v*)
// for every branch k and SmoothL1(mean of the branches, v*), each a mean over B·classes.
#include <memory>
#include <string>
#include <vector>

#include "models/attention_decoder.h"
#include "models/counting.h"
#include "models/densenet.h"
#include "models/model_config.h"

namespace hmer::models {

class CanModel : public Module {
 public:
  explicit CanModel(const ModelConfig& config);

  struct Output {
    Tensor features;                   // (B, C, h, w) encoder output
    Tensor feature_mask;               // (B, 1, h, w)
    Tensor counts;                     // (B, classes) mean of the branches; undefined for DWAP
    std::vector<Tensor> branch_counts; // (B, classes) per branch
    Tensor count_targets;              // (B, classes) v*
    Tensor logits;                     // (B, T, V) teacher-forced
    Tensor word_loss, counting_loss;   // scalars (counting_loss undefined for DWAP)
    Tensor loss;                       // word_loss + counting_loss
  };
  // Teacher-forced forward and loss, as CAN.forward(is_train=True): images (B, 1, H, W), image_mask
  // (B, 1, H, W), labels (B, T) int64 (eos appended, padded with eos), label_mask (B, T).
  // The counting maps are masked with the feature mask (training and in-training evaluation).
  Output forward(const Tensor& images, const Tensor& image_mask, const Tensor& labels, const Tensor& label_mask);

  Tensor encode(const Tensor& images);                    // (B, 1, H, W) -> (B, C, h, w)
  Tensor feature_mask(const Tensor& image_mask) const;    // image_mask[:, :, ::ratio, ::ratio], contiguous
  // Mean of the branches' counting vectors; mask (B, 1, h, w) or undefined (inference).
  Tensor count(const Tensor& features, const Tensor& mask, std::vector<Tensor>* branches = nullptr);

  const ModelConfig& config() const { return config_; }
  DenseNetB& encoder() { return *encoder_; }
  AttDecoder& decoder() { return *decoder_; }
  const std::vector<std::shared_ptr<CountingDecoder>>& counting_decoders() const { return counting_; }

 private:
  ModelConfig config_;
  std::shared_ptr<DenseNetB> encoder_;
  std::vector<std::shared_ptr<CountingDecoder>> counting_;
  std::shared_ptr<AttDecoder> decoder_;
};

// Builds a model and initialises every parameter with the config's init preset from `seed`
// (BatchNorm: weight 1, bias 0, running statistics 0 / 1).
std::shared_ptr<CanModel> make_model(const ModelConfig& config, uint64_t seed);

// Loads safetensors weights by name (strict). A failure lists every missing, unexpected and
// mis-shaped tensor and names the file.
void load_weights(Module& model, const std::string& path);
void save_weights(const Module& model, const std::string& path, const std::map<std::string, std::string>& metadata = {});

}  // namespace hmer::models
