#include "data/loader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <tuple>

#include "core/error.h"

namespace hmer::data {

Batch collate(const std::vector<CollateItem>& items, const PreprocessConfig& pre, int64_t eos_id, int64_t pad_id) {
  HMER_CHECK(!items.empty(), "collate: no items");
  // 1. Accept items in order against the running maxima of those accepted before them.
  std::vector<const CollateItem*> kept;
  Batch b;
  int64_t max_h = 0, max_w = 0, max_len = 0;
  for (const auto& it : items) {
    HMER_CHECK(!it.image.empty() && it.image.type() == CV_8UC1, "collate: item '", it.name,
               "' has no CV_8UC1 image");
    HMER_CHECK(it.ids != nullptr, "collate: item '", it.name, "' has no label");
    const int64_t h = it.image.rows, w = it.image.cols;
    if (!collate_accepts(h, w, max_h, max_w, pre.collate_skip_product)) {
      b.skipped.push_back(it.name);
      continue;
    }
    max_h = std::max(max_h, h);
    max_w = std::max(max_w, w);
    max_len = std::max<int64_t>(max_len, static_cast<int64_t>(it.ids->size()) + 1);  // + eos
    kept.push_back(&it);
  }
  const int64_t n = static_cast<int64_t>(kept.size());
  b.images = Tensor::empty({n, 1, max_h, max_w}, DType::Float32);
  b.image_mask = Tensor::empty({n, 1, max_h, max_w}, DType::Float32);
  b.labels = Tensor::empty({n, max_len}, DType::Int64);
  b.label_mask = Tensor::empty({n, max_len}, DType::Float32);
  float* img = b.images.data_ptr<float>();
  float* msk = b.image_mask.data_ptr<float>();
  int64_t* lab = b.labels.data_ptr<int64_t>();
  float* lmk = b.label_mask.data_ptr<float>();
  const int64_t plane = max_h * max_w;
  std::fill(img, img + n * plane, pre.pad_value);
  std::fill(msk, msk + n * plane, 0.0f);
  std::fill(lab, lab + n * max_len, pad_id);
  std::fill(lmk, lmk + n * max_len, 0.0f);
  // 2-4. Top-left placement, masks over the true extents, eos appended.
  for (int64_t i = 0; i < n; ++i) {
    const CollateItem& it = *kept[i];
    write_transformed(it.image, pre.transform, img + i * plane, max_w);
    for (int r = 0; r < it.image.rows; ++r) std::fill_n(msk + i * plane + r * max_w, it.image.cols, 1.0f);
    const auto& ids = *it.ids;
    for (size_t t = 0; t < ids.size(); ++t) lab[i * max_len + static_cast<int64_t>(t)] = ids[t];
    lab[i * max_len + static_cast<int64_t>(ids.size())] = eos_id;
    std::fill_n(lmk + i * max_len, ids.size() + 1, 1.0f);
    b.indices.push_back(it.index);
    b.names.push_back(it.name);
  }
  return b;
}

LoaderConfig LoaderConfig::from_yaml(const YAML::Node& node) {
  LoaderConfig c;
  if (!node || node.IsNull()) return c;
  HMER_CHECK(node.IsMap(), "loader config: expected a map");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "batch_size") c.batch_size = v.as<int64_t>();
    else if (key == "shuffle") c.shuffle = v.as<bool>();
    else if (key == "seed") c.seed = v.as<uint64_t>();
    else if (key == "drop_last") c.drop_last = v.as<bool>();
    else if (key == "bucket_by_area") c.bucket_by_area = v.as<bool>();
    else if (key == "bucket_window") c.bucket_window = v.as<int64_t>();
    else if (key == "prefetch") c.prefetch = v.as<int>();
    else fail("loader config: unknown key '", key, "'");
  }
  c.validate();
  return c;
}

void LoaderConfig::validate() const {
  HMER_CHECK(batch_size >= 1, "loader: batch_size ", batch_size, " must be >= 1");
  HMER_CHECK(bucket_window >= 0, "loader: bucket_window ", bucket_window, " must be >= 0");
  HMER_CHECK(prefetch >= 0 && prefetch <= 64, "loader: prefetch ", prefetch, " must be in [0, 64]");
}

std::string LoaderCursor::to_json() const {
  nlohmann::json j;
  j["epoch"] = epoch;
  j["position"] = position;
  j["seed"] = seed;
  j["rng_offset"] = rng_offset;
  return j.dump();
}

LoaderCursor LoaderCursor::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail("loader cursor: not valid JSON: ", e.what());
  }
  LoaderCursor c;
  try {
    c.epoch = j.at("epoch").get<int64_t>();
    c.position = j.at("position").get<int64_t>();
    c.seed = j.at("seed").get<uint64_t>();
    c.rng_offset = j.at("rng_offset").get<uint64_t>();
  } catch (const std::exception& e) {
    fail("loader cursor: ", e.what(), " in '", text, "'");
  }
  HMER_CHECK(c.epoch >= 0 && c.position >= 0, "loader cursor: negative epoch or position in '", text, "'");
  return c;
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const Vocabulary& vocab, LoaderConfig cfg,
                       PreprocessConfig pre)
    : ds_(std::move(dataset)), cfg_(cfg), pre_(pre) {
  HMER_CHECK(ds_ != nullptr, "DataLoader: no dataset");
  HMER_CHECK(ds_->encoded(), "DataLoader: the dataset is not encoded (call Dataset::encode with the vocabulary)");
  HMER_CHECK(ds_->size() > 0, "DataLoader: the dataset ", ds_->source(), " is empty");
  cfg_.validate();
  pre_.validate();
  eos_ = vocab.eos_id();
  pad_ = vocab.pad_id() >= 0 ? vocab.pad_id() : vocab.eos_id();
  const int64_t n = static_cast<int64_t>(ds_->size());
  const bool need_sizes = cfg_.bucket_by_area || pre_.batch_pixel_budget > 0 || pre_.max_image_pixels > 0;
  if (need_sizes) {
    area_.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const SampleInfo& s = ds_->info(i);
      int h = s.height, w = s.width;
      if (h < 0 && !s.image_path.empty()) std::tie(h, w) = read_image_header_size(s.image_path);
      if (h < 0) {
        const cv::Mat m = ds_->image(i);
        h = m.rows;
        w = m.cols;
      }
      area_[i] = static_cast<int64_t>(h) * w;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (pre_.max_image_pixels > 0 && area_[i] > pre_.max_image_pixels) {
      ++oversized_;
      continue;
    }
    eligible_.push_back(i);
  }
  HMER_CHECK(!eligible_.empty(), "DataLoader: every sample of ", ds_->source(), " exceeds max_image_pixels ",
             pre_.max_image_pixels);
  state_.gen.manual_seed(cfg_.seed);
  consumer_ = LoaderCursor{0, 0, cfg_.seed, 0};
}

DataLoader::~DataLoader() { stop_thread(); }

std::vector<std::vector<int64_t>> DataLoader::plan_epoch(Generator& gen) const {
  std::vector<int64_t> order = eligible_;
  auto shuffle = [&gen](auto& v) {
    // Fisher-Yates from the back; one double per swap keeps the draw count fixed per epoch.
    for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(gen.uniform_double() * static_cast<double>(i + 1));
      std::swap(v[i], v[std::min(j, i)]);
    }
  };
  if (cfg_.shuffle) shuffle(order);
  std::vector<std::vector<int64_t>> batches;
  const int64_t budget = pre_.batch_pixel_budget;
  auto cut = [&](std::vector<int64_t>::const_iterator b, std::vector<int64_t>::const_iterator e) {
    std::vector<int64_t> cur;
    int64_t cur_max = 0;
    for (auto it = b; it != e; ++it) {
      const int64_t a = budget > 0 ? area_[*it] : 0;
      const bool full = static_cast<int64_t>(cur.size()) >= cfg_.batch_size ||
                        (budget > 0 && !cur.empty() && std::max(cur_max, a) * static_cast<int64_t>(cur.size() + 1) > budget);
      if (full) {
        batches.push_back(std::move(cur));
        cur.clear();
        cur_max = 0;
      }
      cur.push_back(*it);
      cur_max = std::max(cur_max, a);
    }
    if (!cur.empty()) batches.push_back(std::move(cur));
  };
  if (cfg_.bucket_by_area) {
    const int64_t n = static_cast<int64_t>(order.size());
    const int64_t win = cfg_.bucket_window > 0 ? cfg_.bucket_window * cfg_.batch_size : n;
    for (int64_t s = 0; s < n; s += win) {
      const auto b = order.begin() + s, e = order.begin() + std::min(n, s + win);
      std::stable_sort(b, e, [&](int64_t x, int64_t y) { return area_[x] < area_[y]; });
      cut(b, e);
    }
    if (cfg_.shuffle) shuffle(batches);
  } else {
    cut(order.begin(), order.end());
  }
  if (cfg_.drop_last && !batches.empty() && static_cast<int64_t>(batches.back().size()) < cfg_.batch_size &&
      budget == 0 && !cfg_.bucket_by_area)
    batches.pop_back();
  return batches;
}

int64_t DataLoader::batches_per_epoch() const {
  Generator g(cfg_.seed);
  return static_cast<int64_t>(plan_epoch(g).size());
}

Batch DataLoader::make_batch(const std::vector<int64_t>& indices) const {
  std::vector<CollateItem> items;
  items.reserve(indices.size());
  for (int64_t idx : indices) {
    const SampleInfo& s = ds_->info(static_cast<size_t>(idx));
    CollateItem it;
    it.image = scale_image(ds_->image(static_cast<size_t>(idx)), pre_);
    it.ids = &s.ids;
    it.index = idx;
    it.name = s.name;
    items.push_back(std::move(it));
  }
  return collate(items, pre_, eos_, pad_);
}

DataLoader::Item DataLoader::produce() {
  State& st = state_;
  if (!st.planned) {
    st.epoch_offset = st.gen.offset();
    st.plan = plan_epoch(st.gen);
    st.pos = 0;
    st.planned = true;
  }
  Item item;
  if (st.pos >= static_cast<int64_t>(st.plan.size())) {
    item.end_of_epoch = true;
    ++st.epoch;
    st.planned = false;
    item.after = LoaderCursor{st.epoch, 0, st.gen.seed(), st.gen.offset()};
    return item;
  }
  item.batch = make_batch(st.plan[static_cast<size_t>(st.pos)]);
  item.batch.epoch = st.epoch;
  item.batch.position = st.pos;
  ++st.pos;
  item.after = LoaderCursor{st.epoch, st.pos, st.gen.seed(), st.epoch_offset};
  return item;
}

void DataLoader::run() {
  while (true) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || static_cast<int>(queue_.size()) < cfg_.prefetch; });
      if (stop_) return;
    }
    Item item;
    bool failed = false;
    try {
      item = produce();
    } catch (...) {
      item.error = std::current_exception();
      failed = true;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(std::move(item));
    }
    cv_.notify_all();
    if (failed) return;
  }
}

void DataLoader::start_thread() {
  if (running_) return;
  stop_ = false;
  running_ = true;
  thread_ = std::thread([this] { run(); });
}

void DataLoader::stop_thread() {
  if (!running_) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  running_ = false;
}

bool DataLoader::next(Batch& out) {
  if (failed_) std::rethrow_exception(failed_);
  Item item;
  if (cfg_.prefetch == 0) {
    try {
      item = produce();
    } catch (...) {
      failed_ = std::current_exception();
      throw;
    }
  } else {
    start_thread();
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return !queue_.empty(); });
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    cv_.notify_all();
    if (item.error) {
      failed_ = item.error;
      std::rethrow_exception(failed_);
    }
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    consumer_ = item.after;
  }
  if (item.end_of_epoch) return false;
  out = std::move(item.batch);
  return true;
}

LoaderCursor DataLoader::cursor() const {
  std::lock_guard<std::mutex> lk(mu_);
  return consumer_;
}

void DataLoader::restore(const LoaderCursor& c) {
  stop_thread();
  queue_.clear();
  failed_ = nullptr;
  state_ = State{};
  state_.gen.set_state(c.seed, c.rng_offset);
  state_.epoch = c.epoch;
  state_.epoch_offset = c.rng_offset;
  state_.plan = plan_epoch(state_.gen);
  state_.planned = true;
  HMER_CHECK(c.position <= static_cast<int64_t>(state_.plan.size()), "DataLoader::restore: position ", c.position,
             " is past the end of the epoch (", state_.plan.size(), " batches)");
  state_.pos = c.position;
  std::lock_guard<std::mutex> lk(mu_);
  consumer_ = c;
}

}  // namespace hmer::data
