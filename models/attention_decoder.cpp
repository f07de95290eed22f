#include "models/attention_decoder.h"

#include <cmath>

#include "core/autograd.h"

namespace hmer::models {

namespace {

// Every step in the mask's precision, as the reference computes it: cumsum, / (last + eps), · 2π,
// / dim_t, sin / cos.
template <class T>
void sine_position_encoding_impl(const T* m, int64_t B, int64_t H, int64_t W, int64_t F, double temperature, T* o) {
  const int64_t HW = H * W;
  const T eps = static_cast<T>(1e-6);
  const T scale = static_cast<T>(2.0 * M_PI);
  std::vector<T> dim_t(static_cast<size_t>(F));
  for (int64_t d = 0; d < F; ++d) {
    const T e = (T(2) * static_cast<T>(d / 2)) / static_cast<T>(F);
    dim_t[static_cast<size_t>(d)] = std::pow(static_cast<T>(temperature), e);
  }
  std::vector<T> y(static_cast<size_t>(HW)), x(static_cast<size_t>(HW));
  for (int64_t b = 0; b < B; ++b) {
    const T* mb = m + b * HW;
    for (int64_t j = 0; j < W; ++j) {  // cumulative sum down each column
      T acc = 0;
      for (int64_t i = 0; i < H; ++i) y[i * W + j] = acc += mb[i * W + j];
    }
    for (int64_t i = 0; i < H; ++i) {  // and along each row
      T acc = 0;
      for (int64_t j = 0; j < W; ++j) x[i * W + j] = acc += mb[i * W + j];
    }
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const int64_t p = i * W + j;
        y[p] = y[p] / (y[(H - 1) * W + j] + eps) * scale;
      }
    for (int64_t i = 0; i < H; ++i) {
      const T last = x[i * W + W - 1] + eps;
      for (int64_t j = 0; j < W; ++j) x[i * W + j] = x[i * W + j] / last * scale;
    }
    T* ob = o + b * 2 * F * HW;
    for (int64_t d = 0; d < F; ++d) {
      const T dt = dim_t[static_cast<size_t>(d)];
      T* oy = ob + d * HW;
      T* ox = ob + (F + d) * HW;
      const bool even = d % 2 == 0;
      for (int64_t p = 0; p < HW; ++p) {
        const T vy = y[p] / dt, vx = x[p] / dt;
        oy[p] = even ? std::sin(vy) : std::cos(vy);
        ox[p] = even ? std::sin(vx) : std::cos(vx);
      }
    }
  }
}

}  // namespace

Tensor sine_position_encoding(const Tensor& mask_in, int64_t num_pos_feats, double temperature) {
  HMER_CHECK(mask_in.defined() && mask_in.dim() == 3, "sine_position_encoding: expected a (B, H, W) mask, got ",
             mask_in.defined() ? shape_str(mask_in.shape()) : std::string("undefined"));
  HMER_CHECK(num_pos_feats > 0, "sine_position_encoding: num_pos_feats must be positive, got ", num_pos_feats);
  NoGradGuard no_grad;
  const DType dt = mask_in.dtype() == DType::Float64 ? DType::Float64 : DType::Float32;
  const Tensor mask = contiguous_copy(mask_in.detach().to(Device::cpu()).to(dt));
  const int64_t B = mask.size(0), H = mask.size(1), W = mask.size(2), F = num_pos_feats;
  Tensor out = Tensor::empty({B, 2 * F, H, W}, dt);
  if (dt == DType::Float64)
    sine_position_encoding_impl(mask.data_ptr<double>(), B, H, W, F, temperature, out.data_ptr<double>());
  else
    sine_position_encoding_impl(mask.data_ptr<float>(), B, H, W, F, temperature, out.data_ptr<float>());
  return mask_in.device().is_cpu() ? out : out.to(mask_in.device());
}

// ---- attention ---------------------------------------------------------------------------------

CoverageAttention::CoverageAttention(int64_t hidden_size, int64_t attention_dim, int64_t coverage_channels,
                                     int64_t coverage_kernel)
    : Module("Attention"), attention_dim_(attention_dim), coverage_kernel_(coverage_kernel) {
  hidden_weight_ = register_module("hidden_weight", std::make_shared<Linear>(hidden_size, attention_dim));
  attention_conv_ = register_module(
      "attention_conv",
      std::make_shared<Conv2d>(Conv2dLayerOptions(1, coverage_channels, coverage_kernel)
                                   .padding({coverage_kernel / 2, coverage_kernel / 2})
                                   .bias(false)));
  attention_weight_ =
      register_module("attention_weight", std::make_shared<Linear>(coverage_channels, attention_dim, false));
  alpha_convert_ = register_module("alpha_convert", std::make_shared<Linear>(attention_dim, 1));
}

CoverageAttention::Context CoverageAttention::prepare(const Tensor& features, const Tensor& keys,
                                                      const Tensor& mask) const {
  const int64_t B = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  HMER_CHECK(keys.dim() == 4 && keys.size(0) == B && keys.size(1) == attention_dim_ && keys.size(2) == H &&
                 keys.size(3) == W,
             "Attention: keys ", shape_str(keys.shape()), " do not fit features ", shape_str(features.shape()));
  HMER_CHECK(mask.dim() == 4 && mask.size(0) == B && mask.size(1) == 1 && mask.size(2) == H && mask.size(3) == W,
             "Attention: mask ", shape_str(mask.shape()), " must be (", B, ", 1, ", H, ", ", W, ")");
  Context c;
  c.features = features;
  c.features_flat = features.reshape({B, C, H * W});
  c.keys = keys;
  c.mask_flat = mask.reshape({B, 1, H * W});
  if (fused_) {
    const Tensor wc = attention_conv_->weight();  // (Cc, 1, k, k)
    const int64_t k = coverage_kernel_;
    c.coverage_weight = matmul(attention_weight_->weight(), wc.reshape({wc.size(0), k * k}))
                            .reshape({attention_dim_, 1, k, k});
  }
  c.score_weight = alpha_convert_->weight().unsqueeze(0).expand({B, 1, attention_dim_});
  return c;
}

CoverageAttention::Result CoverageAttention::forward(const Context& ctx, const Tensor& hidden,
                                                     const Tensor& alpha_sum) const {
  const int64_t B = ctx.features.size(0), C = ctx.features.size(1), H = ctx.features.size(2),
                W = ctx.features.size(3), A = attention_dim_;
  const Tensor q = hidden_weight_->forward(hidden).reshape({B, A, 1, 1});
  Tensor cov;  // (B, A, H, W)
  if (fused_) {
    Conv2dOptions o;
    o.padding = {coverage_kernel_ / 2, coverage_kernel_ / 2};
    cov = conv2d(alpha_sum, ctx.coverage_weight, Tensor(), o);
  } else {
    const Tensor t = attention_conv_->forward(alpha_sum);                      // (B, Cc, H, W)
    cov = attention_weight_->forward(t.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});  // (B, A, H, W)
  }
  const Tensor s = tanh(add(add(q, cov), ctx.keys)).reshape({B, A, H * W});
  Tensor energy = add(matmul(ctx.score_weight, s), alpha_convert_->bias());  // (B, 1, HW)
  // One shift for the whole batch (not per sample), as the official code; masking after exp.
  energy = sub(energy, amax(energy));
  const Tensor e = mul(exp(energy), ctx.mask_flat);
  const Tensor alpha = div(e, add(sum(e, {2}, true), 1e-10));  // (B, 1, HW)
  Result r;
  r.alpha = alpha.reshape({B, H, W});
  r.alpha_sum = add(alpha.reshape({B, 1, H, W}), alpha_sum);
  r.context = matmul(ctx.features_flat, alpha.reshape({B, H * W, 1})).reshape({B, C});
  return r;
}

// ---- decoder -----------------------------------------------------------------------------------

AttDecoder::AttDecoder(const ModelConfig& config)
    : Module("AttDecoder"), cfg_(config.decoder), counting_(config.has_counting()), sos_id_(config.sos_id) {
  const int64_t C = config.densenet.out_channels, E = cfg_.input_size, Hd = cfg_.hidden_size,
                A = cfg_.attention_dim, V = config.vocab_size;
  // Registration order = the official state_dict order.
  init_weight_ = register_module("init_weight", std::make_shared<Linear>(C, Hd));
  embedding_ = register_module("embedding", std::make_shared<Embedding>(V, E));
  word_input_gru_ = register_module("word_input_gru", std::make_shared<GRUCell>(E, Hd));
  word_attention_ = register_module(
      "word_attention", std::make_shared<CoverageAttention>(Hd, A, cfg_.coverage_channels, cfg_.coverage_kernel));
  encoder_feature_conv_ = register_module(
      "encoder_feature_conv",
      std::make_shared<Conv2d>(Conv2dLayerOptions(C, A, cfg_.word_conv_kernel)
                                   .padding({cfg_.word_conv_kernel / 2, cfg_.word_conv_kernel / 2})));
  word_state_weight_ = register_module("word_state_weight", std::make_shared<Linear>(Hd, Hd));
  word_embedding_weight_ = register_module("word_embedding_weight", std::make_shared<Linear>(E, Hd));
  word_context_weight_ = register_module("word_context_weight", std::make_shared<Linear>(C, Hd));
  if (counting_)
    counting_context_weight_ =
        register_module("counting_context_weight", std::make_shared<Linear>(config.counting.out_channels, Hd));
  word_convert_ = register_module("word_convert", std::make_shared<Linear>(Hd, V));
  dropout_ = register_module("dropout", std::make_shared<Dropout>(cfg_.dropout_ratio));
}

AttDecoder::State AttDecoder::start(const Tensor& features, const Tensor& mask, const Tensor& counts) const {
  HMER_CHECK(features.defined() && features.dim() == 4, "AttDecoder: expected features (B, C, H, W), got ",
             features.defined() ? shape_str(features.shape()) : std::string("undefined"));
  const int64_t B = features.size(0), H = features.size(2), W = features.size(3);
  HMER_CHECK(mask.defined() && mask.dim() == 4 && mask.size(0) == B && mask.size(1) == 1 && mask.size(2) == H &&
                 mask.size(3) == W,
             "AttDecoder: feature mask ", mask.defined() ? shape_str(mask.shape()) : std::string("undefined"),
             " must be (", B, ", 1, ", H, ", ", W, ")");
  HMER_CHECK(!counting_ || (counts.defined() && counts.dim() == 2 && counts.size(0) == B),
             "AttDecoder: CAN needs the counting vector (B, classes)");
  State s;
  // Masked spatial mean of F → tanh(W_init ·): the initial hidden state.
  const Tensor avg = div(sum(mul(features, mask), {2, 3}), sum(mask, {2, 3}));
  s.hidden = tanh(init_weight_->forward(avg));
  Tensor keys = encoder_feature_conv_->forward(features);
  if (cfg_.positional_encoding)
    keys = add(keys, sine_position_encoding(mask.select(1, 0), cfg_.attention_dim / 2).to(keys.dtype()));
  s.att = word_attention_->prepare(features, keys, mask);
  s.alpha_sum = Tensor::zeros({B, 1, H, W}, features.dtype(), features.device());
  if (counting_) s.counting_context = counting_context_weight_->forward(counts);
  return s;
}

Tensor AttDecoder::output(const Tensor& h, const Tensor& e, const Tensor& c, const Tensor& u) const {
  Tensor o = add(add(word_state_weight_->forward(h), word_embedding_weight_->forward(e)),
                 word_context_weight_->forward(c));
  if (u.defined()) o = add(o, u);
  if (cfg_.dropout) o = dropout_->forward(o);
  return word_convert_->forward(o);
}

Tensor AttDecoder::step(State& state, const Tensor& tokens, Tensor* alpha) const {
  const Tensor e = embedding_->forward(tokens);  // (B, E)
  state.hidden = word_input_gru_->forward(e, state.hidden);
  CoverageAttention::Result r = word_attention_->forward(state.att, state.hidden, state.alpha_sum);
  state.alpha_sum = r.alpha_sum;
  if (alpha) *alpha = r.alpha;
  return output(state.hidden, e, r.context, state.counting_context);
}

Tensor AttDecoder::forward(const Tensor& features, const Tensor& mask, const Tensor& counts, const Tensor& labels,
                           std::vector<Tensor>* alphas) const {
  HMER_CHECK(labels.defined() && labels.dim() == 2 && labels.dtype() == DType::Int64,
             "AttDecoder: expected int64 labels (B, T), got ", labels.defined() ? labels.str() : "undefined");
  const int64_t B = labels.size(0), T = labels.size(1);
  HMER_CHECK(B == features.size(0), "AttDecoder: labels ", shape_str(labels.shape()), " and features ",
             shape_str(features.shape()), " have different batch sizes");
  State s = start(features, mask, counts);
  std::vector<Tensor> hs, es, cs;
  hs.reserve(T), es.reserve(T), cs.reserve(T);
  const Tensor sos = Tensor::full({B}, static_cast<double>(sos_id_), DType::Int64, labels.device());
  for (int64_t t = 0; t < T; ++t) {
    const Tensor tokens = t == 0 ? sos : labels.select(1, t - 1).contiguous();
    const Tensor e = embedding_->forward(tokens);
    s.hidden = word_input_gru_->forward(e, s.hidden);
    CoverageAttention::Result r = word_attention_->forward(s.att, s.hidden, s.alpha_sum);
    s.alpha_sum = r.alpha_sum;
    if (alphas) alphas->push_back(r.alpha);
    hs.push_back(s.hidden);
    es.push_back(e);
    cs.push_back(r.context);
  }
  const Tensor u = s.counting_context.defined() ? s.counting_context.unsqueeze(1) : Tensor();
  return output(stack(hs, 1), stack(es, 1), stack(cs, 1), u);  // (B, T, V)
}

}  // namespace hmer::models
