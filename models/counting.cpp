#include "models/counting.h"

#include <algorithm>

namespace hmer::models {

ChannelAttention::ChannelAttention(int64_t channels, int64_t reduction) : UnaryModule("ChannelAtt") {
  fc_ = register_module("fc", std::make_shared<Sequential>());
  fc_->push_back(std::make_shared<Linear>(channels, channels / reduction));
  fc_->push_back(std::make_shared<ReLU>());
  fc_->push_back(std::make_shared<Linear>(channels / reduction, channels));
  fc_->push_back(std::make_shared<Sigmoid>());
}

Tensor ChannelAttention::forward(const Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1);
  const Tensor y = fc_->forward(mean(x, {2, 3}));  // (B, C)
  return mul(x, y.reshape({B, C, 1, 1}));
}

CountingDecoder::CountingDecoder(int64_t in_channels, int64_t out_channels, int64_t hidden_channels,
                                 int64_t reduction, int64_t kernel_size)
    : Module("CountingDecoder") {
  trans_layer_ = register_module("trans_layer", std::make_shared<Sequential>());
  trans_layer_->push_back(std::make_shared<Conv2d>(Conv2dLayerOptions(in_channels, hidden_channels, kernel_size)
                                                       .padding({kernel_size / 2, kernel_size / 2})
                                                       .bias(false)));
  trans_layer_->push_back(std::make_shared<BatchNorm2d>(hidden_channels));
  channel_att_ = register_module("channel_att", std::make_shared<ChannelAttention>(hidden_channels, reduction));
  pred_layer_ = register_module("pred_layer", std::make_shared<Sequential>());
  pred_layer_->push_back(
      std::make_shared<Conv2d>(Conv2dLayerOptions(hidden_channels, out_channels, 1).bias(false)));
  pred_layer_->push_back(std::make_shared<Sigmoid>());
}

CountingDecoder::Output CountingDecoder::forward(const Tensor& features, const Tensor& mask) {
  Tensor m = pred_layer_->forward(channel_att_->forward(trans_layer_->forward(features)));
  if (mask.defined()) {
    HMER_CHECK(mask.dim() == 4 && mask.size(0) == m.size(0) && mask.size(1) == 1 && mask.size(2) == m.size(2) &&
                   mask.size(3) == m.size(3),
               "CountingDecoder: mask ", shape_str(mask.shape()), " does not fit the counting map ",
               shape_str(m.shape()));
    m = mul(m, mask);
  }
  return {sum(m, {2, 3}), m};
}

Tensor counting_labels(const Tensor& labels, int64_t classes, const std::vector<int64_t>& ignore_ids) {
  HMER_CHECK(labels.dim() == 2 && labels.dtype() == DType::Int64, "counting_labels: expected int64 (B, T) labels, got ",
             labels.str());
  const Tensor l = contiguous_copy(labels.detach().to(Device::cpu()));
  const int64_t B = l.size(0), T = l.size(1);
  Tensor out = Tensor::zeros({B, classes});
  float* o = out.data_ptr<float>();
  const int64_t* p = l.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t k = p[b * T + t];
      if (std::find(ignore_ids.begin(), ignore_ids.end(), k) != ignore_ids.end()) continue;
      HMER_CHECK(k >= 0 && k < classes, "counting_labels: label id ", k, " at (", b, ", ", t, ") is outside [0, ",
                 classes, ")");
      o[b * classes + k] += 1.0f;
    }
  return labels.device() == Device::cpu() ? out : out.to(labels.device());
}

}  // namespace hmer::models
