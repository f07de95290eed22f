#include "train/evaluator.h"

#include <chrono>

#include "core/autograd.h"
#include "core/error.h"
#include "models/decoding.h"

namespace hmer::train {

Tensor prepare_image(const cv::Mat& image, const data::PreprocessConfig& pre) {
  HMER_CHECK(!image.empty() && image.type() == CV_8UC1, "prepare_image: expected a non-empty 8-bit gray image");
  const cv::Mat scaled = data::scale_image(image, pre);
  Tensor t = Tensor::empty({1, 1, scaled.rows, scaled.cols});
  data::write_transformed(scaled, pre.transform, t.data_ptr<float>(), scaled.cols);
  return t;
}

nlohmann::ordered_json EvalOutput::to_json() const {
  nlohmann::ordered_json j = metrics.to_json();
  j["seconds"] = seconds;
  j["images_per_sec"] = seconds > 0 ? static_cast<double>(metrics.n()) / seconds : 0.0;
  return j;
}

namespace {

// CAN's counting target v*: how often each class occurs in the label, ignored classes at 0.
std::vector<float> count_targets(const std::vector<int64_t>& ids, const models::ModelConfig& mc) {
  std::vector<float> v(static_cast<size_t>(mc.counting.out_channels), 0.0f);
  for (int64_t id : ids) {
    bool ignored = false;
    for (int64_t ig : mc.counting_ignore_ids) ignored = ignored || ig == id;
    if (!ignored && id >= 0 && id < static_cast<int64_t>(v.size())) v[static_cast<size_t>(id)] += 1.0f;
  }
  return v;
}

}  // namespace

EvalOutput evaluate(models::CanModel& model, const data::Dataset& dataset, const data::Vocabulary& vocab,
                    const data::PreprocessConfig& pre, const EvalOptions& options) {
  HMER_CHECK(dataset.encoded(), "evaluate: the dataset ", dataset.source(), " is not encoded");
  HMER_CHECK(options.beam_width >= 1, "evaluate: beam_width ", options.beam_width, " must be >= 1");
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();

  EvalOutput out{MetricAccumulator(options.metric), 0};
  const int64_t total = options.limit > 0 ? std::min<int64_t>(options.limit, static_cast<int64_t>(dataset.size()))
                                          : static_cast<int64_t>(dataset.size());
  const models::BeamOptions beam{options.beam_width, options.max_steps, options.length_normalization,
                                 options.length_alpha};
  const bool counting = options.counting && model.config().has_counting();
  for (int64_t i = 0; i < total; ++i) {
    const data::SampleInfo& info = dataset.info(static_cast<size_t>(i));
    const Tensor image = prepare_image(dataset.image(static_cast<size_t>(i)), pre);
    models::Hypothesis h;
    if (options.beam_width == 1) {
      h = models::greedy_decode(model, image, options.max_steps);
    } else {
      auto hyps = models::beam_search(model, image, beam);
      HMER_CHECK(!hyps.empty(), "evaluate: beam search returned no hypothesis for ", info.name);
      h = std::move(hyps.front());
    }
    SampleExtras extras;
    extras.id = info.name;
    double conf = 1.0;
    for (float c : h.confidences) conf *= c;
    if (h.finished) conf *= h.eos_confidence;
    extras.confidence = conf;
    if (counting) {
      const Tensor counts = model.count(model.encode(image), Tensor());  // (1, classes)
      extras.count_pred = counts.to_vector<float>();
      extras.count_ref = count_targets(info.ids, model.config());
    }
    out.metrics.add(vocab.decode(h.tokens, false), vocab.decode(info.ids, false), extras);
    if (options.on_progress) options.on_progress(i + 1, total);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  model.train(was_training);
  return out;
}

}  // namespace hmer::train
