#include "models/decoding.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/autograd.h"

namespace hmer::models {

namespace {

void check_image(const Tensor& image, const char* fn) {
  HMER_CHECK(image.defined() && image.dim() == 4 && image.size(0) == 1, fn,
             ": expected one image (1, C, H, W), got ", image.defined() ? shape_str(image.shape()) : "undefined");
}

// Encoder, counting and the decoder's per-image precomputation, as infer_model.py: all-ones mask,
// counting maps not masked.
AttDecoder::State start_image(CanModel& model, const Tensor& image) {
  const Tensor f = model.encode(image);
  const Tensor mask = Tensor::ones({1, 1, f.size(2), f.size(3)}, f.dtype(), f.device());
  const Tensor counts = model.config().has_counting() ? model.count(f, Tensor()) : Tensor();
  return model.decoder().start(f, mask, counts);
}

// Rows `idx` of t (no autograd).
Tensor rows(const Tensor& t, const std::vector<int64_t>& idx) {
  std::vector<Tensor> parts;
  parts.reserve(idx.size());
  for (int64_t i : idx) parts.push_back(t.narrow(0, i, 1));
  return cat(parts, 0);
}

// A batch-1 tensor repeated to k rows (a broadcasting view).
Tensor repeat_rows(const Tensor& t, int64_t k) {
  Shape s = t.shape();
  s[0] = k;
  return t.expand(s);
}

}  // namespace

Hypothesis greedy_decode(CanModel& model, const Tensor& image, int64_t max_steps, bool stop_at_eos) {
  check_image(image, "greedy_decode");
  NoGradGuard no_grad;
  AttDecoder::State st = start_image(model, image);
  const int64_t eos = model.config().eos_id;
  Hypothesis h;
  int64_t token = model.config().sos_id;
  for (int64_t i = 0; i < max_steps; ++i) {
    const Tensor in = Tensor::full({1}, static_cast<double>(token), DType::Int64, image.device());
    const Tensor logits = model.decoder().step(st, in);  // (1, V)
    const std::vector<float> l = logits.to(Device::cpu()).to_vector<float>();
    // argmax with the first maximum winning, as torch's max(1).
    const int64_t best = std::max_element(l.begin(), l.end()) - l.begin();
    // p(best) = 1 / Σ exp(l - l_best), in double.
    double z = 0;
    for (float v : l) z += std::exp(static_cast<double>(v) - static_cast<double>(l[best]));
    const double p = 1.0 / z;
    h.log_prob += std::log(p);
    if (best == eos && stop_at_eos) {
      h.finished = true;
      h.eos_confidence = static_cast<float>(p);
      break;
    }
    h.tokens.push_back(best);
    h.confidences.push_back(static_cast<float>(p));
    token = best;
  }
  h.score = h.log_prob;
  return h;
}

std::vector<Hypothesis> beam_search(CanModel& model, const Tensor& image, const BeamOptions& opt) {
  check_image(image, "beam_search");
  HMER_CHECK(opt.beam_width >= 1, "beam_search: beam_width must be >= 1, got ", opt.beam_width);
  HMER_CHECK(opt.max_steps >= 1, "beam_search: max_steps must be >= 1, got ", opt.max_steps);
  NoGradGuard no_grad;
  const AttDecoder::State st1 = start_image(model, image);
  const int64_t eos = model.config().eos_id, V = model.config().vocab_size, W = opt.beam_width;
  auto rank = [&](const Hypothesis& h) {
    const double len = static_cast<double>(h.tokens.size() + (h.finished ? 1 : 0));
    return opt.length_normalization ? h.log_prob / std::pow(std::max(len, 1.0), opt.length_alpha) : h.log_prob;
  };

  std::vector<Hypothesis> live(1), done;
  std::vector<int64_t> last = {model.config().sos_id};
  AttDecoder::State st = st1;
  for (int64_t step = 0; step < opt.max_steps && !live.empty(); ++step) {
    const int64_t K = static_cast<int64_t>(live.size());
    // The image's constant tensors are shared by every beam (broadcast views of batch 1).
    st.att.features = repeat_rows(st1.att.features, K);
    st.att.features_flat = repeat_rows(st1.att.features_flat, K);
    st.att.keys = repeat_rows(st1.att.keys, K);
    st.att.mask_flat = repeat_rows(st1.att.mask_flat, K);
    st.att.score_weight = repeat_rows(st1.att.score_weight.narrow(0, 0, 1), K);
    if (st1.counting_context.defined()) st.counting_context = repeat_rows(st1.counting_context, K);
    const Tensor in = Tensor::from_vector<int64_t>(last, {K});
    const Tensor logp_t = log_softmax(model.decoder().step(st, in.to(image.device())), 1).to(Device::cpu());
    const std::vector<float> logp = logp_t.to_vector<float>();  // (K, V)

    // The best W continuations over all beams (ties: lower beam, then lower token first).
    std::vector<int64_t> order(static_cast<size_t>(K * V));
    std::iota(order.begin(), order.end(), 0);
    auto total = [&](int64_t i) { return live[static_cast<size_t>(i / V)].log_prob + logp[static_cast<size_t>(i)]; };
    const int64_t take = std::min<int64_t>(W, K * V);
    std::partial_sort(order.begin(), order.begin() + take, order.end(), [&](int64_t a, int64_t b) {
      const double ta = total(a), tb = total(b);
      return ta != tb ? ta > tb : a < b;
    });

    std::vector<Hypothesis> next;
    std::vector<int64_t> src;
    last.clear();
    for (int64_t c = 0; c < take; ++c) {
      const int64_t i = order[static_cast<size_t>(c)], k = i / V, v = i % V;
      Hypothesis h = live[static_cast<size_t>(k)];
      const float lp = logp[static_cast<size_t>(i)];
      h.log_prob += lp;
      if (v == eos) {
        h.finished = true;
        h.eos_confidence = std::exp(lp);
        h.score = rank(h);
        done.push_back(std::move(h));
      } else {
        h.tokens.push_back(v);
        h.confidences.push_back(std::exp(lp));
        next.push_back(std::move(h));
        src.push_back(k);
        last.push_back(v);
      }
    }
    if (static_cast<int64_t>(done.size()) >= W) break;
    live = std::move(next);
    if (live.empty()) break;
    st.hidden = rows(st.hidden, src);
    st.alpha_sum = rows(st.alpha_sum, src);
  }
  if (done.empty()) {  // nothing reached eos within max_steps: return the unfinished beams
    for (Hypothesis& h : live) {
      h.score = rank(h);
      done.push_back(std::move(h));
    }
  }
  std::stable_sort(done.begin(), done.end(), [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
  if (static_cast<int64_t>(done.size()) > W) done.resize(static_cast<size_t>(W));
  return done;
}

std::vector<Hypothesis> decode_batch(CanModel& model, const Tensor& images, const Tensor& image_mask,
                                     const BeamOptions& options) {
  HMER_CHECK(images.defined() && images.dim() == 4 && image_mask.defined() && image_mask.dim() == 4 &&
                 image_mask.size(0) == images.size(0) && image_mask.size(2) == images.size(2) &&
                 image_mask.size(3) == images.size(3),
             "decode_batch: expected images (B, C, H, W) and a mask (B, 1, H, W)");
  const Tensor m = contiguous_copy(image_mask.detach().to(Device::cpu()).to(DType::Float32));
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3);
  const float* mp = m.data_ptr<float>();
  std::vector<Hypothesis> out;
  for (int64_t b = 0; b < B; ++b) {
    // The image's own extent: collate places it top-left with the mask 1 over it.
    int64_t h = 0, w = 0;
    while (h < H && mp[b * H * W + h * W] > 0) ++h;
    while (w < W && mp[b * H * W + w] > 0) ++w;
    HMER_CHECK(h > 0 && w > 0, "decode_batch: image ", b, " has an empty mask");
    const Tensor img = images.narrow(0, b, 1).narrow(2, 0, h).narrow(3, 0, w).contiguous();
    if (options.beam_width == 1) out.push_back(greedy_decode(model, img, options.max_steps));
    else out.push_back(beam_search(model, img, options).front());
  }
  return out;
}

}  // namespace hmer::models
