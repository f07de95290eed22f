#pragma once
// CAN's counting-combined attentional decoder (can-model.md §6), official parameter names:
//   init_weight, embedding, word_input_gru, word_attention.{hidden_weight, attention_conv,
//   attention_weight, alpha_convert}, encoder_feature_conv, word_state_weight,
//   word_embedding_weight, word_context_weight, counting_context_weight (CAN only), word_convert.
//
// Per image, once: h0 = tanh(W_init · masked mean of F), keys K = conv1×1(F) + P (2-D sine
// positional encoding of the feature mask), u = W_v · counts. Per step t:
//   e = Emb(token), h = GRU(e, h), (c, α, A) = Attention(F, K, h, A, m),
//   logits = W_o · dropout((W_s h + b_s) + (W_y e + b_y) + (W_c c + b_c) + u).
// The attention scores every position with w_e · tanh(W_h h + W_a·conv11×11(A) + K) + b_e, shifts
// by ONE max over the whole batch, masks after exp, and divides by (Σ + 1e-10); the coverage conv
// sees A before this step's α is added, and the context is read from the raw encoder features.
#include <memory>
#include <vector>

#include "layers/layers.h"
#include "models/model_config.h"

namespace hmer::models {

// DETR's normalised 2-D sine encoding of a (B, H, W) float mask, (B, 2·npf, H, W) in the mask's
// floating dtype (float64 stays float64, anything else is computed in float32, as the official code):
// channels [0, npf) encode y = cumsum_rows(mask) / (last row + 1e-6) · 2π, channels [npf, 2·npf)
// encode x likewise along columns; channel 2k is sin(pos / 10000^(2k/npf)), 2k+1 its cos.
// No autograd (the mask is data).
Tensor sine_position_encoding(const Tensor& mask, int64_t num_pos_feats, double temperature = 10000.0);

class CoverageAttention : public Module {
 public:
  CoverageAttention(int64_t hidden_size, int64_t attention_dim, int64_t coverage_channels, int64_t coverage_kernel);

  // What every step reuses, built once per image batch by prepare().
  struct Context {
    Tensor features;         // F (B, C, H, W)
    Tensor features_flat;    // F as (B, C, H·W)
    Tensor keys;             // K (B, A, H, W), positional encoding included
    Tensor mask_flat;        // (B, 1, H·W) feature mask
    Tensor coverage_weight;  // attention_weight · attention_conv as one (A, 1, k, k) conv, when fused
    Tensor score_weight;     // alpha_convert.weight expanded to (B, 1, A)
  };
  Context prepare(const Tensor& features, const Tensor& keys, const Tensor& mask) const;

  struct Result {
    Tensor context;    // (B, C)
    Tensor alpha;      // (B, H, W)
    Tensor alpha_sum;  // (B, 1, H, W), after adding alpha
  };
  // hidden (B, hidden), alpha_sum (B, 1, H, W): the coverage before this step.
  Result forward(const Context& ctx, const Tensor& hidden, const Tensor& alpha_sum) const;

  // The coverage conv followed by the bias-free per-position linear W_a is one linear map, so it is
  // evaluated as a single conv with the product weight (A, 1, k, k): mathematically identical
  // (zero padding commutes with W_a), and the per-step cost drops from C_cov·A per position to
  // k²·A. Off = the two-stage form of the official code.
  void set_fused_coverage(bool on) { fused_ = on; }
  bool fused_coverage() const { return fused_; }

 private:
  int64_t attention_dim_, coverage_kernel_;
  bool fused_ = true;
  std::shared_ptr<Linear> hidden_weight_, attention_weight_, alpha_convert_;
  std::shared_ptr<Conv2d> attention_conv_;
};

class AttDecoder : public Module {
 public:
  explicit AttDecoder(const ModelConfig& config);

  struct State {
    CoverageAttention::Context att;
    Tensor hidden;            // (B, hidden)
    Tensor alpha_sum;         // (B, 1, H, W)
    Tensor counting_context;  // (B, hidden), undefined without counting
  };
  // features (B, C, H, W); mask (B, 1, H, W) the feature mask (all ones at inference);
  // counts (B, classes) for CAN, undefined for DWAP.
  State start(const Tensor& features, const Tensor& mask, const Tensor& counts) const;
  // One step from the input tokens (B) int64: returns the logits (B, V) and advances `state`.
  Tensor step(State& state, const Tensor& tokens, Tensor* alpha = nullptr) const;
  // Teacher forcing over labels (B, T): inputs are sos then labels[:, t-1]; returns (B, T, V).
  // The output projections run once over all steps (the same per-element arithmetic as per step).
  Tensor forward(const Tensor& features, const Tensor& mask, const Tensor& counts, const Tensor& labels,
                 std::vector<Tensor>* alphas = nullptr) const;

  CoverageAttention& attention() { return *word_attention_; }
  int64_t sos_id() const { return sos_id_; }

 private:
  // ((W_s h + b_s) + (W_y e + b_y) + (W_c c + b_c)) + u → dropout → W_o; h, e, c (..., ·).
  Tensor output(const Tensor& h, const Tensor& e, const Tensor& c, const Tensor& u) const;

  DecoderConfig cfg_;
  bool counting_;
  int64_t sos_id_;
  std::shared_ptr<Linear> init_weight_, word_state_weight_, word_embedding_weight_, word_context_weight_,
      counting_context_weight_, word_convert_;
  std::shared_ptr<Embedding> embedding_;
  std::shared_ptr<GRUCell> word_input_gru_;
  std::shared_ptr<CoverageAttention> word_attention_;
  std::shared_ptr<Conv2d> encoder_feature_conv_;
  std::shared_ptr<Dropout> dropout_;
};

}  // namespace hmer::models
