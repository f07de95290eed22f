#include "models/can.h"

#include "core/autograd.h"
#include "core/serialization.h"

namespace hmer::models {

CanModel::CanModel(const ModelConfig& config) : Module(config.has_counting() ? "CAN" : "DWAP"), config_(config) {
  config_.validate();
  encoder_ = register_module("encoder", std::make_shared<DenseNetB>(config_.densenet));
  if (config_.has_counting()) {
    const CountingConfig& c = config_.counting;
    for (size_t i = 0; i < c.kernel_sizes.size(); ++i)
      counting_.push_back(register_module(
          "counting_decoder" + std::to_string(i + 1),
          std::make_shared<CountingDecoder>(c.in_channels, c.out_channels, c.hidden_channels, c.reduction,
                                            c.kernel_sizes[i])));
  }
  decoder_ = register_module("decoder", std::make_shared<AttDecoder>(config_));
}

Tensor CanModel::encode(const Tensor& images) { return encoder_->forward(images); }

Tensor CanModel::feature_mask(const Tensor& image_mask) const {
  HMER_CHECK(image_mask.defined() && image_mask.dim() == 4 && image_mask.size(1) == 1,
             "CAN: expected an image mask (B, 1, H, W), got ",
             image_mask.defined() ? shape_str(image_mask.shape()) : std::string("undefined"));
  const int64_t r = config_.densenet.ratio;
  // Plain strided subsampling from pixel 0 (not pooling): a cell is valid iff its top-left pixel is.
  return contiguous_copy(image_mask.detach().slice(2, 0, image_mask.size(2), r).slice(3, 0, image_mask.size(3), r));
}

Tensor CanModel::count(const Tensor& features, const Tensor& mask, std::vector<Tensor>* branches) {
  HMER_CHECK(config_.has_counting(), "CAN: count() on a model without the counting module (DWAP)");
  Tensor total;
  for (auto& d : counting_) {
    const Tensor v = d->forward(features, mask).counts;
    if (branches) branches->push_back(v);
    total = total.defined() ? add(total, v) : v;
  }
  return div(total, static_cast<double>(counting_.size()));
}

CanModel::Output CanModel::forward(const Tensor& images, const Tensor& image_mask, const Tensor& labels,
                                   const Tensor& label_mask) {
  HMER_CHECK(images.defined() && images.dim() == 4, "CAN: expected images (B, 1, H, W), got ",
             images.defined() ? shape_str(images.shape()) : std::string("undefined"));
  HMER_CHECK(image_mask.defined() && image_mask.shape() == images.shape(), "CAN: image mask ",
             image_mask.defined() ? shape_str(image_mask.shape()) : std::string("undefined"),
             " must have the images' shape ", shape_str(images.shape()));
  HMER_CHECK(labels.defined() && labels.dim() == 2 && labels.size(0) == images.size(0) &&
                 labels.dtype() == DType::Int64,
             "CAN: labels must be int64 (", images.size(0), ", T), got ", labels.defined() ? labels.str() : "undefined");
  Output out;
  out.features = encode(images);
  out.feature_mask = feature_mask(image_mask);
  HMER_CHECK(out.feature_mask.size(2) == out.features.size(2) && out.feature_mask.size(3) == out.features.size(3),
             "CAN: the subsampled mask ", shape_str(out.feature_mask.shape()), " does not match the features ",
             shape_str(out.features.shape()));
  const int64_t B = labels.size(0), T = labels.size(1), V = config_.vocab_size;
  if (config_.has_counting()) {
    out.counts = count(out.features, out.feature_mask, &out.branch_counts);
    out.count_targets =
        counting_labels(labels, config_.counting.out_channels, config_.counting_ignore_ids).to(out.counts.dtype());
  }
  out.logits = decoder_->forward(out.features, out.feature_mask, out.counts, labels);
  const Tensor flat_logits = out.logits.reshape({B * T, V});
  const Tensor flat_labels = labels.contiguous().reshape({B * T});
  if (config_.use_label_mask) {
    HMER_CHECK(label_mask.defined() && label_mask.numel() == B * T, "CAN: use_label_mask needs a (B, T) label mask");
    const Tensor m = label_mask.contiguous().reshape({B * T});
    const Tensor per = cross_entropy(flat_logits, flat_labels, Tensor(), -100, Reduction::None);
    out.word_loss = div(sum(mul(per, m)), add(sum(m), 1e-10));
  } else {
    out.word_loss = cross_entropy(flat_logits, flat_labels);
  }
  out.loss = out.word_loss;
  if (config_.has_counting()) {
    Tensor c;
    for (const Tensor& v : out.branch_counts) {
      const Tensor l = smooth_l1_loss(v, out.count_targets);
      c = c.defined() ? add(c, l) : l;
    }
    out.counting_loss = add(c, smooth_l1_loss(out.counts, out.count_targets));
    out.loss = add(out.word_loss, out.counting_loss);
  }
  return out;
}

std::shared_ptr<CanModel> make_model(const ModelConfig& config, uint64_t seed) {
  auto m = std::make_shared<CanModel>(config);
  Generator gen(seed);
  apply_init_preset(*m, config.init, gen);
  return m;
}

void load_weights(Module& model, const std::string& path) {
  const NamedTensors state = load_safetensors(path);
  try {
    model.load_state_dict(state, true);
  } catch (const Error& e) {
    fail("weights ", path, ": ", e.what());
  }
}

void save_weights(const Module& model, const std::string& path, const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, model.state_dict(), metadata);
}

}  // namespace hmer::models
