#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace hmer::train {

namespace {

template <class T>
int64_t levenshtein_impl(const std::vector<T>& a, const std::vector<T>& b) {
  // Rolling row over the shorter sequence: distance is symmetric.
  const std::vector<T>& s = a.size() < b.size() ? a : b;  // columns
  const std::vector<T>& l = a.size() < b.size() ? b : a;  // rows
  std::vector<int64_t> row(s.size() + 1);
  for (size_t j = 0; j <= s.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= l.size(); ++i) {
    int64_t diag = row[0];  // d[i-1][j-1]
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= s.size(); ++j) {
      const int64_t up = row[j];  // d[i-1][j]
      row[j] = std::min({up + 1, row[j - 1] + 1, diag + (l[i - 1] == s[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[s.size()];
}

bool worse(const ScoredSample& x, const ScoredSample& y) {
  if (x.distance != y.distance) return x.distance > y.distance;
  return x.index < y.index;
}

double pct(int64_t k, int64_t n) { return n > 0 ? 100.0 * static_cast<double>(k) / static_cast<double>(n) : 0.0; }

}  // namespace

int64_t levenshtein(const Tokens& a, const Tokens& b) { return levenshtein_impl(a, b); }
int64_t levenshtein(const std::vector<int64_t>& a, const std::vector<int64_t>& b) { return levenshtein_impl(a, b); }

Tokens split_like_inference(const std::string& line) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = line.find_first_not_of(ws);
  const std::string s = b == std::string::npos ? std::string() : line.substr(b, line.find_last_not_of(ws) - b + 1);
  Tokens out;
  size_t start = 0;
  while (true) {
    const size_t sp = s.find(' ', start);
    if (sp == std::string::npos) {
      out.push_back(s.substr(start));
      break;
    }
    out.push_back(s.substr(start, sp - start));
    start = sp + 1;
  }
  return out;
}

std::string join_tokens(const Tokens& tokens) {
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) out += ' ';
    out += tokens[i];
  }
  return out;
}

CountingError counting_error(const std::vector<float>& pred, const std::vector<float>& ref) {
  HMER_CHECK(!pred.empty() && pred.size() == ref.size(), "counting_error: prediction has ", pred.size(),
             " counts and the reference ", ref.size(), " (need equal, non-zero lengths)");
  double a = 0, s = 0;
  for (size_t i = 0; i < pred.size(); ++i) {
    const double d = static_cast<double>(pred[i]) - static_cast<double>(ref[i]);
    a += std::fabs(d);
    s += d * d;
  }
  const double n = static_cast<double>(pred.size());
  return {a / n, std::sqrt(s / n)};
}

// ---- MetricAccumulator ---------------------------------------------------------------------------

void MetricAccumulator::Counts::add(int64_t d, int64_t ref_len) {
  ++n;
  exact += d == 0;
  le1 += d <= 1;
  le2 += d <= 2;
  le3 += d <= 3;
  dist += d;
  ref_tokens += ref_len;
}

void MetricAccumulator::Counts::merge(const Counts& o) {
  n += o.n;
  exact += o.exact;
  le1 += o.le1;
  le2 += o.le2;
  le3 += o.le3;
  dist += o.dist;
  ref_tokens += o.ref_tokens;
}

MetricAccumulator::MetricAccumulator(MetricOptions options) : options_(std::move(options)) {
  const auto& b = options_.bucket_bounds;
  for (size_t i = 0; i < b.size(); ++i)
    HMER_CHECK(b[i] >= 1 && (i == 0 || b[i] > b[i - 1]), "MetricAccumulator: bucket bounds must be increasing and ",
               ">= 1 (bound ", i, " is ", b[i], ")");
  HMER_CHECK(options_.worst_k >= 0, "MetricAccumulator: worst_k must be >= 0, got ", options_.worst_k);
  buckets_.resize(b.size() + 1);
}

size_t MetricAccumulator::bucket_of(int64_t ref_len) const {
  const auto& b = options_.bucket_bounds;
  return static_cast<size_t>(std::lower_bound(b.begin(), b.end(), ref_len) - b.begin());
}

void MetricAccumulator::keep_if_worse(ScoredSample s) {
  if (options_.worst_k == 0) return;
  if (static_cast<int64_t>(worst_.size()) == options_.worst_k && !worse(s, worst_.back())) return;
  worst_.insert(std::upper_bound(worst_.begin(), worst_.end(), s, worse), std::move(s));
  if (static_cast<int64_t>(worst_.size()) > options_.worst_k) worst_.pop_back();
}

void MetricAccumulator::add(const Tokens& pred, const Tokens& ref, const SampleExtras& extras) {
  // inference.py joins tokens with spaces and splits again: an empty list becomes {""}.
  static const Tokens kEmpty{""};
  const Tokens& p = pred.empty() ? kEmpty : pred;
  const Tokens& r = ref.empty() ? kEmpty : ref;
  const int64_t d = levenshtein(p, r);
  const int64_t ref_len = static_cast<int64_t>(r.size());
  const int64_t index = total_.n;
  total_.add(d, ref_len);
  buckets_[bucket_of(ref_len)].add(d, ref_len);
  if (!extras.count_pred.empty() || !extras.count_ref.empty()) {
    const CountingError e = counting_error(extras.count_pred, extras.count_ref);
    count_mae_sum_ += e.mae;
    count_rmse_sum_ += e.rmse;
    ++count_n_;
  }
  if (options_.worst_k > 0 && d > 0) keep_if_worse({index, extras.id, pred, ref, d, extras.confidence});
}

void MetricAccumulator::merge(const MetricAccumulator& other) {
  HMER_CHECK(other.options_.bucket_bounds == options_.bucket_bounds,
             "MetricAccumulator::merge: the accumulators use different length buckets");
  const int64_t offset = total_.n;
  total_.merge(other.total_);
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i].merge(other.buckets_[i]);
  count_mae_sum_ += other.count_mae_sum_;
  count_rmse_sum_ += other.count_rmse_sum_;
  count_n_ += other.count_n_;
  for (ScoredSample s : other.worst_) {
    s.index += offset;
    keep_if_worse(std::move(s));
  }
}

double MetricAccumulator::exprate() const { return pct(total_.exact, total_.n); }

double MetricAccumulator::exprate_stderr() const {
  if (total_.n == 0) return 0;
  const double p = static_cast<double>(total_.exact) / static_cast<double>(total_.n);
  return 100.0 * std::sqrt(p * (1 - p) / static_cast<double>(total_.n));
}

double MetricAccumulator::le(int k) const {
  HMER_CHECK(k >= 1 && k <= 3, "MetricAccumulator::le: k must be 1, 2 or 3, got ", k);
  return pct(k == 1 ? total_.le1 : k == 2 ? total_.le2 : total_.le3, total_.n);
}

double MetricAccumulator::wer() const { return pct(total_.dist, total_.ref_tokens); }

double MetricAccumulator::counting_mae() const { return count_n_ ? count_mae_sum_ / count_n_ : 0.0; }
double MetricAccumulator::counting_rmse() const { return count_n_ ? count_rmse_sum_ / count_n_ : 0.0; }

nlohmann::ordered_json MetricAccumulator::counts_json(const Counts& c) {
  nlohmann::ordered_json j;
  j["n"] = c.n;
  j["exprate"] = pct(c.exact, c.n);
  j["le1"] = pct(c.le1, c.n);
  j["le2"] = pct(c.le2, c.n);
  j["le3"] = pct(c.le3, c.n);
  j["wer"] = pct(c.dist, c.ref_tokens);
  return j;
}

nlohmann::ordered_json MetricAccumulator::to_json() const {
  nlohmann::ordered_json j = counts_json(total_);
  j["exprate_stderr"] = exprate_stderr();
  j["edit_distance_sum"] = total_.dist;
  j["ref_tokens_sum"] = total_.ref_tokens;
  nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
  const auto& b = options_.bucket_bounds;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const int64_t lo = i == 0 ? 1 : b[i - 1] + 1;
    nlohmann::ordered_json e;
    e["name"] = i < b.size() ? std::to_string(lo) + "-" + std::to_string(b[i]) : std::to_string(lo) + "+";
    e["min_len"] = lo;
    e["max_len"] = i < b.size() ? nlohmann::ordered_json(b[i]) : nlohmann::ordered_json(nullptr);
    const nlohmann::ordered_json counts = counts_json(buckets_[i]);
    for (auto it = counts.begin(); it != counts.end(); ++it) e[it.key()] = it.value();
    buckets.push_back(e);
  }
  j["buckets"] = buckets;
  if (count_n_ > 0) {
    j["counting_mae"] = counting_mae();
    j["counting_rmse"] = counting_rmse();
    j["counting_n"] = count_n_;
  }
  nlohmann::ordered_json worst = nlohmann::ordered_json::array();
  for (const ScoredSample& s : worst_) {
    nlohmann::ordered_json e;
    e["index"] = s.index;
    e["id"] = s.id;
    e["pred"] = join_tokens(s.pred);
    e["ref"] = join_tokens(s.ref);
    e["distance"] = s.distance;
    e["ref_len"] = static_cast<int64_t>(s.ref.size());
    if (s.confidence) e["confidence"] = *s.confidence;
    worst.push_back(e);
  }
  j["worst"] = worst;
  return j;
}

std::string MetricAccumulator::summary_line() const {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "ExpRate %.2f%% \xC2\xB1 %.2f | <=1 %.2f%% | <=2 %.2f%% | <=3 %.2f%% | WER %.2f%% | n %lld",
                exprate(), exprate_stderr(), le(1), le(2), le(3), wer(), static_cast<long long>(total_.n));
  return buf;
}

}  // namespace hmer::train
