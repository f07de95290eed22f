#pragma once
// Recognition metrics as the official CAN inference.py reports them (can-model.md §11.2), plus the
// breakdowns an error analysis needs:
//   ExpRate        % of lines whose predicted token list equals the reference exactly
//   le1, le2, le3  % of lines whose token-level Levenshtein distance is <= 1, 2, 3
//                  (insertion, deletion, substitution each cost 1)
//   wer            100 * (sum of distances) / (sum of reference lengths), in percent
//   buckets        the same per reference-length bucket
//   counting MAE   CAN's counting error: per image mean over classes of |v - v*|, averaged over images
//                  (and inference.py's "mse": per image sqrt(mean (v - v*)^2), averaged)
//   worst          the K lines with the largest distance
// All rates are percentages; with no samples they are 0 and n is 0.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hmer::train {

using Tokens = std::vector<std::string>;

// Token-level Levenshtein distance (inference.py's cal_distance), O(|a|·|b|) time, O(min) memory.
int64_t levenshtein(const Tokens& a, const Tokens& b);
int64_t levenshtein(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

// inference.py's tokenisation of a line: strip surrounding whitespace, then split on single spaces
// (Python's str.split(' ')), so "" gives {""} (a list of length 1, as in the original).
Tokens split_like_inference(const std::string& line);
std::string join_tokens(const Tokens& tokens);  // single spaces

// CAN's counting error of one image over its class counts (same length, > 0).
struct CountingError {
  double mae = 0;   // mean |pred - ref|
  double rmse = 0;  // sqrt(mean (pred - ref)^2), inference.py's "mse"
};
CountingError counting_error(const std::vector<float>& pred, const std::vector<float>& ref);

// Optional per-sample information for add().
struct SampleExtras {
  std::string id;                          // image name, shown in the worst list
  std::optional<double> confidence;        // e.g. mean token probability
  std::vector<float> count_pred, count_ref;  // CAN counting vectors; both empty or same length
};

// One scored line, as kept in the worst list.
struct ScoredSample {
  int64_t index = 0;  // order of add()
  std::string id;
  Tokens pred, ref;
  int64_t distance = 0;
  std::optional<double> confidence;
};

struct MetricOptions {
  // Upper bounds (inclusive) of the reference-length buckets; the last bucket is open-ended.
  // {10, 20, 30, 40} gives 1-10, 11-20, 21-30, 31-40, 41+. Must be increasing and >= 1.
  std::vector<int64_t> bucket_bounds = {10, 20, 30, 40};
  int64_t worst_k = 20;  // how many worst predictions to keep
};

class MetricAccumulator {
 public:
  explicit MetricAccumulator(MetricOptions options = {});

  // Scores one line. Token lists as decoded (no sos/eos); an empty prediction is scored as
  // inference.py scores it, i.e. as {""} (so it differs from every non-empty reference).
  void add(const Tokens& pred, const Tokens& ref, const SampleExtras& extras = {});
  // Adds another accumulator's counts (same options); the worst lists are merged by rank.
  void merge(const MetricAccumulator& other);

  int64_t n() const { return total_.n; }
  double exprate() const;         // percent
  double exprate_stderr() const;  // percent: 100 * sqrt(p (1 - p) / n), the binomial standard error
  double le(int k) const;         // percent with distance <= k, k in 1..3
  double wer() const;             // percent
  double counting_mae() const;    // mean over the samples that had counting vectors (0 if none)
  double counting_rmse() const;
  int64_t counting_n() const { return count_n_; }
  const std::vector<ScoredSample>& worst() const { return worst_; }

  // Keys: n, exprate, exprate_stderr, le1, le2, le3, wer, edit_distance_sum, ref_tokens_sum,
  // buckets [{name, min_len, max_len (null when open), n, exprate, le1, le2, le3, wer}],
  // counting_mae / counting_rmse / counting_n (only when some sample had counting vectors),
  // worst [{index, id, pred, ref, distance, ref_len, confidence?}].
  nlohmann::ordered_json to_json() const;
  // "ExpRate 45.21% ± 1.58 | <=1 60.1% | <=2 70.3% | <=3 76.0% | WER 12.34% | n 986"
  std::string summary_line() const;

 private:
  struct Counts {
    int64_t n = 0, exact = 0, le1 = 0, le2 = 0, le3 = 0, dist = 0, ref_tokens = 0;
    void add(int64_t d, int64_t ref_len);
    void merge(const Counts& o);
  };
  static nlohmann::ordered_json counts_json(const Counts& c);
  size_t bucket_of(int64_t ref_len) const;
  void keep_if_worse(ScoredSample s);

  MetricOptions options_;
  Counts total_;
  std::vector<Counts> buckets_;
  double count_mae_sum_ = 0, count_rmse_sum_ = 0;
  int64_t count_n_ = 0;
  std::vector<ScoredSample> worst_;  // sorted worst first
};

}  // namespace hmer::train
